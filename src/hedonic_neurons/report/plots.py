"""Static figures of the report (matplotlib PNG): coalition sizes with a Zipf fit, the phi matrix ordered
by coalition, synergy bars with confidence intervals, stability certificates."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["zipf_fit", "size_distribution_png", "phi_heatmap_png", "parse_ci", "synergy_bars_png",
           "stability_png"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    tmp.replace(path)
    _plt().close(fig)
    return path


def zipf_fit(sizes, min_size: int = 1) -> dict[str, float]:
    """Zipf law size(rank) ~ A * rank^(-s): least squares on log size vs log rank (sizes sorted down).

    Only coalitions with |C| >= ``min_size`` enter the fit (they hold the top ranks, so ranks are
    unchanged). Returns ``exponent`` s, ``A``, ``r2`` of the log-log fit and ``n`` coalitions fitted.
    """
    s = np.sort(np.asarray(sizes, dtype=np.float64).ravel())[::-1]
    s = s[s >= max(min_size, 1e-300)]
    if s.size < 2:
        raise ValueError(f"a Zipf fit needs at least 2 coalition sizes >= {min_size}; got {s.size}")
    x, y = np.log(np.arange(1, s.size + 1)), np.log(s)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid ** 2)) / ss if ss > 0 else float("nan")
    return {"exponent": float(-slope), "A": float(math.exp(intercept)), "r2": r2, "n": int(s.size)}


def size_distribution_png(sizes_by_key: Mapping[str, Sequence[int]], path: str | Path,
                          title: str = "Coalition sizes", min_size: int = 2) -> dict[str, dict[str, float]]:
    """Rank-size plot on log-log axes with each series' Zipf fit (left) and the size histogram (right).

    The fit uses coalitions of at least ``min_size`` players (default 2: singletons are the players the
    solver left alone, not coalitions). Returns {key: zipf_fit(...)} for every series it could fit.
    """
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    fits: dict[str, dict[str, float]] = {}
    cmap = plt.get_cmap("viridis")
    keys = list(sizes_by_key)
    for j, key in enumerate(keys):
        s = np.sort(np.asarray(sizes_by_key[key], dtype=float))[::-1]
        color = cmap(j / max(1, len(keys) - 1))
        rank = np.arange(1, s.size + 1)
        label = str(key)
        if np.sum(s >= min_size) >= 2:
            fit = zipf_fit(s, min_size)
            fits[str(key)] = fit
            label += f" (s={fit['exponent']:.2f}, R²={fit['r2']:.2f})"
            ax1.plot(rank, fit["A"] * rank ** (-fit["exponent"]), "--", color=color, lw=1)
        ax1.plot(rank, s, "o", ms=3, color=color, label=label, alpha=0.8)
        vals, counts = np.unique(s.astype(int), return_counts=True)
        ax2.plot(vals, counts, "o-", ms=3, lw=0.8, color=color, label=str(key), alpha=0.8)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.2)
    ax1.set(xlabel="rank", ylabel="coalition size |C|",
            title=f"rank-size, Zipf fit size ~ rank^-s on |C| >= {min_size}")
    ax2.set(xlabel="coalition size |C|", ylabel="number of coalitions", title="size histogram")
    ax1.legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, path)
    return fits


def _block_mean(A: np.ndarray, size: int) -> np.ndarray:
    """Average-pool a square matrix down to at most size x size (large n stays readable and light)."""
    n = A.shape[0]
    if n <= size:
        return A
    edges = np.linspace(0, n, size + 1).astype(int)
    rows = np.add.reduceat(A, edges[:-1], axis=0) / np.diff(edges)[:, None]
    return np.add.reduceat(rows, edges[:-1], axis=1) / np.diff(edges)[None, :]


def phi_heatmap_png(phi: np.ndarray, labels, path: str | Path, title: str = "phi ordered by coalition",
                    max_pixels: int = 1024) -> Path:
    """Heatmap of phi with players reordered by coalition (largest first), with coalition boundaries.

    Colour scale: symmetric about zero at the 99th percentile of |phi| off the diagonal.
    """
    phi = np.asarray(phi, dtype=np.float64)
    labels = np.asarray(labels)
    if phi.ndim != 2 or phi.shape[0] != phi.shape[1] or phi.shape[0] != labels.size:
        raise ValueError(f"phi must be (n, n) with n = len(labels) = {labels.size}; got {phi.shape}")
    ids, sizes = np.unique(labels, return_counts=True)
    size_of = dict(zip(ids.tolist(), sizes.tolist(), strict=True))
    # unassigned (label < 0) players go last; coalitions by size, largest first
    order = np.lexsort((labels, -np.array([size_of[x] for x in labels.tolist()]), labels < 0))
    P = phi[np.ix_(order, order)]
    off = np.abs(phi[~np.eye(phi.shape[0], dtype=bool)])
    vmax = float(np.quantile(off, 0.99)) if off.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    shown = _block_mean(P, max_pixels)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(shown, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest",
                   extent=(0, phi.shape[0], phi.shape[0], 0))
    sorted_labels = labels[order]
    bounds = np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1
    if bounds.size <= 200:  # boundaries of many tiny coalitions would paint the picture black
        for b in bounds:
            ax.axhline(b, color="k", lw=0.3, alpha=0.5)
            ax.axvline(b, color="k", lw=0.3, alpha=0.5)
    fig.colorbar(im, ax=ax, shrink=0.8, label="phi")
    ax.set(title=f"{title}\n{ids[ids >= 0].size} coalitions, n = {labels.size}", xlabel="player (sorted)",
           ylabel="player (sorted)")
    return _save(fig, path)


_CI = re.compile(r"^\s*([-+]?[\d.]+(?:e[-+]?\d+)?)\s*(?:±|\+/-|\+-)\s*([\d.]+(?:e[-+]?\d+)?)\s*(?:\([^)]*\))?\s*$")
# a number with a note: '0.25 (1 seed, no CI)' (fmt_ci with one value left)
_NOTED = re.compile(r"^\s*([-+]?[\d.]+(?:e[-+]?\d+)?)\s*\([^)]*\)\s*$")


def parse_ci(value: Any) -> tuple[float, float] | None:
    """'0.12 ± 0.01' (as ``fmt_ci`` writes) -> (0.12, 0.01); a plain number -> (x, 0); else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), 0.0
    m = _CI.match(str(value))
    if m:
        return float(m.group(1)), float(m.group(2))
    m = _NOTED.match(str(value))
    if m:
        return float(m.group(1)), 0.0
    try:
        return float(value), 0.0
    except (TypeError, ValueError):
        return None


