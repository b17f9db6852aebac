"""Persist / merge / split / vanish events between the coalitions of consecutive layers (paper 3.4, Table 3).

Given an interaction-mass matrix M (n_coal x n_coal', rows = source coalitions at layer l, columns =
target coalitions at layer l+1), coalitions are aligned by a maximum-weight bipartite matching
(``scipy.optimize.linear_sum_assignment``, maximize=True; a match of zero mass counts as unmatched).
For a source C matched to C':

* alpha = M(C, C') / sum_D' M(C, D')   the share of C's outgoing mass that goes to its match;
* beta  = M(C, C') / sum_D M(D, C')    the share of the match's incoming mass that comes from C.

Events (DESIGN section 3): persist alpha >= hi and beta >= hi; merge alpha >= hi and beta < hi;
split alpha < hi and beta >= hi; vanish otherwise (unmatched sources included). ``lo`` is the
smallest outgoing share drawn as a link in the views and counted in ``n_links``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from hedonic_neurons.tracking.mass import coalition_ids

__all__ = ["EVENTS", "EVENT_COLORS", "classify", "track_transition", "track_layers", "transition_table",
           "layer_sort_key"]

EVENTS = ("persist", "merge", "split", "vanish")
# Figure 2 of the paper: green persist, orange split, grey vanish; merge in blue.
EVENT_COLORS = {"persist": "#2ca02c", "merge": "#1f77b4", "split": "#ff7f0e", "vanish": "#9a9a9a"}


def _check_thresholds(hi: float, lo: float) -> None:
    if not (0.0 < lo <= hi <= 1.0):
        raise ValueError(f"thresholds must satisfy 0 < lo <= hi <= 1; got hi={hi}, lo={lo} "
                         "(the defaults are hi=0.7, lo=0.1)")


def classify(alpha: float, beta: float, hi: float = 0.7, matched: bool = True) -> str:
    """The event of one source coalition from its alpha and beta (DESIGN section 3)."""
    if not matched:
        return "vanish"
    if alpha >= hi and beta >= hi:
        return "persist"
    if alpha >= hi:
        return "merge"
    if beta >= hi:
        return "split"
    return "vanish"


def track_transition(
    M: np.ndarray, hi: float = 0.7, lo: float = 0.1, *, source_ids: Sequence[int] | None = None,
    target_ids: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """One row per source coalition (row of M): its match, alpha, beta, event and link count.

    ``source_ids`` / ``target_ids`` name the rows / columns (coalition ids; default 0..n-1). A row
    has ``target`` = -1 when unmatched.
    """
    _check_thresholds(hi, lo)
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.size == 0:
        raise ValueError(f"M must be a non-empty (n_source, n_target) matrix; got shape {M.shape}")
    if not np.all(np.isfinite(M)) or np.any(M < 0):
        raise ValueError("M must be finite and non-negative (an interaction mass); check its inputs")
    n_s, n_t = M.shape
    source_ids = np.arange(n_s) if source_ids is None else np.asarray(source_ids)
    target_ids = np.arange(n_t) if target_ids is None else np.asarray(target_ids)
    if source_ids.size != n_s or target_ids.size != n_t:
        raise ValueError(f"M is {n_s} x {n_t} but {source_ids.size} source and {target_ids.size} target "
                         "ids were given; pass one id per row and per column")
    out_mass = M.sum(axis=1)
    in_mass = M.sum(axis=0)
    rows_idx, cols_idx = linear_sum_assignment(M, maximize=True)
    match = np.full(n_s, -1, dtype=np.int64)
    hit = M[rows_idx, cols_idx] > 0            # zero-mass matches count as unmatched
    match[rows_idx[hit]] = cols_idx[hit]
    with np.errstate(divide="ignore", invalid="ignore"):
        share_out = np.where(out_mass[:, None] > 0, M / out_mass[:, None], 0.0)
    best = M.argmax(axis=1)
    rows: list[dict[str, Any]] = []
    for c in range(n_s):
        t = match[c]
        m = float(M[c, t]) if t >= 0 else 0.0
        alpha = m / out_mass[c] if t >= 0 and out_mass[c] > 0 else 0.0
        beta = m / in_mass[t] if t >= 0 and in_mass[t] > 0 else 0.0
        rows.append({
            "source": int(source_ids[c]),
            "target": int(target_ids[t]) if t >= 0 else -1,
            "mass": m,
            "out_mass": float(out_mass[c]),
            "in_mass": float(in_mass[t]) if t >= 0 else 0.0,
            "alpha": float(alpha),
            "beta": float(beta),
            "event": classify(alpha, beta, hi, matched=t >= 0),
            "best_target": int(target_ids[best[c]]) if out_mass[c] > 0 else -1,
            "n_links": int(np.sum(share_out[c] >= lo)),
        })
    return rows


def layer_sort_key(layer: Any) -> tuple:
    """Natural order of layer names ("2" < "10", "h2" < "h10")."""
    import re

    s = str(layer)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.findall(r"\d+|\D+", s))


def track_layers(
    labels_by_layer: Mapping[Any, np.ndarray], mass_by_transition: Mapping[tuple, np.ndarray],
    hi: float = 0.7, lo: float = 0.1,
) -> list[dict[str, Any]]:
    """Track every transition given per-layer labels and the mass matrix of each (l, l2) pair.

    Returns the rows of ``track_transition`` for every transition (in layer order), each with
    ``from_layer``, ``to_layer``, ``transition`` ("l->l2") and the source coalition's ``size``.
    """
    _check_thresholds(hi, lo)
    out: list[dict[str, Any]] = []
    for key in sorted(mass_by_transition, key=lambda k: (layer_sort_key(k[0]), layer_sort_key(k[1]))):
        l1, l2 = key
        for layer in (l1, l2):
            if layer not in labels_by_layer:
                raise ValueError(f"mass is given for transition {l1}->{l2} but no labels for layer {layer}; "
                                 "pass labels_by_layer for both ends of every transition")
        lab1, lab2 = np.asarray(labels_by_layer[l1]), np.asarray(labels_by_layer[l2])
        ids1, ids2 = coalition_ids(lab1), coalition_ids(lab2)
        M = np.asarray(mass_by_transition[key])
        if M.shape != (ids1.size, ids2.size):
            raise ValueError(f"mass for {l1}->{l2} has shape {M.shape} but the partitions have "
                             f"{ids1.size} and {ids2.size} coalitions; recompute it from these labels")
        sizes = dict(zip(*np.unique(lab1[lab1 >= 0], return_counts=True), strict=True))
        for row in track_transition(M, hi, lo, source_ids=ids1, target_ids=ids2):
            out.append({"from_layer": str(l1), "to_layer": str(l2), "transition": f"{l1}->{l2}",
                        "size": int(sizes[row["source"]]), **row})
    return out


def transition_table(results_by_transition: Mapping[Any, Sequence[dict]] | Sequence[dict]) -> list[dict]:
    """Table 3: per transition, the percentage of source coalitions in each event (rows sum to 100).

    Accepts {(l, l2): rows of track_transition} or the flat rows of ``track_layers``.
    """
    if isinstance(results_by_transition, Mapping):
        groups = {f"{k[0]}->{k[1]}" if isinstance(k, tuple) else str(k): list(v)
                  for k, v in results_by_transition.items()}
    else:
        groups = {}
        for row in results_by_transition:
            groups.setdefault(row["transition"], []).append(row)
    if not groups:
        raise ValueError("no transitions to tabulate; track at least two consecutive layers first")
    table = []
    for name, rows in groups.items():
        if not rows:
            raise ValueError(f"transition {name} has no source coalitions")
        events = [r["event"] for r in rows]
        n = len(events)
        row = {"transition": name, "n_source": n,
               "n_matched": sum(1 for r in rows if r["target"] >= 0)}
        for e in EVENTS:
            row[f"{e}_%"] = round(100.0 * events.count(e) / n, 1)
        table.append(row)
    return table
