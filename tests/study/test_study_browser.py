"""Headless Chromium opens the report of every `study` run (the planted control and a tiny model of each tested
architecture): the coalition explorer shows its cards, filters by layer, and the page logs no error and makes no
request outside the file."""

import json

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.heavy(60)]


def test_every_study_report_opens_its_explorer(planted_run, arch_runs, chromium):
    runs = {"planted": planted_run.rd.root, **{a: r[1] for a, r in arch_runs.items()}}
    for name, root in runs.items():
        cards = json.loads((root / "cards.json").read_text())["cards"]
        page, errors, requests = chromium(root / "report.html")
        box = page.locator("#cards-explorer")
        shown = box.locator("div.card")
        assert shown.count() == min(len(cards), 60), name  # the explorer pages 60 cards at a time
        layers = sorted({c["layer"] for c in cards})
        box.locator("#cards-layer").select_option(layers[-1])
        assert {shown.nth(i).get_attribute("data-layer") for i in range(shown.count())} == {layers[-1]}, name
        assert not errors, (name, errors)
        foreign = [u for u in requests if not u.startswith(("file:", "data:", "about:"))]
        assert not foreign, (name, foreign)
        page.close()
