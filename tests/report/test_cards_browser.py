"""Headless Chromium opens a report with a coalition-cards section built from a small real pipeline (tiny LLaMA,
word texts, HedonicPartition on exact PAS, tracking): no console errors, no network, sorting reorders the cards,
the layer and size filters hide cards, a token search keeps only the cards showing that token, tokens are
shaded and odd tokens are shown as text."""


import pytest

from hedonic_neurons.report.html import build_report

pytestmark = [
    pytest.mark.browser,
    pytest.mark.heavy(20),
]


def _words(card):
    ws = {t.strip().lower() for e in card["examples"] for t in e["tokens"]}
    ws |= {t.strip().lower() for t, _ in card["promoted"] + card["suppressed"]}
    return {w for w in ws if w}


def test_cards_explorer_in_chromium(cards_run, tmp_path, chromium):
    rd, cards, _ = cards_run
    report = build_report(rd.root, out=tmp_path / "report.html")
    # a token that some cards show and others do not (exact token, so substring hits are counted too)
    counts = {}
    for c in cards:
        for w in _words(c):
            counts[w] = counts.get(w, 0) + 1
    token = min(counts, key=lambda w: (counts[w], w))
    expect = sum(1 for c in cards if any(token in w for w in _words(c)))
    assert 0 < expect < len(cards)
    layers = sorted({c["layer"] for c in cards})
    page, errors, requests = chromium(report)
    box = page.locator("#cards-explorer")
    shown = box.locator("div.card")

    def ids():
        return [shown.nth(i).get_attribute("data-id") for i in range(shown.count())]

    n_all = shown.count()
    first = ids()
    assert first == [c["id"] for c in cards]  # held-out Pair order, as in cards.json
    box.locator("button.cards-sort[data-key='size']").click()
    by_size = ids()
    sizes = [int(shown.nth(i).get_attribute("data-size")) for i in range(shown.count())]
    box.locator("button.cards-sort[data-key='size']").click()  # second click: smallest first
    sizes_up = [int(shown.nth(i).get_attribute("data-size")) for i in range(shown.count())]
    box.locator("button.cards-sort[data-key='pair']").click()
    back = ids()
    # layer filter
    box.locator("#cards-layer").select_option(layers[-1])
    layer_ids = ids()
    layer_attrs = {shown.nth(i).get_attribute("data-layer") for i in range(shown.count())}
    box.locator("#cards-layer").select_option("")
    # size filter
    box.locator("#cards-size").select_option("3")
    size_attrs = {shown.nth(i).get_attribute("data-size") for i in range(shown.count())}
    n_size3 = shown.count()
    box.locator("#cards-size").select_option("")
    # token search
    box.locator("#cards-search").fill(token.upper())
    n_search = shown.count()
    search_ids = ids()
    box.locator("#cards-search").fill('"w1"')  # quoted: the whole token only (not w10, w11 ...)
    n_exact = shown.count()
    box.locator("#cards-search").fill("")
    # shading: token spans with an activation-scaled background
    n_tok = box.locator("span.tok").count()
    shaded = page.evaluate("Array.from(document.querySelectorAll('#cards-explorer span.tok'))"
                           ".filter(s => /rgba\\(255, 140, 0, 0\\.[1-9]|rgba\\(255, 140, 0, 1\\)/"
                           ".test(s.style.backgroundColor)).length")
    n_peak = box.locator("span.tok.peak").count()
    odd = page.evaluate("Array.from(document.querySelectorAll('#cards-explorer span.tok, "
                        "#cards-explorer span.chip')).map(s => s.textContent)"
                        ".filter(t => ['<b>', '\"q\"', 'a&b', '</script>'].includes(t)).length")
    n_partner = box.locator("div.partner").count()
    box.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "cards.png"), full_page=False)
    assert not errors, f"console errors: {errors}"
    external = [u for u in requests if not u.startswith(("file:", "data:", "about:", "blob:"))]
    assert not external, f"the report reached for the network: {external[:5]}"
    assert n_all == len(cards)
    assert sizes == sorted(sizes, reverse=True) and sizes_up == sorted(sizes_up) and by_size != first
    assert back == first
    assert layer_attrs == {layers[-1]} and 0 < len(layer_ids) < n_all
    assert size_attrs == {"3"} and 0 < n_size3 < n_all
    assert n_search == expect and set(search_ids) == {c["id"] for c in cards if any(token in w for w in _words(c))}
    assert n_exact == sum(1 for c in cards if "w1" in _words(c))
    assert n_peak == sum(len(c["examples"]) for c in cards) and shaded >= n_peak and n_tok > shaded
    assert odd > 0  # '<b>', '"q"', 'a&b', '</script>' arrive as text, not markup
    assert n_partner > 0
