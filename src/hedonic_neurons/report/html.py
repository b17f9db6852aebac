"""``build_report(run_dir)``: one self-contained ``report.html`` from whatever a run directory holds.

Works offline: plotly.js is inlined once, PNGs are embedded as base64 data URIs, views saved with a
JSON sidecar (``report.sankey.save_view``) are drawn from their JSON, and any other view HTML is
embedded as an iframe ``srcdoc`` with remote/relative plotly script tags replaced by the inline library.
Each part of the run directory gets a section when it exists and a clear "missing" line when not.
Derived content (coalition-size figures with Zipf fits, stability certificates, phi heatmaps, synergy
bars, tracking when its inputs are saved) is written into the run directory first, so the static PNGs
lie beside the report for papers.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from hedonic_neurons.report.markdown import inline, markdown_to_html
from hedonic_neurons.tracking.events import layer_sort_key

__all__ = ["build_report", "derive_outputs"]

log = logging.getLogger(__name__)

MAX_EMBEDDED_HEATMAPS = 12

MAX_TABLE_ROWS = 300  # longer tables are cut in the page (the CSV beside it has every row)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
header .meta{font-size:12px;opacity:.8}
nav{background:#eceff1;padding:6px 24px;font-size:13px;position:sticky;top:0;z-index:5}
nav a{margin-right:14px;color:#1565c0;text-decoration:none}
main{padding:8px 24px 40px}section{margin:18px 0 28px}h2{border-bottom:2px solid #cfd8dc;padding-bottom:4px}
table.data{border-collapse:collapse;font-size:12px;margin:6px 0 4px;background:#fff}
table.data th,table.data td{border:1px solid #cfd8dc;padding:3px 7px;text-align:right}
table.data th{background:#eceff1;position:sticky;top:0}
table.data td:first-child,table.data th:first-child{text-align:left}
.tablewrap{max-height:520px;overflow:auto;margin-bottom:6px;display:inline-block;max-width:100%}
.note{font-size:12px;color:#555}.missing{color:#b71c1c}.ok{color:#2e7d32}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #e0e0e0;padding:6px}figure img{max-width:100%;height:auto}
figure.wide{grid-column:1/-1}figcaption{font-size:12px;color:#444;margin-top:4px}
.view{background:#fff;border:1px solid #e0e0e0;margin:10px 0;min-height:420px}
iframe.view{width:100%;height:640px}
pre{background:#fff;border:1px solid #e0e0e0;padding:8px;overflow:auto;font-size:12px}
details summary{cursor:pointer;font-weight:600;margin:6px 0}
"""