def _is_paper(column: str) -> bool:
    """A column of the paper's numbers: ``paper_Pair`` (MNIST tables) or ``paper Pairwise (LLaMA)`` (reranker)."""
    return re.match(r"paper[_ ]", column, re.I) is not None


def _bare(name: str) -> str:
    """'paper Pairwise (LLaMA)' / 'Pairwise (held-out)' -> 'pairwise': the metric without notes or prefix."""
    name = re.sub(r"^paper[_ ]", "", name, flags=re.I)
    return re.sub(r"\s*\([^)]*\)", "", name).strip().lower()


def _paper_column(metric: str, columns: Sequence[str]) -> str | None:
    """The paper column holding the paper's value of ``metric`` ("paper_Pair" for "Pair", "paper_dAcc" for
    "dAcc_pp", "paper Pairwise (LLaMA)" for "Pairwise (held-out)"), if the table has one."""
    if f"paper_{metric}" in columns:
        return f"paper_{metric}"
    for c in columns:
        if c.startswith("paper_") and metric.startswith(c[len("paper_"):] + "_"):
            return c
    for c in columns:
        if _is_paper(c) and _bare(c) == _bare(metric):
            return c
    return None


def bar_metrics(rows: Sequence[Mapping[str, Any]], method_col: str = "method",
                group_col: str | None = None) -> list[str]:
    """The columns `synergy_bars_png` draws as panels: every column whose cells all parse, other than the
    method / group columns, *_ci, *_sd* and the paper's columns (drawn as reference marks on these)."""
    skip = {method_col, group_col}
    return [c for c in rows[0] if c not in skip and not c.endswith("_ci") and "_sd" not in c
            and not _is_paper(c)  # the paper's numbers are reference marks, never bars
            and all(parse_ci(r.get(c)) is not None and str(r.get(c)).strip() != "" for r in rows)]


