"""Persist / merge / split / vanish events between the coalitions of consecutive layers (paper 3.4, Table 3).

Given an interaction-mass matrix M (n_coal x n_coal', rows = source coalitions at layer l, columns =
target coalitions at layer l+1), coalitions are aligned by a maximum-weight bipartite matching
(``scipy.optimize.linear_sum_assignment``, maximize=True; a match of zero weight counts as unmatched)
and each source gets alpha (the share of its outgoing mass that goes to its partner) and beta (the
share of the partner's incoming mass that comes from it).

Two measures (docs/tracking.md says why the default changed, DESIGN trap 10):

* ``excess`` (default): every link is read against a null, the mass C would send to a size-matched
  random group of next-layer neurons (closed form from the row and column sums of the total mass
  T = |C||C'| M, ``null_mass``). The matching maximises the size-normalised excess, and alpha / beta
  are chance-corrected shares, (observed - expected) / (most possible - expected), so a layer whose
  dense weights spread every coalition evenly reads 0 instead of 1 / n_coal;
* ``raw``: the paper's rule on M itself, alpha = M(C, C') / sum_D' M(C, D'),
  beta = M(C, C') / sum_D M(D, C').

Events (DESIGN section 3): persist alpha >= hi and beta >= hi; merge alpha >= hi and beta < hi;
split alpha < hi and beta >= hi; vanish otherwise. Under ``excess`` a source that the one-to-one
matching leaves unmatched, or pairs with a target other than the one taking alpha >= hi of its mass,
is read against its best target (so two coalitions feeding one both read merge). ``lo`` is the
smallest share drawn as a link in the views and counted in ``n_links``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from hedonic_neurons.tracking.mass import coalition_ids

__all__ = ["EVENTS", "EVENT_COLORS", "MEASURES", "NULLS", "classify", "null_mass", "link_shares",
           "track_transition", "track_layers", "transition_table", "layer_sort_key", "layer_group"]

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


MEASURES = ("excess", "raw")
NULLS = ("config", "size")


def _check_measure(measure: str, null: str) -> None:
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}; got {measure!r} ('excess' reads the mass against "
                         "size-matched random groups, 'raw' is the paper's absolute share)")
    if null not in NULLS:
        raise ValueError(f"null must be one of {NULLS}; got {null!r}")


def _sizes(sizes, n: int, what: str) -> np.ndarray:
    if sizes is None:
        return np.ones(n)
    sizes = np.asarray(sizes, dtype=np.float64).ravel()
    if sizes.size != n or np.any(sizes <= 0):
        raise ValueError(f"{what} must hold one positive coalition size per {'row' if 'next' not in what else 'column'}"
                         f" of M ({n}); got {sizes.size} values")
    return sizes


def null_mass(T: np.ndarray, sizes_next: np.ndarray | None = None, null: str = "config") -> np.ndarray:
    """Expected total mass N(C, C') of every link under a null, from the row/column sums of T (closed form).

    ``T`` is the total mass |C| |C'| M(C, C'). ``config``: N = T(C, .) T(., C') / T(., .), the bipartite
    configuration-model null (Barber's bipartite modularity): C's outgoing mass spread over the targets
    in proportion to what each target receives in total, i.e. what C would send to a size-matched random
    group of next-layer neurons as receptive as C' on the whole. ``size``: N = T(C, .) |C'| / sum |C'|,
    what C sends to a uniformly random group of |C'| next-layer neurons (mass is linear in the target's
    members, so this mean is exact).
    """
    T = np.asarray(T, dtype=np.float64)
    row = T.sum(axis=1)
    if null == "config":
        total = T.sum()
        return np.outer(row, T.sum(axis=0)) / total if total > 0 else np.zeros_like(T)
    if null == "size":
        sizes_next = _sizes(sizes_next, T.shape[1], "sizes_next")
        return np.outer(row, sizes_next / sizes_next.sum())
    raise ValueError(f"null must be one of {NULLS}; got {null!r}")


def link_shares(
    M: np.ndarray, sizes: np.ndarray | None = None, sizes_next: np.ndarray | None = None, *,
    measure: str = "excess", null: str = "config",
) -> dict[str, np.ndarray]:
    """The matrices every event is read from, for one transition (all (n_source, n_target)).

    ``raw``: ``weight`` = M (matched on), ``alpha`` = M / row sum, ``beta`` = M / column sum (the paper).
    ``excess``: with T = |C||C'| M, N = ``null_mass(T)`` and E = T - N, ``alpha`` = E / (T(C, .) - N)
    and ``beta`` = E / (T(., C') - N), clipped to [0, 1]: the chance-corrected share (observed minus
    expected over the most that could be observed minus expected, as Cohen's kappa) of C's outgoing /
    C''s incoming mass on the link; ``weight`` = max(E, 0) / (|C||C'|) (matched on, size-normalised as
    the paper's M). ``expected`` = N / (|C||C'|) in the units of M (raw: zeros).
    """
    _check_measure(measure, null)
    M = np.asarray(M, dtype=np.float64)
    n_s, n_t = M.shape
    if measure == "raw":
        out_mass, in_mass = M.sum(axis=1), M.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = np.where(out_mass[:, None] > 0, M / out_mass[:, None], 0.0)
            beta = np.where(in_mass[None, :] > 0, M / in_mass[None, :], 0.0)
        return {"weight": M, "alpha": alpha, "beta": beta, "expected": np.zeros_like(M)}
    s1, s2 = _sizes(sizes, n_s, "sizes"), _sizes(sizes_next, n_t, "sizes_next")
    norm = np.outer(s1, s2)
    T = M * norm
    N = null_mass(T, s2, null)
    E = T - N
    with np.errstate(divide="ignore", invalid="ignore"):
        den_a = T.sum(axis=1)[:, None] - N
        den_b = T.sum(axis=0)[None, :] - N
        alpha = np.where((den_a > 0) & (E > 0), E / den_a, 0.0)
        beta = np.where((den_b > 0) & (E > 0), E / den_b, 0.0)
    return {"weight": np.maximum(E, 0.0) / norm, "alpha": np.clip(alpha, 0.0, 1.0),
            "beta": np.clip(beta, 0.0, 1.0), "expected": N / norm}


def track_transition(
    M: np.ndarray, hi: float = 0.7, lo: float = 0.1, *, source_ids: Sequence[int] | None = None,
    target_ids: Sequence[int] | None = None, sizes: Sequence[int] | None = None,
    sizes_next: Sequence[int] | None = None, measure: str = "excess", null: str = "config",
    many_to_one: bool | None = None,
) -> list[dict[str, Any]]:
    """One row per source coalition (row of M): its partner, alpha, beta, event and link count.

    ``M`` is the size-normalised interaction mass (paper 3.4); ``sizes`` / ``sizes_next`` the coalition
    sizes of its rows / columns (default 1: M is then taken as total mass). ``measure="excess"``
    (default) reads every link against the ``null`` (see ``link_shares``; docs/tracking.md says why);
    ``measure="raw"`` is the paper's rule on M itself. Sources are matched one-to-one by maximum
    ``weight`` (a zero-weight match counts as none). ``many_to_one`` (default: True for excess, False
    for raw): a source left unmatched, or whose best target (largest alpha) is not its match and
    takes alpha >= hi of its mass, is read against that best target, so two coalitions feeding one
    both read *merge* (the one-to-one matching can give the target to only one of them); with False
    an unmatched source always vanishes (the paper's one-to-one reading).
    ``source_ids`` / ``target_ids`` name the rows / columns (coalition ids; default 0..n-1). ``target``
    is the partner the event refers to (-1 if none); ``matched`` says whether the matching chose it.
    """
    _check_thresholds(hi, lo)
    _check_measure(measure, null)
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
    if many_to_one is None:
        many_to_one = measure == "excess"
    L = link_shares(M, sizes, sizes_next, measure=measure, null=null)
    W, A, B = L["weight"], L["alpha"], L["beta"]
    out_mass = M.sum(axis=1)
    in_mass = M.sum(axis=0)
    rows_idx, cols_idx = linear_sum_assignment(W, maximize=True)
    match = np.full(n_s, -1, dtype=np.int64)
    hit = W[rows_idx, cols_idx] > 0            # zero-weight matches count as unmatched
    match[rows_idx[hit]] = cols_idx[hit]
    best = A.argmax(axis=1) if measure == "excess" else M.argmax(axis=1)
    has_best = A[np.arange(n_s), best] > 0 if measure == "excess" else out_mass > 0
    rows: list[dict[str, Any]] = []
    for c in range(n_s):
        t = int(match[c])
        matched = t >= 0
        b = int(best[c])
        # many-to-one: a source whose excess goes mostly (alpha >= hi) to a target the one-to-one
        # matching gave to another source, or that was left unmatched, is read against that best target
        if many_to_one and has_best[c] and (not matched or (b != t and A[c, b] >= hi)):
            t, matched = b, False
        alpha = float(A[c, t]) if t >= 0 else 0.0
        beta = float(B[c, t]) if t >= 0 else 0.0
        event = classify(alpha, beta, hi, matched=t >= 0)
        rows.append({
            "source": int(source_ids[c]),
            "target": int(target_ids[t]) if t >= 0 else -1,
            "matched": bool(matched),
            "mass": float(M[c, t]) if t >= 0 else 0.0,
            "expected": float(L["expected"][c, t]) if t >= 0 else 0.0,
            "out_mass": float(out_mass[c]),
            "in_mass": float(in_mass[t]) if t >= 0 else 0.0,
            "alpha": alpha,
            "beta": beta,
            "event": event,
            "best_target": int(target_ids[best[c]]) if has_best[c] else -1,
            "n_links": int(np.sum(A[c] >= lo)),
        })
    return rows


def layer_sort_key(layer: Any) -> tuple:
    """Natural order of layer names ("2" < "10", "h2" < "h10")."""
    import re

    s = str(layer)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.findall(r"\d+|\D+", s))


def layer_group(name: Any) -> str:
    """The network part of a layer name: "seed0" for "seed0_h2", "" for "7" or "h2"."""
    import re

    m = re.match(r"^(.*?)_?([A-Za-z]*\d+)$", str(name))
    return m.group(1) if m else str(name)


def track_layers(
    labels_by_layer: Mapping[Any, np.ndarray], mass_by_transition: Mapping[tuple, np.ndarray],
    hi: float = 0.7, lo: float = 0.1, *, measure: str = "excess", null: str = "config",
    many_to_one: bool | None = None,
) -> list[dict[str, Any]]:
    """Track every transition given per-layer labels and the mass matrix of each (l, l2) pair.

    ``measure``, ``null`` and ``many_to_one`` as in ``track_transition`` (coalition sizes come from
    the labels).

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
        _, n1 = np.unique(lab1[lab1 >= 0], return_counts=True)
        _, n2 = np.unique(lab2[lab2 >= 0], return_counts=True)
        sizes = dict(zip(ids1.tolist(), n1.tolist(), strict=True))
        for row in track_transition(M, hi, lo, source_ids=ids1, target_ids=ids2, sizes=n1, sizes_next=n2,
                                    measure=measure, null=null, many_to_one=many_to_one):
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
               "n_matched": sum(1 for r in rows if r.get("matched", r["target"] >= 0) in (True, "True"))}
        for e in EVENTS:
            row[f"{e}_%"] = round(100.0 * events.count(e) / n, 1)
        table.append(row)
    return table