# Plotly views render when scrolled near the viewport (dozens of Sankeys would stall the page load).
_JS = """
(function(){
  function draw(el){
    if(el.dataset.drawn) return; el.dataset.drawn = '1';
    try{
      var fig = JSON.parse(document.getElementById(el.dataset.src).textContent);
      var layout = fig.layout || {}; layout.autosize = true;
      Plotly.newPlot(el, fig.data || [], layout, {responsive: true, displaylogo: false});
    }catch(e){ el.textContent = 'this view could not be drawn: ' + e; }
  }
  window.drawAllViews = function(){ document.querySelectorAll('div.plotly-view').forEach(draw); };
  var views = document.querySelectorAll('div.plotly-view');
  if(!('IntersectionObserver' in window)){ window.drawAllViews(); return; }
  var io = new IntersectionObserver(function(entries){
    entries.forEach(function(en){ if(en.isIntersecting){ draw(en.target); io.unobserve(en.target); } });
  }, {rootMargin: '400px'});
  views.forEach(function(v){ io.observe(v); });
})();
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _md_title(csv_path: Path) -> str:
    md = csv_path.with_suffix(".md")
    if md.exists():
        first = md.read_text().split("\n", 1)[0]
        if first.startswith("## "):
            return first[3:].strip()
    return ""


def _cell(value: Any) -> str:
    """A table cell: long floats shortened to 4 significant digits (the CSV keeps full precision)."""
    s = str(value)
    if len(s) > 7 and re.fullmatch(r"[-+]?\d*\.\d+(e[-+]?\d+)?|[-+]?\d+e[-+]?\d+", s, flags=re.I):
        s = f"{float(s):.4g}"
    elif isinstance(value, float):
        s = f"{value:.4g}"
    return _esc(s)


def _html_table(rows: list[dict[str, str]], max_rows: int = MAX_TABLE_ROWS) -> str:
    if not rows:
        return '<p class="missing">this table is empty</p>'
    cols = list(rows[0].keys())
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c, ''))}</td>" for c in cols) + "</tr>"
                   for r in rows[:max_rows])
    cut = (f'<p class="note">showing the first {max_rows} of {len(rows)} rows; the CSV holds them all.</p>'
           if len(rows) > max_rows else "")
    return (f'<div class="tablewrap"><table class="data"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>{cut}")


def _config_html(cfg: Any) -> str:
    if isinstance(cfg, dict):
        flat = []

        def walk(prefix: str, obj: Any) -> None:
            if isinstance(obj, dict) and obj:
                for k, v in obj.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                flat.append({"key": prefix, "value": json.dumps(obj) if not isinstance(obj, str) else obj})

        walk("", cfg)
        if flat:
            return _html_table(flat, max_rows=10_000)
    return f"<pre>{_esc(json.dumps(cfg, indent=1))}</pre>"


def _script_json(obj_text: str, el_id: str) -> str:
    # "</" inside JSON would close the script element early
    safe = obj_text.replace("</", "<\\/")
    return f'<script type="application/json" id="{el_id}">{safe}</script>'


_PLOTLY_SRC = re.compile(r'<script[^>]*\bsrc="[^"]*plotly[^"]*"[^>]*>\s*</script>', re.I)


def _foreign_view(path: Path, plotly_js: str) -> str:
    """A view HTML without JSON sidecar, as an iframe srcdoc that needs no network."""
    text = path.read_text(errors="replace")
    if _PLOTLY_SRC.search(text):
        # relative ("plotly.min.js") or CDN references would fail offline: use the inline library
        inline_js = "<script>" + plotly_js.replace("</script", "<\\/script") + "</script>"
        text = _PLOTLY_SRC.sub(lambda _: inline_js, text, count=1)
        text = _PLOTLY_SRC.sub("", text)
    text = re.sub(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>', "", text, flags=re.I)
    doc = html.escape(text, quote=True)
    return f'<iframe class="view" srcdoc="{doc}" title="{_esc(path.stem)}"></iframe>'


def _partition_overview(root: Path) -> list[dict[str, Any]]:
    rows = []
    pdir = root / "partitions"
    for p in sorted(pdir.glob("*/*.json"), key=lambda p: (layer_sort_key(p.parent.name), p.stem)):
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            rows.append({"layer": p.parent.name, "method": p.stem, "problem": f"unreadable: {exc}"})
            continue
        sizes = [len(c) for c in data.get("coalitions", [])]
        st = data.get("stability") or {}
        rows.append({
            "layer": p.parent.name, "method": p.stem, "n_players": data.get("n_players", ""),
            "n_coalitions": data.get("n_coalitions", len(sizes)),
            "largest": max(sizes) if sizes else "", "median_size": float(np.median(sizes)) if sizes else "",
            "singletons": sum(1 for s in sizes if s == 1),
            "blocking_rate": st.get("rate", ""), "blocking_upper": st.get("upper", ""),
        })
    return rows


def derive_outputs(run_dir: str | Path, *, track: bool | str = "auto") -> list[str]:
    """Write the report's derived tables and figures into the run directory; returns problems met.

    From partitions/: ``figures/coalition_sizes_<method>.png`` (rank-size on log-log axes with Zipf
    fits), ``tables/coalition_sizes`` (exponents), ``tables/stability_certificates`` and
    ``figures/stability_certificates.png``. From matrices/: ``figures/phi_<layer>_<method>.png`` for each
    phi key of ``rundir.PHI_KEYS`` (``phi_pas`` -> ``hedonic_pas``; half b in cross-fitted runs). From
    tables/ whose name holds "synergy": ``figures/<name>_bars.png``. ``track``: True runs
    ``track_run``; "auto" only when tracking/ has no transitions yet.
    """
    from hedonic_neurons.report import plots
    from hedonic_neurons.rundir import PHI_KEYS, RunDir, parse_matrix_key

    rd = RunDir(run_dir)
    root = rd.root
    problems: list[str] = []
    parts = rd.partitions()

    if track is True or (track == "auto" and parts and not (root / "tracking" / "transitions.csv").exists()
                         and (root / "matrices").is_dir()):
        try:
            from hedonic_neurons.report.sankey import track_and_draw

            track_and_draw(root)
        except Exception as exc:  # the report must still be written
            problems.append(f"tracking failed: {exc}")

    if parts:
        by_method: dict[str, dict[str, list[int]]] = {}
        stab_rows = []
        for layer in sorted(parts, key=layer_sort_key):
            for method, path in sorted(parts[layer].items()):
                try:
                    data = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError) as exc:
                    problems.append(f"partition {layer}/{method} unreadable: {exc}")
                    continue
                sizes = [len(c) for c in data.get("coalitions", [])]
                by_method.setdefault(method, {})[f"layer {layer}"] = sizes
                st = data.get("stability") or {}
                if st:
                    stab_rows.append({"layer": layer, "method": method,
                                      **{k: v for k, v in st.items() if not isinstance(v, list | dict)}})
        size_rows = []
        for method, series in by_method.items():
            try:
                fits = plots.size_distribution_png(series, rd.figure_path(f"coalition_sizes_{method}"),
                                                   title=f"Coalition sizes: {method}")
            except Exception as exc:
                problems.append(f"coalition size figure for {method}: {exc}")
                continue
            for key, sizes in series.items():
                fit = fits.get(key)
                size_rows.append({"method": method, "layer": key.removeprefix("layer "),
                                  "n_coalitions": len(sizes), "largest": max(sizes) if sizes else 0,
                                  "n_singletons": sum(1 for s in sizes if s == 1),
                                  "n_size_2": sum(1 for s in sizes if s == 2),
                                  "zipf_exponent": round(fit["exponent"], 3) if fit else "",
                                  "zipf_r2": round(fit["r2"], 3) if fit else ""})
        if size_rows:
            rd.save_table("coalition_sizes", size_rows,
                          title="Coalition sizes: Zipf fit size ~ A rank^-s (least squares on log-log, |C| >= 2)")
        if stab_rows:
            cols = list(dict.fromkeys(k for r in stab_rows for k in r))
            rd.save_table("stability_certificates", stab_rows, cols,
                          title="Stability certificates: rate of sampled coalitions that block the partition")
            try:
                plots.stability_png(stab_rows, rd.figure_path("stability_certificates"))
            except Exception as exc:
                problems.append(f"stability figure: {exc}")

        # phi heatmaps ordered by the matching method's coalitions
        for layer in sorted(parts, key=layer_sort_key):
            mpath = rd.matrices_path(layer)
            if not mpath.exists():
                continue
            try:
                from safetensors import safe_open

                with safe_open(str(mpath), framework="numpy") as fh:
                    for key in fh.keys():
                        parsed = parse_matrix_key(key)
                        # cross-fitted runs: half b's phi (held-out for the half-a partitions, which carry
                        # the plain method names), ordered by those partitions; unsplit runs: the plain key
                        if parsed is None or parsed[0] not in PHI_KEYS or parsed[1] not in (None, "b"):
                            continue
                        method = PHI_KEYS[parsed[0]]
                        if method not in parts[layer]:
                            continue
                        fig = rd.figure_path(f"phi_{layer}_{method}")
                        if fig.exists() and fig.stat().st_mtime >= mpath.stat().st_mtime:
                            continue
                        labels = rd.load_partition(layer, method)["labels"]
                        plots.phi_heatmap_png(fh.get_tensor(key), labels, fig,
                                              title=f"{key} at layer {layer}, ordered by {method}")
            except Exception as exc:
                problems.append(f"phi heatmap for layer {layer}: {exc}")

    for csv_path in sorted((root / "tables").glob("*synergy*.csv")):
        try:
            rows = _read_csv(csv_path)
            cols = rows[0].keys() if rows else []
            method_col = next((c for c in ("method", "algorithm") if c in cols), None)
            if method_col is None:
                continue
            group_col = next((c for c in ("layer", "task", "group") if c in cols), None)
            plots.synergy_bars_png(rows, rd.figure_path(f"{csv_path.stem}_bars"), method_col=method_col,
                                   group_col=group_col, title=_md_title(csv_path) or csv_path.stem)
        except Exception as exc:
            problems.append(f"synergy bars from {csv_path.name}: {exc}")
    return problems


# headline tables of each experiment, in order (MNIST Tables 7-8, reranker Tables 1, 6, 2)
HEADLINE_TABLES = ("heldout", "table7_synergy", "table8_interpretability", "table1_extrinsic", "table6_synergy",
                   "table2_predictivity")
# headline figures: synergy bars (with CIs), coalition sizes, digit grids, the across-layer Sankey
HEADLINE_FIGURES = ("synergy", "coalition_sizes_hedonic_pas", "grid_", "sankey_hedonic_pas_all")


def _results_html(root: Path, tables: list[Path], figs: list[Path]) -> str:
    """The headline tables and figures, shown first (every table and figure is also in its section)."""
    by_stem = {t.stem: t for t in tables}
    body = []
    for stem in HEADLINE_TABLES:
        if stem in by_stem:
            title = _md_title(by_stem[stem])
            body.append(f"<h3>{_esc(stem)}</h3>" + (f"<p>{inline(title)}</p>" if title else "")
                        + _html_table(_read_csv(by_stem[stem])))
    chosen = [f for key in HEADLINE_FIGURES for f in figs if key in f.stem][:6]
    if chosen:
        body.append('<div class="grid">')
        for f in dict.fromkeys(chosen):
            wide = " wide" if any(k in f.stem for k in ("grid", "sankey")) else ""
            body.append(f'<figure class="{wide.strip()}"><img alt="{_esc(f.stem)}" src="{_png_uri(f)}">'
                        f"<figcaption>{_esc(f.relative_to(root))}</figcaption></figure>")
        body.append("</div>")
    return "".join(body)


def build_report(run_dir: str | Path, *, derive: bool = True, track: bool | str = "auto",
                 out: str | Path | None = None) -> Path:
    """Write ``run_dir/report.html`` (self-contained, offline) and return its path.

    ``derive`` first writes the derived figures/tables (``derive_outputs``); ``track`` is passed on.
    Partial run directories are fine: every part present gets a section, every part missing is listed.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run directory {root} does not exist; pass the --out directory of a run")
    known = ("config.json", "summary.md", "partitions", "matrices", "tables", "figures", "views", "tracking",
             "verification", "verification.csv", "valuations.json", "warnings.txt", "cards.json")
    if not any((root / name).exists() for name in known):
        raise FileNotFoundError(f"{root} holds no run (none of {', '.join(known)}): pass the --out directory of a "
                                "`hedonic-neurons mnist` or `reranker` run")
    problems = derive_outputs(root, track=track) if derive else []
    from plotly.offline import get_plotlyjs

    plotly_js = get_plotlyjs()
    sections: list[tuple[str, str, str]] = []  # (anchor, title, html)
    status: list[tuple[str, bool, str]] = []

    # warnings first: results computed on less than was asked for (hedonic_neurons.notices) --------
    from hedonic_neurons import notices

    if notices.read(root):
        items = "".join(f"<li>{_esc(w)}</li>" for w in notices.read(root))
        sections.append(("warnings", "Warnings", "<p>These results were computed on less than was asked for, or "
                         f"with a fallback rule ({notices.FILENAME}):</p><ul>{items}</ul>"))
    # summary and config ------------------------------------------------------------------------
    summary = root / "summary.md"
    status.append(("summary.md", summary.exists(), "plain-words summary"))
    if summary.exists():
        sections.append(("summary", "Summary", markdown_to_html(summary.read_text())))
    cfg = root / "config.json"
    status.append(("config.json", cfg.exists(), "the run's configuration"))
    if cfg.exists():
        try:
            sections.append(("config", "Configuration", _config_html(json.loads(cfg.read_text()))))
        except json.JSONDecodeError as exc:
            sections.append(("config", "Configuration",
                             f'<p class="missing">config.json unreadable: {_esc(exc)}</p>'))

    # partitions ----------------------------------------------------------------------------------
    overview = _partition_overview(root)
    status.append(("partitions/", bool(overview), "coalitions per layer and method"))
    if overview:
        sections.append(("partitions", "Partitions",
                         "<p class='note'>One row per layer and method "
                         "(partitions/&lt;layer&gt;/&lt;method&gt;.json).</p>"
                         + _html_table(overview, max_rows=10_000)))

    # coalition cards (report.cards): the interactive explorer -------------------------------------
    cards_path = root / "cards.json"
    if cards_path.exists():  # optional (runs on language models write them): listed only when present
        status.append(("cards.json", True, "coalition cards (what each coalition does)"))
        from hedonic_neurons.report.cards import cards_section_html, read_cards

        try:
            sections.append(("coalitions", "Coalitions", cards_section_html(read_cards(cards_path))))
        except (OSError, ValueError, KeyError) as exc:
            sections.append(("coalitions", "Coalitions", f'<p class="missing">cards.json unreadable: {_esc(exc)}</p>'))

    # tables --------------------------------------------------------------------------------------
    tables = sorted((root / "tables").glob("*.csv"))
    status.append(("tables/", bool(tables), "result tables (CSV + Markdown)"))
    if tables:
        parts = []
        for t in tables:
            title = _md_title(t)
            rows = _read_csv(t)
            parts.append(f'<h3 id="table-{_esc(t.stem)}">{_esc(t.stem)}</h3>'
                         + (f"<p>{inline(title)}</p>" if title else "") + _html_table(rows))
        sections.append(("tables", "Tables", "".join(parts)))

    # self-verification (models.verify): valuations vs direct ablation through the model's modules -------
    ver = sorted(root.glob("verification.csv")) + sorted((root / "verification").glob("*.csv"))
    if ver:
        sections.append(("verification", "Self-verification",
                         "<p class='note'>Computed psi(i), psi(i, j), activations and OCA weight columns against "
                         "direct ablation through the model's own modules on a few random inputs, players and "
                         "pairs (verification*.json has every value).</p>"
                         + "".join(f"<h3>{_esc(t.stem)}</h3>" + _html_table(_read_csv(t)) for t in ver)))

    # tracking ------------------------------------------------------------------------------------
    tdir = root / "tracking"
    trans = tdir / "transitions.csv"
    status.append(("tracking/", trans.exists(), "coalition transitions across layers"))
    views = sorted((root / "views").glob("*.html"))
    sankeys = [v for v in views if v.stem.startswith("sankey")]
    others = [v for v in views if not v.stem.startswith("sankey")]
    n_view = 0

    def view_html(v: Path) -> str:
        nonlocal n_view
        n_view += 1
        sidecar = v.with_suffix(".json")
        if sidecar.exists():
            sid = f"viewdata-{n_view}"
            return (f"<h3>{_esc(v.stem)}</h3>" + _script_json(sidecar.read_text(), sid)
                    + f'<div class="view plotly-view" id="view-{n_view}" data-src="{sid}"></div>')
        return f"<h3>{_esc(v.stem)}</h3>" + _foreign_view(v, plotly_js)

    if trans.exists() or sankeys:
        body = []
        if trans.exists():
            body.append("<p class='note'>Events per source coalition of two or more neurons (a neuron "
                        "alone is in no coalition; tracking/transitions.csv): persist alpha &ge; hi and beta "
                        "&ge; hi; merge alpha &ge; hi, beta &ge; floor; split beta &ge; hi, alpha &ge; floor; "
                        "vanish otherwise, or when random redraws of the next layer's partition (sizes kept) "
                        "give the coalition as strong a link of the same kind too often (p &gt; 0.05). By "
                        "default (measure relative) alpha is the excess of a link's mass over what a "
                        "size-matched random group of next-layer neurons would get, out of the same excess "
                        "for the group of that size the coalition writes to most (at a residual site: the "
                        "identical coalition), so 1 means the link carries all that an identical coalition "
                        "would; beta the same from the target's side; a share counts only when its link is "
                        "significant (z &ge; 2 over random groups). The *_link_% columns give the events "
                        "before the chance test. The paper's raw shares are "
                        "<code>measure=\"raw\"</code> (docs/tracking.md). Table 3 (tracking_events) puts "
                        "each method beside the same tracking on size-matched random partitions and on "
                        "shuffled weights (negative controls), and at residual sites on the partition "
                        "carried across unchanged, cut in two or merged in pairs (positive controls); "
                        "tracking_controls gives the control figures and the agreement with direct overlap; "
                        "tracking_summary the mean and spread over seeds.</p>")
            body.append("<details><summary>per-coalition transitions</summary>"
                        + _html_table(_read_csv(trans)) + "</details>")
        body.extend(view_html(v) for v in sankeys)
        sections.append(("tracking", "Tracking across layers", "".join(body)))

    # figures -------------------------------------------------------------------------------------
    figs = sorted((root / "figures").rglob("*.png"))
    status.append(("figures/", bool(figs), "static figures (PNG, also for papers)"))
    # phi heatmaps come one per (network, layer, method): embed the first few so the page stays
    # light (a full MNIST run has 40+ of them, ~15 MB) and name the rest, which stay beside it
    heatmaps = [f for f in figs if f.stem.startswith("phi_")]
    skipped = heatmaps[MAX_EMBEDDED_HEATMAPS:]
    figs = [f for f in figs if f not in set(skipped)]
    if skipped:
        problems.append(f"{len(skipped)} more phi heatmaps are not embedded (to keep the page light); they "
                        f"are in figures/: {', '.join(f.name for f in skipped[:5])}...")
    if figs:
        groups: dict[str, list[Path]] = {}
        for f in figs:
            groups.setdefault(str(f.parent.relative_to(root)), []).append(f)
        body = []
        for g, files in groups.items():
            if len(groups) > 1:
                body.append(f"<h3>{_esc(g)}</h3>")
            body.append('<div class="grid">')
            for f in files:
                wide = " wide" if any(k in f.stem for k in ("grid", "sankey")) else ""
                body.append(f'<figure class="{wide.strip()}"><img alt="{_esc(f.stem)}" src="{_png_uri(f)}">'
                            f"<figcaption>{_esc(f.relative_to(root))}</figcaption></figure>")
            body.append("</div>")
        sections.append(("figures", "Figures", "".join(body)))

    status.append(("views/", bool(views), "interactive views (plotly)"))
    if others:
        sections.append(("views", "Views", "".join(view_html(v) for v in others)))

    # results first: the headline tables and figures at the top ------------------------------------
    results = _results_html(root, tables, figs)
    if results:
        sections.insert(0, ("results", "Results", results))

    # what is missing -----------------------------------------------------------------------------
    stages = sorted(p.stem for p in (root / "stages").glob("*.done"))
    lines = "".join(
        f"<li><span class='{'ok' if ok else 'missing'}'>{'present' if ok else 'MISSING'}</span> "
        f"<code>{_esc(name)}</code>: {_esc(what)}</li>" for name, ok, what in status)
    contents = f"<ul>{lines}</ul>"
    if stages:
        contents += f"<p class='note'>finished stages: {_esc(', '.join(stages))}</p>"
    if problems:
        contents += ("<p class='missing'>problems while deriving figures:</p><ul>"
                     + "".join(f"<li>{_esc(p)}</li>" for p in problems) + "</ul>")
    # bookkeeping last, folded: the configuration, the partition overview and the run's contents
    tail = {"config", "partitions"}
    folded = [(a, t, f"<details><summary>show</summary>{h}</details>") for a, t, h in sections if a in tail]
    sections = [x for x in sections if x[0] not in tail] + folded
    sections.append(("contents", "Contents of this run",
                     f"<details><summary>files, finished stages, derivation notes</summary>{contents}</details>"))

    nav = "".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{_esc(t)}</h2>{h}</section>' for a, t, h in sections)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    needs_plotly = n_view > 0 and any(v.with_suffix(".json").exists() for v in views)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>hedonic-neurons report: {_esc(root.resolve().name)}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<style>{_CSS}</style>"
        + (f"<script>{plotly_js}</script>" if needs_plotly else "")
        + "</head><body>"
        f"<header><h1>hedonic-neurons report: {_esc(root.resolve().name)}</h1>"
        f"<div class='meta'>{_esc(root.resolve())} &middot; generated {now}</div></header>"
        f"<nav>{nav}</nav><main>{body}</main>"
        + (f"<script>{_JS}</script>" if needs_plotly else "")
        + "</body></html>"
    )
    out = Path(out) if out is not None else root / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    log.info("report written to %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out