def synergy_bars_png(rows: Sequence[Mapping[str, Any]], path: str | Path, *, method_col: str = "method",
                     metrics: Sequence[str] | None = None, group_col: str | None = None,
                     title: str = "Coalition synergy (mean ± 95 % CI)", per_row: int = 4) -> Path:
    """Bar charts, one panel per metric, bars per method (grouped by ``group_col`` if given), with CIs.

    Metric cells are either 'mean ± half' strings or numbers with a companion ``<metric>_ci`` column.
    ``metrics`` defaults to every column (other than method/group, *_ci, *_sd*, paper_*) whose cells all
    parse. A paper column (``paper_<metric>``, or ``paper <Metric> (model)``), when present, is drawn as a
    black reference mark over each method's bar, never as a metric of its own.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("synergy_bars_png got no rows; pass the synergy table's rows")
    if method_col not in rows[0]:
        raise ValueError(f"the table has no column {method_col!r}; pass method_col= the method column "
                         f"(columns: {list(rows[0])})")
    columns = list(rows[0])
    if metrics is None:
        metrics = bar_metrics(rows, method_col, group_col)
    if not metrics:
        raise ValueError("no numeric or 'mean ± ci' metric column found; pass metrics=[...]")
    methods = list(dict.fromkeys(str(r[method_col]) for r in rows))
    groups = list(dict.fromkeys(str(r[group_col]) for r in rows)) if group_col else [""]
    n_cols = min(per_row, len(metrics))
    n_rows = math.ceil(len(metrics) / n_cols)
    plt = _plt()
    panel_w = max(3.6, 1.2 + 0.45 * len(methods) * len(groups))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel_w * n_cols, 3.6 * n_rows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    width = 0.8 / len(methods)
    paper_drawn = False
    for j, metric in enumerate(metrics):
        ax = axes[j // n_cols][j % n_cols]
        paper_col = _paper_column(metric, columns)
        for k, method in enumerate(methods):
            means, halves, paper = [], [], []
            for g in groups:
                match = [r for r in rows if str(r[method_col]) == method
                         and (not group_col or str(r[group_col]) == g)]
                parsed = parse_ci(match[0][metric]) if match else None
                m, h = parsed if parsed else (np.nan, 0.0)
                if match and f"{metric}_ci" in match[0]:
                    ci = parse_ci(match[0][f"{metric}_ci"])
                    h = ci[0] if ci else h
                pv = parse_ci(match[0].get(paper_col, "")) if match and paper_col else None
                means.append(m)
                halves.append(h)
                paper.append(pv[0] if pv else np.nan)
            x = np.arange(len(groups)) + (k - (len(methods) - 1) / 2) * width
            ax.bar(x, means, width, yerr=halves, capsize=3, color=cmap(k % 10), label=method)
            if paper_col and np.any(np.isfinite(paper)):
                # a reference mark over the method's bar (a black bar-wide tick), not a bar of its own
                ax.scatter(x, paper, marker="_", s=(72 * width * 2.5) ** 2 / 4, c="k", linewidths=2.0, zorder=5,
                           label="paper (reference)" if not paper_drawn else None)
                paper_drawn = True
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(np.arange(len(groups)), groups if group_col else [""] * len(groups))
        ax.set_title(metric + (f"  (x: {paper_col})" if paper_col else ""), fontsize=10)
        if group_col:
            ax.set_xlabel(group_col)
    for j in range(len(metrics), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].axis("off")
    handles, labels = [], []
    for ax in axes.ravel():
        for hd, lb in zip(*ax.get_legend_handles_labels(), strict=True):
            if lb not in labels:
                handles.append(hd)
                labels.append(lb)
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    return _save(fig, path)


def stability_png(rows: Sequence[Mapping[str, Any]], path: str | Path,
                  title: str = "Stability certificates: blocking rate and upper bound") -> Path:
    """Per layer and method, the measured blocking-coalition rate and its one-sided upper bound (and
    epsilon when the certificate names it)."""
    rows = [r for r in rows if parse_ci(r.get("rate")) is not None]
    if not rows:
        raise ValueError("no stability certificate with a 'rate' to draw")
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    layers = list(dict.fromkeys(str(r["layer"]) for r in rows))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(layers) * len(methods) + 2), 3.8))
    cmap = plt.get_cmap("tab10")
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        x0 = np.arange(len(layers)) + (k - (len(methods) - 1) / 2) * width
        for j, layer in enumerate(layers):
            match = [r for r in rows if str(r["method"]) == method and str(r["layer"]) == layer]
            if not match:
                continue
            rate = parse_ci(match[0]["rate"])[0]
            up = parse_ci(match[0].get("upper", ""))
            ax.bar(x0[j], rate, width, color=cmap(k % 10), label=method if j == 0 else None)
            if up is not None:
                ax.plot([x0[j] - width / 2, x0[j] + width / 2], [up[0]] * 2, color="k", lw=1.2)
    eps = [parse_ci(r.get("epsilon")) for r in rows if parse_ci(r.get("epsilon", "")) is not None]
    if eps:
        ax.axhline(eps[0][0], color="r", ls="--", lw=0.8, label=f"epsilon = {eps[0][0]:g}")
    ax.set_xticks(np.arange(len(layers)), layers)
    ax.set(xlabel="layer", ylabel="blocking rate (bar) / upper bound (line)", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)
