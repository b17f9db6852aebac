"""Coalition cards: what one coalition does, in the report (an interactive explorer) and as JSON.

A card holds, for one coalition of size >= 2 of one layer's partition: its members; its held-out Pair with a
confidence interval and whether the partition fitted on the other half has it too (best Jaccard); the joint
ablation effect on the local logit beside the sum of its single effects; its top-activating examples with
each token shaded by the coalition's activation; the output tokens its write promotes and suppresses (the
direct effect); its partners in the adjacent layers (tracking). `make_cards` computes all of it for a run,
`write_cards` saves ``RUN/cards.json`` and ``RUN/cards.md``, and ``build_report`` shows a "Coalitions"
section whenever ``cards.json`` exists (`cards_section_html`). docs/cards.md says how to read a card.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hedonic_neurons.metrics.coalition_effects import best_jaccard
from hedonic_neurons.tracking.events import layer_sort_key

__all__ = ["build_cards", "make_cards", "tracking_partners", "write_cards", "read_cards", "cards_section_html",
           "member_weights", "CARDS_FILE"]

CARDS_FILE = "cards.json"
FORMAT = "hedonic-neurons coalition cards 1"


def _num(x: Any) -> float | None:
    """A finite float, or None (JSON null: NaN is not JSON)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean(obj: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _num(obj)
    return obj


def _coalition_ids(labels: np.ndarray, min_size: int) -> tuple[list[int], list[np.ndarray]]:
    ids, members = [], []
    for c in np.unique(labels):
        m = np.flatnonzero(labels == c)
        if m.size >= min_size and c >= 0:
            ids.append(int(c))
            members.append(m)
    return ids, members


def tracking_partners(run_dir: str | Path, method: str, layer: Any) -> dict[int, dict[str, list[dict]]]:
    """{coalition id: {"prev": [...], "next": [...]}} of `layer` from ``RUN/tracking/transitions.csv``.

    ``next``: the coalition's own row as a source at ``layer -> next`` (partner, event, alpha, beta, n_links);
    ``prev``: every source coalition of ``previous -> layer`` whose partner it is (their event, alpha, beta).
    Empty when the run has no tracking.
    """
    from hedonic_neurons.rundir import read_table

    path = Path(run_dir) / "tracking" / "transitions.csv"
    out: dict[int, dict[str, list[dict]]] = {}
    if not path.exists():
        return out
    lay = str(layer)

    def entry(r: dict, other_layer: str, coalition: Any) -> dict:
        return {"layer": other_layer, "coalition": int(float(coalition)), "event": r.get("event", ""),
                "alpha": _num(r.get("alpha")), "beta": _num(r.get("beta")),
                "matched": str(r.get("matched", "")).lower() == "true",
                "n_links": int(float(r["n_links"])) if r.get("n_links") not in (None, "") else None}

    for r in read_table(path):
        if r.get("method") != method:
            continue
        src, tgt = int(float(r["source"])), int(float(r["target"]))
        if r["from_layer"] == lay:
            out.setdefault(src, {"prev": [], "next": []})["next"].append(entry(r, r["to_layer"], tgt))
        if r["to_layer"] == lay and tgt >= 0:
            out.setdefault(tgt, {"prev": [], "next": []})["prev"].append(entry(r, r["from_layer"], src))
    return out


def build_cards(
    layer: Any, labels: np.ndarray, effects: Sequence[dict], *, method: str = "hedonic_pas",
    other_labels: np.ndarray | None = None, examples: Sequence[list[dict]] | None = None,
    direct: Sequence[dict] | None = None, run_dir: str | Path | None = None, stable: bool | None = None,
    target: str = "", min_size: int = 2,
) -> list[dict]:
    """The cards of one layer, sorted by held-out Pair (largest first).

    ``labels``: the partition (fitted on one half). ``effects``, ``examples`` and ``direct`` are aligned with
    its coalitions of at least ``min_size`` members in label order (``metrics.crossfit.coalitions_of(labels,
    min_size)``): ``metrics.coalition_effects.coalition_effects`` on the OTHER half's cache, and
    ``models.token_activations.top_examples`` / ``direct_effect``. ``other_labels``: the partition fitted on
    the other half (best Jaccard). ``run_dir``: read tracking partners from it. ``stable``: the layer's
    Nash-stability flag, shown when given.
    """
    labels = np.asarray(labels)
    ids, members = _coalition_ids(labels, min_size)
    for name, seq in (("effects", effects), ("examples", examples), ("direct", direct)):
        if seq is not None and len(seq) != len(ids):
            raise ValueError(f"{name} has {len(seq)} entries but the partition has {len(ids)} coalitions of size >= "
                             f"{min_size}: pass one per coalition, in label order")
    partners = tracking_partners(run_dir, method, layer) if run_dir is not None else {}
    cards = []
    for j, (cid, m) in enumerate(zip(ids, members, strict=True)):
        eff = effects[j]
        if sorted(eff.get("members", m.tolist())) != m.tolist():
            raise ValueError(f"effects[{j}] is for members {eff.get('members')}, not coalition {cid} ({m.tolist()}): "
                             "compute the effects on coalitions_of(labels, min_size), in that order")
        card: dict[str, Any] = {"id": f"{method}:{layer}:{cid}", "layer": str(layer), "method": method,
                                "coalition": cid, "members": m.tolist(), "size": int(m.size), "target": target}
        for key in ("pair", "joint", "singles_sum", "interaction"):
            card[key] = _num(eff.get(key))
            card[f"{key}_ci"] = [_num(v) for v in eff.get(f"{key}_ci", [None, None])]
        card["n_samples"] = eff.get("n_samples")
        if other_labels is not None:
            jac, match = best_jaccard(m, other_labels)
            card["best_jaccard"], card["best_jaccard_match"] = jac, match
        else:
            card["best_jaccard"], card["best_jaccard_match"] = None, None
        card["examples"] = list(examples[j]) if examples is not None else []
        d = direct[j] if direct is not None else {}
        card["promoted"], card["suppressed"] = d.get("promoted", []), d.get("suppressed", [])
        card["direct_note"] = d.get("note", "")
        card["partners"] = partners.get(cid, {"prev": [], "next": []})
        if stable is not None:
            card["stable"] = bool(stable)
        cards.append(_clean(card))
    return sort_cards(cards)


def sort_cards(cards: Sequence[dict], key: str = "pair") -> list[dict]:
    """Largest `key` first (missing / NaN values last), then by layer and coalition."""
    def k(c: dict) -> tuple:
        v = c.get(key)
        return (v is None, -(v or 0.0), layer_sort_key(c.get("layer", "")), c.get("coalition", 0))

    return sorted(cards, key=k)


def member_weights(acts: np.ndarray, members, top: int = 20) -> np.ndarray:
    """The members' mean activations over the `top` samples where the coalition (their mean) is most active:
    the weights of the coalition's write direction for `direct_effect` (sorted member order)."""
    m = np.unique(np.asarray(members, dtype=np.int64).ravel())
    a = np.asarray(acts, dtype=np.float64)[:, m]
    order = np.argsort(-a.mean(1), kind="stable")[:max(1, int(top))]
    return a[order].mean(0)


def make_cards(
    model: Any, tokenizer: Any, texts: Sequence[str], labels: Mapping[Any, np.ndarray], caches: Mapping[Any, Any], *,
    other_labels: Mapping[Any, np.ndarray] | None = None, method: str = "hedonic_pas",
    run_dir: str | Path | None = None, stable: Mapping[Any, bool] | None = None, target: str = "",
    k_examples: int = 5, k_tokens: int = 10, context: int = 12, min_size: int = 2, level: float = 0.95,
    batch_size: int = 16, max_length: int = 128, device: str = "cpu",
) -> list[dict]:
    """Every card of every layer of `labels`, sorted by held-out Pair.

    ``labels[layer]``: the partition fitted on one half; ``caches[layer]``: the ``LayerCache`` of the OTHER
    half (the held-out samples its effects are measured on); ``other_labels[layer]``: the partition fitted on
    that other half. Top-activating examples come from one forward pass over all of `texts` (both halves);
    the write direction of `direct_effect` weights each member by its mean activation at the cache's samples
    where the coalition is most active (`member_weights`).
    """
    from hedonic_neurons.metrics.coalition_effects import coalition_effects
    from hedonic_neurons.models.token_activations import coalition_token_activations, direct_effects, top_examples

    layers = sorted(labels, key=layer_sort_key)
    missing = [la for la in layers if la not in caches]
    if missing:
        raise ValueError(f"no held-out cache for layer(s) {missing}: pass caches[layer] for every partition")
    coals = {la: _coalition_ids(np.asarray(labels[la]), min_size)[1] for la in layers}
    with_coals = [la for la in layers if coals[la]]
    acts, tokens = (coalition_token_activations(model, tokenizer, texts, [int(la) for la in with_coals],
                                                {int(la): coals[la] for la in with_coals}, batch_size=batch_size,
                                                max_length=max_length, device=device)
                    if with_coals else ({}, []))
    cards = []
    for la in with_coals:
        cache = caches[la]
        effects = coalition_effects(cache, coals[la], level=level)
        examples = top_examples(acts[int(la)], tokens, k=k_examples, context=context)
        direct = direct_effects(model, int(la), coals[la], [member_weights(cache.acts, m) for m in coals[la]],
                                k=k_tokens, tokenizer=tokenizer)
        cards += build_cards(la, labels[la], effects, method=method,
                             other_labels=None if other_labels is None else other_labels.get(la),
                             examples=examples, direct=direct, run_dir=run_dir,
                             stable=None if stable is None else stable.get(la), target=target, min_size=min_size)
    return sort_cards(cards)


def _fmt(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "n/a"
    return f"{v:.3g}" if v == 0 or 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"


def _ci(c: dict, key: str) -> str:
    lo, hi = (c.get(f"{key}_ci") or [None, None])[:2]
    return f"{_fmt(c.get(key))} [{_fmt(lo)}, {_fmt(hi)}]"


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", "\\n")


def write_cards(run_dir: str | Path, cards: Sequence[dict]) -> Path:
    """Write ``RUN/cards.json`` (every card) and ``RUN/cards.md`` (one summary row per card); returns the JSON."""
    from hedonic_neurons.rundir import write_json

    root = Path(run_dir)
    cards = [_clean(dict(c)) for c in cards]
    path = write_json(root / CARDS_FILE, {"format": FORMAT, "n_cards": len(cards), "cards": cards})
    lines = ["## Coalition cards, sorted by held-out Pair (report.html has the explorer; cards.json every field)",
             "", "| layer | coalition | size | Pair [CI] | best Jaccard | joint [CI] | sum of singles [CI] | "
             "top tokens | promoted | partners |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cards:
        peaks = [e["tokens"][e["peak_pos"]] for e in c.get("examples", []) if e.get("tokens")][:3]
        prom = [t for t, _ in c.get("promoted", [])][:3]
        part = "; ".join(f"{p['layer']}:C{p['coalition']} {p['event']}" for side in ("prev", "next")
                         for p in c.get("partners", {}).get(side, []))
        jac = "n/a" if c.get("best_jaccard") is None else f"{c['best_jaccard']:.2f}"
        lines.append("| " + " | ".join(_md_cell(x) for x in (
            str(c["layer"]), str(c["coalition"]), str(c["size"]), _ci(c, "pair"), jac, _ci(c, "joint"),
            _ci(c, "singles_sum"), ", ".join(map(repr, peaks)), ", ".join(map(repr, prom)), part)) + " |")
    tmp = root / "cards.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(root / "cards.md")
    return path


def read_cards(run_dir_or_file: str | Path) -> list[dict]:
    """The cards of ``RUN/cards.json`` (or of that file); FileNotFoundError naming it when absent."""
    p = Path(run_dir_or_file)
    p = p / CARDS_FILE if p.is_dir() else p
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist: write it with report.cards.write_cards(run_dir, cards)")
    data = json.loads(p.read_text())
    return data["cards"] if isinstance(data, dict) else data


_CARDS_CSS = """
#cards-explorer .cards-controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center;font-size:13px;
 background:#fff;border:1px solid #e0e0e0;padding:6px 8px;position:sticky;top:30px;z-index:4}
#cards-explorer button.cards-sort{border:1px solid #b0bec5;background:#eceff1;border-radius:3px;cursor:pointer;
 font-size:12px;padding:2px 7px}
#cards-explorer button.cards-sort.active{background:#1565c0;color:#fff;border-color:#1565c0}
#cards-explorer .card{background:#fff;border:1px solid #cfd8dc;border-radius:4px;margin:10px 0;padding:8px 10px}
#cards-explorer .card h3{margin:0 0 4px;font-size:15px}
#cards-explorer .card .badge{font-size:11px;border-radius:3px;padding:1px 5px;margin-left:6px}
#cards-explorer .badge.stable{background:#c8e6c9}#cards-explorer .badge.unstable{background:#ffcdd2}
#cards-explorer table.stats{font-size:12px;border-collapse:collapse;margin:4px 0}
#cards-explorer table.stats td{padding:1px 8px 1px 0}#cards-explorer table.stats td:first-child{color:#555}
#cards-explorer .members{font-size:11px;color:#555;word-break:break-all}
#cards-explorer .ex{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;margin:2px 0;
 line-height:1.7}
#cards-explorer .ex .meta{color:#777;margin-right:6px;font-family:system-ui,sans-serif;font-size:11px}
#cards-explorer .tok{white-space:pre;border-radius:2px;padding:0 1px;margin-right:1px}
#cards-explorer .tok.peak{outline:1px solid #333}
#cards-explorer .ws{color:#999}
#cards-explorer .chip{display:inline-block;white-space:pre;font-family:ui-monospace,Menlo,monospace;
 font-size:12px;border-radius:3px;padding:0 4px;margin:1px 2px}
#cards-explorer .chip.up{background:#e8f5e9}#cards-explorer .chip.down{background:#ffebee}
#cards-explorer .sub{font-size:12px;font-weight:600;margin-top:6px}
#cards-explorer .note{font-size:11px;color:#666}
#cards-explorer .partner{font-size:12px}
"""

# Plain JS (no library, no network). Every string from the data goes through textContent, never innerHTML.
_CARDS_JS = r"""
(function(){
  var root = document.getElementById('cards-explorer');
  var cards = JSON.parse(document.getElementById('cards-data').textContent);
  var PAGE = 60, shown = PAGE, sortKey = 'pair', desc = true;
  var list = root.querySelector('#cards-list'), count = root.querySelector('#cards-count');
  var layerSel = root.querySelector('#cards-layer'), sizeSel = root.querySelector('#cards-size');
  var search = root.querySelector('#cards-search'), more = root.querySelector('#cards-more');
  function el(tag, cls, text){ var e = document.createElement(tag); if(cls) e.className = cls;
    if(text !== undefined && text !== null) e.textContent = text; return e; }
  function fmt(x){ if(x === null || x === undefined || !isFinite(x)) return 'n/a';
    var a = Math.abs(x); return (a !== 0 && (a < 1e-3 || a >= 1e4)) ? x.toExponential(2) : String(+x.toPrecision(3)); }
  function ci(c, k){ var v = c[k + '_ci'] || [null, null];
    return fmt(c[k]) + '  [' + fmt(v[0]) + ', ' + fmt(v[1]) + ']'; }
  // whitespace made visible: newlines, tabs, and tokens that are only spaces
  function vis(t){ t = String(t); if(t === '') return '\u2205';
    t = t.replace(/\r/g, '\u240d').replace(/\n/g, '\u21b5').replace(/\t/g, '\u21e5');
    return /^ +$/.test(t) ? t.replace(/ /g, '\u2423') : t; }
  function chipText(t){ return vis(t).replace(/ /g, '\u2423'); }
  function layerNum(l){ var n = parseFloat(l); return isNaN(n) ? l : n; }
  function cmpLayer(a, b){ var x = layerNum(a), y = layerNum(b);
    if(typeof x === typeof y) return x < y ? -1 : x > y ? 1 : 0; return String(a) < String(b) ? -1 : 1; }
  cards.forEach(function(c){
    var words = [];
    function add(t){ words.push(String(t).trim().toLowerCase()); }
    (c.examples || []).forEach(function(e){ (e.tokens || []).forEach(add); });
    (c.promoted || []).concat(c.suppressed || []).forEach(function(p){ add(p[0]); });
    c._words = words.filter(function(w){ return w.length > 0; });
  });
  function fillSelect(sel, values, label){
    values.forEach(function(v){ var o = el('option', null, label(v)); o.value = String(v); sel.appendChild(o); }); }
  var layers = Array.from(new Set(cards.map(function(c){ return c.layer; }))).sort(cmpLayer);
  var sizes = Array.from(new Set(cards.map(function(c){ return c.size; }))).sort(function(a, b){ return a - b; });
  fillSelect(layerSel, layers, function(v){ return 'layer ' + v; });
  fillSelect(sizeSel, sizes, function(v){ return 'size ' + v; });
  function value(c, k){ var v = c[k];
    return (v === null || v === undefined || (typeof v === 'number' && !isFinite(v))) ? null : v; }
  function compare(a, b){
    var x = value(a, sortKey), y = value(b, sortKey), r = 0;
    if(x === null && y !== null) return 1; if(y === null && x !== null) return -1;
    if(x !== null && y !== null) r = sortKey === 'layer' ? cmpLayer(x, y) : (x < y ? -1 : x > y ? 1 : 0);
    if(desc) r = -r;
    if(r === 0){ var p = value(a, 'pair'), q = value(b, 'pair');
      r = (p === null) - (q === null) || (q || 0) - (p || 0) || cmpLayer(a.layer, b.layer)
        || a.coalition - b.coalition; }
    return r;
  }
  function matches(c){
    if(layerSel.value !== '' && String(c.layer) !== layerSel.value) return false;
    if(sizeSel.value !== '' && String(c.size) !== sizeSel.value) return false;
    var q = search.value.trim().toLowerCase();
    if(q === '') return true;
    // "quoted": the whole token (trimmed); otherwise any token containing the text
    if(q.length > 2 && q[0] === '"' && q[q.length - 1] === '"'){
      q = q.slice(1, -1).trim(); return c._words.indexOf(q) >= 0; }
    return c._words.some(function(w){ return w.indexOf(q) >= 0; });
  }
  function shade(a){ var x = Math.max(-1, Math.min(1, +a || 0));
    return x >= 0 ? 'rgba(255,140,0,' + x.toFixed(3) + ')' : 'rgba(30,136,229,' + (-x).toFixed(3) + ')'; }
  function row(table, name, text){ var tr = el('tr'); tr.appendChild(el('td', null, name));
    tr.appendChild(el('td', null, text)); table.appendChild(tr); }
  function partnerText(p){ return 'layer ' + p.layer + ' C' + p.coalition + ' (' + (p.event || '?')
    + ', alpha ' + fmt(p.alpha) + ', beta ' + fmt(p.beta) + ')'; }
  function render(c){
    var d = el('div', 'card'); d.dataset.id = c.id; d.dataset.layer = c.layer; d.dataset.size = c.size;
    var h = el('h3', null, 'layer ' + c.layer + ' \u00b7 coalition ' + c.coalition + ' \u00b7 size ' + c.size);
    if(c.stable === true) h.appendChild(el('span', 'badge stable', 'layer Nash-stable'));
    if(c.stable === false) h.appendChild(el('span', 'badge unstable', 'layer not certified stable'));
    d.appendChild(h);
    var t = el('table', 'stats');
    row(t, 'Pair (held-out, ' + (c.n_samples || '?') + ' samples)', ci(c, 'pair'));
    row(t, 'found on the other half (best Jaccard)', c.best_jaccard === null || c.best_jaccard === undefined ? 'n/a'
        : fmt(c.best_jaccard) + ' (its coalition ' + c.best_jaccard_match + ')');
    row(t, 'joint ablation effect (l \u2212 l with C ablated)', ci(c, 'joint'));
    row(t, 'sum of single effects \u03a3\u03c8(i)', ci(c, 'singles_sum'));
    row(t, 'interaction (sum of singles \u2212 joint)', ci(c, 'interaction'));
    if(c.target) row(t, 'target', c.target);
    d.appendChild(t);
    var mem = c.members || [];
    d.appendChild(el('div', 'members',
      'members: ' + mem.slice(0, 64).join(', ') + (mem.length > 64 ? ', \u2026' : '')));
    d.appendChild(el('div', 'sub', 'top-activating examples'));
    if(!(c.examples || []).length) d.appendChild(el('div', 'note', 'none recorded'));
    (c.examples || []).forEach(function(e){
      var x = el('div', 'ex'); x.appendChild(el('span', 'meta', 'text ' + e.text + ', peak ' + fmt(e.peak)));
      (e.tokens || []).forEach(function(tok, i){
        var s = el('span', 'tok' + (i === e.peak_pos ? ' peak' : ''), vis(tok));
        var a = (e.acts || [])[i]; s.style.backgroundColor = shade(a);
        s.title = 'activation ' + fmt((+a || 0) * (e.scale || 1)); x.appendChild(s);
      });
      d.appendChild(x);
    });
    d.appendChild(el('div', 'sub', 'direct effect: output tokens its write promotes / suppresses'));
    [['promoted', 'up'], ['suppressed', 'down']].forEach(function(kv){
      var line = el('div'); line.appendChild(el('span', 'note', kv[0] + ': '));
      (c[kv[0]] || []).forEach(function(p){
        var s = el('span', 'chip ' + kv[1], chipText(p[0])); s.title = 'score ' + fmt(p[1]); line.appendChild(s); });
      d.appendChild(line);
    });
    if(c.direct_note) d.appendChild(el('div', 'note', c.direct_note));
    d.appendChild(el('div', 'sub', 'partners in adjacent layers (tracking)'));
    var pr = (c.partners || {}).prev || [], nx = (c.partners || {}).next || [];
    if(!pr.length && !nx.length) d.appendChild(el('div', 'note', 'none recorded'));
    pr.forEach(function(p){ d.appendChild(el('div', 'partner prev', '\u2190 from ' + partnerText(p))); });
    nx.forEach(function(p){ d.appendChild(el('div', 'partner next', p.coalition >= 0 ? '\u2192 to ' + partnerText(p)
        : '\u2192 layer ' + p.layer + ': no partner (' + (p.event || 'vanish') + ')')); });
    return d;
  }
  function update(){
    var sel = cards.filter(matches).sort(compare);
    list.textContent = '';
    sel.slice(0, shown).forEach(function(c){ list.appendChild(render(c)); });
    count.textContent = Math.min(shown, sel.length) + ' of ' + sel.length + ' matching cards ('
      + cards.length + ' in all)';
    more.style.display = sel.length > shown ? '' : 'none';
    root.querySelectorAll('button.cards-sort').forEach(function(b){
      b.classList.toggle('active', b.dataset.key === sortKey);
      b.textContent = b.dataset.label + (b.dataset.key === sortKey ? (desc ? ' \u25bc' : ' \u25b2') : '');
    });
  }
  root.querySelectorAll('button.cards-sort').forEach(function(b){
    b.dataset.label = b.textContent;
    b.addEventListener('click', function(){
      if(sortKey === b.dataset.key) desc = !desc; else { sortKey = b.dataset.key; desc = sortKey !== 'layer'; }
      shown = PAGE; update();
    });
  });
  [layerSel, sizeSel].forEach(function(s){ s.addEventListener('change', function(){ shown = PAGE; update(); }); });
  search.addEventListener('input', function(){ shown = PAGE; update(); });
  more.addEventListener('click', function(){ shown += PAGE; update(); });
  update();
})();
"""


def _json_for_script(obj: Any) -> str:
    # "<", ">" and "&" escaped inside the JSON strings: no token can close the script element or open a comment
    text = json.dumps(_clean(obj), ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def cards_section_html(cards: Sequence[dict]) -> str:
    """The report's interactive coalition explorer: self-contained HTML + plain JS (no network, no library).

    Cards sorted by held-out Pair (buttons sort by Pair, joint effect, interaction, size, layer; a second click
    reverses), filtered by layer and size, searched by token (top examples, promoted and suppressed tokens:
    any token containing the text, or with the text in double quotes the whole token).
    """
    cards = list(cards)
    intro = ("<p class='note'>One card per coalition of size &ge; 2 (RUN/cards.json; docs/cards.md says how to "
             "read one). Pair and the ablation effects are measured on the held-out half; the examples come from "
             "all texts; the promoted and suppressed tokens are the direct effect of the coalition's write through "
             "the final norm and the unembedding, ignoring later layers.</p>")
    sort_buttons = "".join(f'<button type="button" class="cards-sort" data-key="{k}">{label}</button>'
                           for k, label in (("pair", "Pair"), ("joint", "joint effect"), ("interaction", "interaction"),
                                            ("size", "size"), ("layer", "layer")))
    controls = ("<div class='cards-controls'><span>sort by</span>" + sort_buttons
                + "<select id='cards-layer' aria-label='layer'><option value=''>all layers</option></select>"
                + "<select id='cards-size' aria-label='size'><option value=''>all sizes</option></select>"
                + "<input id='cards-search' type='search' placeholder='search a token (\"quoted\": whole token)' "
                  "aria-label='search a token'>"
                + "<span id='cards-count' class='note'></span></div>")
    return (f"<style>{_CARDS_CSS}</style>{intro}<div id='cards-explorer'>{controls}<div id='cards-list'></div>"
            "<button type='button' id='cards-more'>show more</button>"
            f"<script type='application/json' id='cards-data'>{_json_for_script(cards)}</script>"
            f"<script>{_CARDS_JS}</script></div>")
