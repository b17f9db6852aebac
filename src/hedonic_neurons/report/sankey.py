"""Sankey views of coalition flow across layers (paper Figure 2): plotly for the report, matplotlib PNG.

Nodes are coalitions, one column per layer, coloured by the event of the coalition as a source
(persist green, split orange, merge blue, vanish grey; the last layer's coalitions are neutral).
A link C -> C' is drawn when C's share of outgoing mass on it (alpha of that link under the tracking
measure: by default the relative share, the excess over a size-matched random group out of what an
identical coalition would carry, ``tracking.events.link_shares``) is at least ``lo``; its width is
that share times |C| and its colour is the source's event. The share a coalition does not send
through a drawn link (under the relative measure: 1 - alpha x beta of its best link) goes to one grey
"vanished" node per transition, so disappearance is visible as in the paper's figure. A caption (the
controls' event shares) is printed under the title and the legend.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hedonic_neurons.tracking.controls import CONTROLS
from hedonic_neurons.tracking.events import EVENT_COLORS, EVENTS, _parts, layer_group, layer_sort_key, link_shares
from hedonic_neurons.tracking.mass import coalition_ids, coalition_sizes

__all__ = ["sankey_data", "sankey_figure", "sankey_png", "save_view", "write_sankey_views"]

_NEUTRAL = "#7f7fbf"


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def sankey_data(
    labels_by_layer: Mapping[Any, np.ndarray], mass_by_transition: Mapping[tuple, np.ndarray],
    rows: Sequence[dict], lo: float = 0.1, max_nodes_per_layer: int | None = None, *,
    measure: str = "relative", null: str = "config",
) -> dict[str, Any]:
    """Nodes and links (plain lists) for the transitions in ``mass_by_transition``; see module doc.

    ``rows`` are ``track_layers`` rows (they give each source's event); ``measure`` / ``null`` must be
    those the rows were tracked with. ``max_nodes_per_layer`` keeps the largest coalitions of each
    layer (links to the others are dropped) to keep big views light.
    """
    if not mass_by_transition:
        raise ValueError("no transition to draw; pass the mass matrix of at least one (layer, next) pair")
    transitions = sorted(mass_by_transition, key=lambda k: (layer_sort_key(k[0]), layer_sort_key(k[1])))
    layers = sorted({t[0] for t in transitions} | {t[1] for t in transitions}, key=layer_sort_key)
    event_of = {(r["from_layer"], r["source"]): r["event"] for r in rows}
    col = {lay: i for i, lay in enumerate(layers)}
    nodes: list[dict] = []
    index: dict[tuple, int] = {}
    kept: dict[Any, set] = {}
    for lay in layers:
        lab = np.asarray(labels_by_layer[lay])
        ids, sizes = np.unique(lab[lab >= 0], return_counts=True)
        order = np.argsort(-sizes, kind="stable")
        if max_nodes_per_layer is not None:
            order = order[:max_nodes_per_layer]
        kept[lay] = set(ids[order].tolist())
        for j in order:
            ev = event_of.get((str(lay), int(ids[j])))
            index[(lay, int(ids[j]))] = len(nodes)
            nodes.append({"layer": str(lay), "coalition": int(ids[j]), "size": int(sizes[j]),
                          "event": ev or "", "x": col[lay],
                          "label": f"L{lay} C{int(ids[j])} ({int(sizes[j])})"})
    links: list[dict] = []
    for l1, l2 in transitions:
        parts = _parts(mass_by_transition[(l1, l2)])
        M = np.asarray(parts.pop("M"), dtype=np.float64)
        parts.pop("backward_players", None)
        ids1 = coalition_ids(labels_by_layer[l1])
        ids2 = coalition_ids(labels_by_layer[l2])
        shares = link_shares(M, coalition_sizes(labels_by_layer[l1]), coalition_sizes(labels_by_layer[l2]),
                             measure=measure, null=null, **parts)
        shares, betas = shares["alpha"], shares["beta"]
        out = M.sum(axis=1)
        sink = None
        for a, ca in enumerate(ids1.tolist()):
            if ca not in kept[l1] or out[a] <= 0:
                continue
            src = index[(l1, ca)]
            ev = event_of.get((str(l1), ca), "vanish")
            share = shares[a]
            drawn = 0.0
            for b in np.flatnonzero(share >= lo):
                cb = int(ids2[b])
                if cb not in kept[l2]:
                    continue
                links.append({"source": src, "target": index[(l2, cb)], "share": float(share[b]),
                              "value": float(share[b]) * nodes[src]["size"], "event": ev})
                # relative shares are each out of what an identical coalition would carry, so they do
                # not add up: what a vanishing source lacks is 1 - its best link's alpha x beta
                drawn = (max(drawn, float(share[b] * betas[a, b])) if measure == "relative"
                         else drawn + float(share[b]))
            if ev == "vanish" and drawn < 1.0:
                if sink is None:
                    sink = len(nodes)
                    nodes.append({"layer": f"{l1}->{l2}", "coalition": -1, "size": 0, "event": "vanish",
                                  "x": col[l1] + 0.5, "label": f"vanished {l1}->{l2}"})
                links.append({"source": src, "target": sink, "share": 1.0 - drawn,
                              "value": (1.0 - drawn) * nodes[src]["size"], "event": "vanish"})
    return {"layers": [str(x) for x in layers], "nodes": nodes, "links": links}


def _positions(data: dict) -> tuple[list[float], list[float]]:
    """Column x by layer, y stacked by event then size, so columns line up with layers."""
    n_cols = max(1, len(data["layers"]) - 1)
    rank = {"persist": 0, "merge": 1, "split": 2, "": 3, "vanish": 4}
    xs, ys = [0.0] * len(data["nodes"]), [0.0] * len(data["nodes"])
    by_col: dict[float, list[int]] = {}
    for i, nd in enumerate(data["nodes"]):
        by_col.setdefault(nd["x"], []).append(i)
    for x, members in by_col.items():
        members.sort(key=lambda i: (data["nodes"][i]["coalition"] < 0, rank.get(data["nodes"][i]["event"], 3),
                                    -data["nodes"][i]["size"]))
        w = np.array([max(data["nodes"][i]["size"], 1) for i in members], dtype=float)
        centers = (np.cumsum(w) - w / 2) / w.sum()
        for i, c in zip(members, centers, strict=True):
            xs[i] = min(0.999, max(0.001, x / n_cols))
            ys[i] = float(min(0.99, max(0.01, c)))
    return xs, ys


def _wrap(text: str, width: int = 110, sep: str = "<br>") -> str:
    import textwrap

    # one line (or more) per "; "-separated part: the caption lists the method, then each control
    return sep.join(line for part in text.split("; ") for line in textwrap.wrap(part, width)) if text else ""


def _event_counts(data: dict) -> dict[str, int]:
    counts = dict.fromkeys(EVENT_COLORS, 0)
    for nd in data["nodes"]:
        if nd["coalition"] >= 0 and nd["event"] in counts:
            counts[nd["event"]] += 1
    return counts


def sankey_figure(data: dict, title: str = "", caption: str = ""):
    """A plotly Sankey figure from ``sankey_data`` output; ``caption`` (e.g. the controls' event shares)
    is printed under the title and legend."""
    import plotly.graph_objects as go

    nodes, links = data["nodes"], data["links"]
    xs, ys = _positions(data)
    node_colors = [EVENT_COLORS.get(nd["event"], _NEUTRAL) for nd in nodes]
    fig = go.Figure(go.Sankey(
        arrangement="snap",
        node={"label": [nd["label"] for nd in nodes], "color": node_colors, "x": xs, "y": ys,
              "pad": 2, "thickness": 12, "line": {"width": 0.3, "color": "#444"},
              "customdata": [nd["event"] or "last layer" for nd in nodes],
              "hovertemplate": "%{label}<br>event: %{customdata}<extra></extra>"},
        link={"source": [lk["source"] for lk in links], "target": [lk["target"] for lk in links],
              "value": [lk["value"] for lk in links],
              "color": [_rgba(EVENT_COLORS[lk["event"]], 0.45) for lk in links],
              "customdata": [f"{lk['share']:.2f}" for lk in links],
              "hovertemplate": "share of source mass %{customdata}<extra></extra>"},
    ))
    counts = _event_counts(data)
    legend = "  ".join(f"<span style='color:{c}'>&#9632;</span> {e} ({counts[e]} shown)"
                       for e, c in EVENT_COLORS.items())
    n_layers = len(data["layers"])
    cap = f"<br><sup>{_wrap(caption, 140, '<br>')}</sup>" if caption else ""
    fig.update_layout(title={"text": (title + "<br>" if title else "") + f"<sup>{legend}</sup>" + cap},
                      height=max(420, min(2400, 12 * max(1, len(nodes) // max(1, n_layers)))),
                      font={"size": 10}, margin={"l": 10, "r": 10, "t": 70 + 14 * cap.count("<br>"), "b": 10})
    return fig


@functools.lru_cache(maxsize=1)
def _plotly_bundle() -> bytes:
    """plotly.min.js (4.6 MB), read once per process rather than once per view (90 views in `make demo`)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


def save_view(fig, path: str | Path) -> Path:
    """Write ``views/<name>.html`` (works offline: plotly.min.js written once beside it) and the figure's
    JSON ``views/<name>.json``, which the report renders with its single inlined plotly.js."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(fig.to_json())
    tmp.replace(path.with_suffix(".json"))
    # plotly writes plotly.min.js only when the file is missing, and not atomically: a run killed while
    # writing it left an empty file that every later view kept pointing to (found by tests/faults). Write
    # it here, atomically, whenever it is not the complete bundle.
    bundle = _plotly_bundle()
    js = path.parent / "plotly.min.js"
    if not js.is_file() or js.stat().st_size != len(bundle):
        tmp_js = js.with_suffix(".js.tmp")
        tmp_js.write_bytes(bundle)
        tmp_js.replace(js)
    html = path.with_suffix(".html.tmp")
    fig.write_html(str(html), include_plotlyjs="directory", full_html=True)
    html.replace(path)
    return path


def sankey_png(data: dict, path: str | Path, title: str = "", caption: str = "") -> Path:
    """A static matplotlib version of the Sankey (alluvial bands between layer columns), for papers;
    ``caption`` is printed under the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import PathPatch, Rectangle
    from matplotlib.path import Path as MPath

    nodes, links = data["nodes"], data["links"]
    n_cols = max(1, len(data["layers"]) - 1)
    # node heights: the larger of in- and out-flow (at least its size for sources), stacked per column
    inflow = np.zeros(len(nodes))
    outflow = np.zeros(len(nodes))
    for lk in links:
        outflow[lk["source"]] += lk["value"]
        inflow[lk["target"]] += lk["value"]
    height = np.maximum(np.maximum(inflow, outflow), [max(nd["size"], 1e-9) if nd["coalition"] >= 0 else 0
                                                     for nd in nodes])
    xs, _ = _positions(data)
    cols: dict[float, list[int]] = {}
    for i, x in enumerate(xs):
        cols.setdefault(round(x, 6), []).append(i)
    rank = {"persist": 0, "merge": 1, "split": 2, "": 3, "vanish": 4}
    scale = 1.0 / max(sum(height[m] for m in members) * 1.25 for members in cols.values())
    y0 = np.zeros(len(nodes))
    for members in cols.values():
        members.sort(key=lambda i: (nodes[i]["coalition"] < 0, rank.get(nodes[i]["event"], 3),
                                    -nodes[i]["size"]))
        gap = 0.25 / max(1, len(members))
        y = 0.0
        for i in members:
            # a column holding only a "vanished" sink: put it at the bottom, under the vanishing sources
            y0[i] = 1.0 - height[i] * scale if nodes[i]["coalition"] < 0 and len(members) == 1 else y
            y += height[i] * scale + gap
    fig, ax = plt.subplots(figsize=(2.2 + 2.0 * n_cols, 7))
    w = 0.012
    out_off = y0.copy()
    in_off = y0.copy()
    bands = []
    for lk in sorted(links, key=lambda lk: (lk["source"], lk["target"])):
        s, t, h = lk["source"], lk["target"], lk["value"] * scale
        xa, xb = xs[s] + w, xs[t] - w
        ya, yb = out_off[s], in_off[t]
        out_off[s] += h
        in_off[t] += h
        xm = (xa + xb) / 2
        verts = [(xa, ya), (xm, ya), (xm, yb), (xb, yb), (xb, yb + h), (xm, yb + h), (xm, ya + h),
                 (xa, ya + h), (xa, ya)]
        codes = [MPath.MOVETO, MPath.CURVE4, MPath.CURVE4, MPath.CURVE4, MPath.LINETO, MPath.CURVE4,
                 MPath.CURVE4, MPath.CURVE4, MPath.CLOSEPOLY]
        bands.append(PathPatch(MPath(verts, codes), facecolor=EVENT_COLORS[lk["event"]], alpha=0.4, lw=0))
    boxes = [Rectangle((xs[i] - w, y0[i]), 2 * w, max(height[i] * scale, 1e-4),
                       facecolor=EVENT_COLORS.get(nd["event"], _NEUTRAL), edgecolor="#333", lw=0.2)
             for i, nd in enumerate(nodes)]
    # one collection per layer of artists: thousands of separate add_patch calls (each updating the data
    # limits) and draws took ~95 % of a tracking run's time; the limits are set by hand below
    for patches in (bands, boxes):
        if patches:
            ax.add_collection(PatchCollection(patches, match_original=True), autolim=False)
    for j, lay in enumerate(data["layers"]):
        ax.text(min(0.999, max(0.001, j / n_cols)), -0.03, f"layer {lay}", ha="center", va="top", fontsize=9)
    counts = _event_counts(data)
    for e, c in EVENT_COLORS.items():
        ax.plot([], [], "s", color=c, label=f"{e} ({counts[e]} shown)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=4, frameon=False, fontsize=9)
    if caption:
        ax.text(0.5, -0.16, _wrap(caption, 30 + 25 * n_cols, "\n"), transform=ax.transAxes, ha="center",
                va="top", fontsize=8)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(1.02, -0.08)  # first node at the top, as in plotly
    ax.axis("off")
    if title:
        ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def write_sankey_views(
    rd: Any, method: str, labels_by_layer: Mapping[Any, np.ndarray], mass_by_transition: Mapping[tuple, np.ndarray],
    rows: Sequence[dict], *, lo: float = 0.1, measure: str = "relative", null: str = "config",
    caption: Any = None, max_nodes_all: int | None = 120, max_nodes_transition: int | None = 200,
) -> list[Path]:
    """Write one method's Sankey views into the run directory ``rd`` (a ``RunDir``).

    ``views/sankey_<method>_<l>_to_<l2>.html|json`` per transition, ``views/sankey_<method>[_<net>]_all``
    and ``figures/sankey_<method>[_<net>]_all.png`` per chain of layers (one per network).
    ``caption(transitions)`` returns the caption of a view over those transition names (the
    controls' event shares); None for no caption.
    """
    def _safe(name: str) -> str:
        return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))

    def cap(keys) -> str:
        return caption({f"{a}->{b}" for a, b in keys}) if caption is not None else ""

    paths: list[Path] = []
    keys = sorted(mass_by_transition, key=lambda k: (layer_sort_key(k[0]), layer_sort_key(k[1])))
    for a, b in keys:
        data = sankey_data(labels_by_layer, {(a, b): mass_by_transition[(a, b)]}, rows, lo,
                           max_nodes_per_layer=max_nodes_transition, measure=measure, null=null)
        n_max = max(np.unique(np.asarray(labels_by_layer[x])).size for x in (a, b))
        note = (f" (largest {max_nodes_transition} coalitions per layer)"
                if max_nodes_transition and n_max > max_nodes_transition else "")
        paths.append(save_view(sankey_figure(data, f"{method}: coalition flow {a} → {b}{note}", cap([(a, b)])),
                               rd.view_path(f"sankey_{_safe(method)}_{_safe(a)}_to_{_safe(b)}")))
    # one across-layers view (and its static PNG for papers) per chain of layers (per network)
    by_group: dict[str, dict[tuple, np.ndarray]] = {}
    for a, b in keys:
        by_group.setdefault(layer_group(a), {})[(a, b)] = mass_by_transition[(a, b)]
    for group, masses in by_group.items():
        stem = f"sankey_{_safe(method)}" + (f"_{_safe(group)}" if len(by_group) > 1 and group else "")
        name = f"{method} {group}".strip()
        data = sankey_data(labels_by_layer, masses, rows, lo, max_nodes_per_layer=max_nodes_all,
                           measure=measure, null=null)
        text = cap(masses)
        if len(masses) > 1:
            note = f" (largest {max_nodes_all} coalitions per layer)" if max_nodes_all else ""
            paths.append(save_view(sankey_figure(data, f"{name}: coalition flow across layers{note}", text),
                                   rd.view_path(f"{stem}_all")))
        paths.append(sankey_png(data, rd.figure_path(f"{stem}_all"), f"{name}: coalition flow", text))
    return paths


def _caption(table_rows: Sequence[dict[str, Any]], method: str, transitions: set[str]) -> str:
    """One line per kind (this method, each control): its mean event shares over ``transitions``."""
    parts = []
    for kind in ("method", *CONTROLS):
        sel = [r for r in table_rows if r["method"] == method and r["kind"] == kind and r["transition"] in transitions]
        if not sel:
            continue
        shares = ", ".join(f"{e} {np.mean([float(r[f'{e}_%']) for r in sel]):.0f} %" for e in EVENTS)
        name = {"method": "this partition", "random_partition": "control: size-matched random partition",
                "shuffled_weights": "control: weights shuffled within each matrix"}[kind]
        parts.append(f"{name}: {shares}")
    return "; ".join(parts)


def draw_tracking(run_dir: str | Path, tracked: Mapping[str, Any], *, max_nodes_all: int | None = 120,
                  max_nodes_transition: int | None = 200) -> list[Path]:
    """Draw the Sankey views of what ``tracking.run.track_methods`` returned ({method: TrackedMethod}).

    Views for the seed-0 partitions only (no ``<method>.s<k>``). A view keeps the largest
    ``max_nodes_transition`` coalitions per layer (``max_nodes_all`` in the all-layers view; None: all);
    the tracking tables always hold every one.
    """
    from hedonic_neurons.rundir import RunDir

    rd = RunDir(run_dir)
    paths: list[Path] = []
    for method, t in tracked.items():
        if re.search(r"\.s\d+$", method):
            continue
        paths += write_sankey_views(rd, method, t.labels, t.masses, t.rows, lo=t.lo, measure=t.measure,
                                    null=t.null, caption=lambda trs, t=t: _caption(t.table, t.method, trs),
                                    max_nodes_all=max_nodes_all, max_nodes_transition=max_nodes_transition)
    return paths


def track_and_draw(run_dir: str | Path, methods: Sequence[str] | None = None, *, max_nodes_all: int | None = 120,
                   max_nodes_transition: int | None = 200, **kw: Any) -> dict[str, list[dict]]:
    """Track a run directory (``tracking.run.track_methods``, ``kw`` passed on) and draw its views;
    returns {method: transition rows} like ``track_run``."""
    from hedonic_neurons.tracking.run import track_methods

    tracked = track_methods(run_dir, methods, **kw)
    if methods is None:  # the whole run re-tracked: no view of an older rule or an untracked method stays
        root = Path(run_dir)
        for old in [*root.glob("views/sankey_*"), *root.glob("figures/sankey_*")]:
            old.unlink()
    draw_tracking(run_dir, tracked, max_nodes_all=max_nodes_all, max_nodes_transition=max_nodes_transition)
    return {m: t.rows for m, t in tracked.items()}
