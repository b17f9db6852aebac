"""Persist / merge / split / vanish events between the coalitions of consecutive layers (paper 3.4, Table 3).

Given the interaction mass of a transition, coalitions are aligned by a maximum-weight bipartite
matching (``scipy.optimize.linear_sum_assignment``, maximize=True; a match of zero weight counts as
unmatched) and each source gets alpha (the share of its mass that goes to its partner) and beta (the
share of the partner's mass that comes from it). Three measures (docs/tracking.md says why):

* ``relative`` (default): every link read against size-matched random groups of players and against
  what an identical coalition would carry (``relative_shares``): alpha = the link's excess over a
  random group of the target's size, out of the excess of the best group of the source's size (at a
  residual site: the identical coalition); beta likewise from the target's side. A share counts only
  when the link's z over random groups reaches ``z_min``; a merge or split also needs its weaker share
  to reach ``floor``. Needs the player-level mass of ``mass.residual_transition`` /
  ``mass.mlp_transition``. An event must also be beyond chance: random redraws of the next layer's
  partition (sizes kept) must rarely give the source as strong a link of its kind (``chance_draws``;
  ``chance_gate=False`` keeps the link rule alone);
* ``excess``: chance-corrected shares of a coalition's whole row / column of mass against the
  configuration (or size) null, ``null_mass``; reads an M matrix alone;
* ``raw``: the paper's rule on M itself, alpha = M(C, C') / sum_D' M(C, D'),
  beta = M(C, C') / sum_D M(D, C').

Events: persist alpha >= hi and beta >= hi; merge alpha >= hi and beta >= floor; split beta >= hi and
alpha >= floor; vanish otherwise (floor 0 is the paper's rule). Except under ``raw`` a source that the
one-to-one matching leaves unmatched, or pairs with a target other than the one taking alpha >= hi of
its mass, is read against its best target (so two coalitions feeding one both read merge). ``lo`` is
the smallest share drawn as a link in the views and counted in ``n_links``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from hedonic_neurons.tracking.mass import _aggregate, coalition_ids, coalition_sizes

__all__ = ["EVENTS", "EVENT_COLORS", "MEASURES", "NULLS", "Z_MIN", "P_MAX", "FLOOR", "CHANCE_DRAWS", "CHANCE_P",
           "CHANCE_GATE", "RULE_VERSION",
           "bonferroni_z", "classify",
           "null_mass",
           "relative_shares", "link_shares", "mass_matrix",
           "track_transition", "track_layers", "transition_table", "layer_sort_key", "layer_group"]

EVENTS = ("persist", "merge", "split", "vanish")
# Figure 2 of the paper: green persist, orange split, grey vanish; merge in blue.
EVENT_COLORS = {"persist": "#2ca02c", "merge": "#1f77b4", "split": "#ff7f0e", "vanish": "#9a9a9a"}


def _check_thresholds(hi: float, lo: float) -> None:
    if not (0.0 < lo <= hi <= 1.0):
        raise ValueError(f"thresholds must satisfy 0 < lo <= hi <= 1; got hi={hi}, lo={lo} "
                         "(the defaults are hi=0.7, lo=0.1)")


def classify(alpha: float, beta: float, hi: float = 0.7, matched: bool = True, floor: float = 0.0) -> str:
    """The event of one source coalition from its alpha and beta (paper 3.4): persist both >= hi, merge
    alpha >= hi, split beta >= hi, else vanish. ``floor``: the weaker share of a merge or split must
    reach it too (0: the paper's rule)."""
    if not matched:
        return "vanish"
    if alpha >= hi and beta >= hi:
        return "persist"
    if alpha >= hi and beta >= floor:
        return "merge"
    if beta >= hi and alpha >= floor:
        return "split"
    return "vanish"


MEASURES = ("relative", "excess", "raw")
# under ``relative``: a share counts only when its link carries more than a size-matched random group by
# Z_MIN standard deviations (None: the one-sided Bonferroni bound for P_MAX over a source's links for
# alpha, a target's for beta), and the weaker share of a merge or split must reach FLOOR (docs/tracking.md)
P_MAX = 0.05
Z_MIN = 2.0
FLOOR = 0.4
# the chance gate: redraws of the next layer's partition, and the p an event must reach against them
CHANCE_DRAWS = 49
CHANCE_P = 0.05
# the event rule's version: the experiments put it in their tracking stage's fingerprint, so a run
# directory tracked under an older rule is re-tracked when it is resumed
RULE_VERSION = 1
# an event must also be beyond chance (docs/tracking.md: without it a random partition of the next layer
# or a shuffled Jacobian reads persist / merge / split for 5-20 % of pairs)
CHANCE_GATE = True


def bonferroni_z(n_links: int, p_max: float = P_MAX) -> float:
    """The z a link must reach for family-wise level ``p_max`` over ``n_links`` links (one-sided, normal)."""
    from scipy.stats import norm

    return float(norm.isf(p_max / max(int(n_links), 1)))
NULLS = ("config", "size")


def _check_measure(measure: str, null: str) -> None:
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}; got {measure!r} ('relative' reads a link against "
                         "size-matched random groups and what an identical coalition would carry, 'excess' "
                         "against random groups only, 'raw' is the paper's absolute share)")
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


def _top_k_sums(X: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    """Per row (axis=1) or column (axis=0) of X: the sum of its k largest entries, k one value per row/column."""
    n = X.shape[axis]
    k = np.clip(np.asarray(k, dtype=np.int64), 1, n)
    kmax = int(k.max()) if k.size else 1
    if kmax < n:  # coalitions are small next to a layer: select the top kmax in linear time, sort only those
        X = -np.partition(-X, kmax - 1, axis=axis).take(np.arange(kmax), axis=axis)
    srt = -np.sort(-X, axis=axis)
    cs = np.cumsum(srt, axis=axis)
    return cs[np.arange(X.shape[0]), k - 1] if axis == 1 else cs[k - 1, np.arange(X.shape[1])]


def _source_side(F: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """alpha's chance and ceiling, which depend on the source's forward mass and the coalition sizes only
    (so random redraws of the next partition, which keep its sizes, reuse them): E_rand, the best |C|
    players' excess, and the random groups' sd."""
    n2 = F.shape[1]
    mF, sdF = F.mean(axis=1), F.std(axis=1)
    e_a = np.outer(mF, s2)                                          # random |C'| target players
    ceil_a = _top_k_sums(F, s1, axis=1) - s1 * mF                  # best |C| target players
    sd_a = sdF[:, None] * np.sqrt(np.clip(s2 * (n2 - s2), 0, None) / max(n2 - 1, 1))[None, :]
    return e_a, ceil_a, sd_a


def relative_shares(
    M: np.ndarray, sizes: np.ndarray, sizes_next: np.ndarray, forward: np.ndarray, backward: np.ndarray, *,
    backward_exact: bool = True, source_side: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every link read against size-matched random groups and against what an identical coalition carries.

    With T = |C||C'| M the total mass of each link, F = ``forward`` (n_coal, n': what C sends to each
    next-layer player) and B = ``backward`` (n, n_coal': what C' receives from each source player):

    * alpha = (T - E_rand) / (top_|C|(F[C]) - |C| mean F[C]): C's mass on C' beyond what a random group
      of |C'| next-layer players gets (E_rand = |C'| mean F[C], exact since mass is additive over
      target players), over the same excess for the best group of |C| players, i.e. what the link would
      carry were C' the players C writes to most (at a residual site: C itself, the identical
      coalition). 1 when C' takes all C can give to a group of its own size, 0 at chance;
    * beta: the same from C''s side, against random source groups of |C| players and the best |C'|
      source players (B rescaled to the coalitions' own totals when ``backward_exact`` is False);
    * z_alpha, z_beta: the excess in standard deviations of the mass a random group of that size would
      carry (drawn without replacement: var = k sd^2 (n - k) / (n - 1)), the significance of the link.

    ``weight`` = alpha * beta (matched on), ``expected`` = E_rand in the units of M. ``source_side``: the
    result of ``_source_side`` for these F and sizes, when already computed.
    """
    M = np.asarray(M, dtype=np.float64)
    s1 = np.asarray(sizes, dtype=np.float64)
    s2 = np.asarray(sizes_next, dtype=np.float64)
    F = np.asarray(forward, dtype=np.float64)
    B = np.asarray(backward, dtype=np.float64)
    n_s, n_t = M.shape
    if F.shape[0] != n_s or B.shape[1] != n_t:
        raise ValueError(f"forward must be (n_source={n_s}, n_next_players) and backward (n_players, "
                         f"n_target={n_t}); got {F.shape} and {B.shape}")
    T = M * np.outer(s1, s2)
    if not backward_exact:  # single-player writes over-count a coalition's (|sum| <= sum |.|): rescale
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(B.sum(axis=0) > 0, T.sum(axis=0) / B.sum(axis=0), 0.0)
        B = B * scale[None, :]
    n1 = B.shape[0]
    e_a, ceil_a, sd_a = _source_side(F, s1, s2) if source_side is None else source_side
    mB, sdB = B.mean(axis=0), B.std(axis=0)
    e_b = np.outer(s1, mB)                                          # random |C| source players
    ceil_b = _top_k_sums(B, s2, axis=0) - s2 * mB                  # best |C'| source players
    sd_b = np.sqrt(np.clip(s1 * (n1 - s1), 0, None) / max(n1 - 1, 1))[:, None] * sdB[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(ceil_a[:, None] > 0, (T - e_a) / ceil_a[:, None], 0.0)
        beta = np.where(ceil_b[None, :] > 0, (T - e_b) / ceil_b[None, :], 0.0)
        z_a = np.where(sd_a > 0, (T - e_a) / sd_a, np.where(T > e_a, np.inf, 0.0))
        z_b = np.where(sd_b > 0, (T - e_b) / sd_b, np.where(T > e_b, np.inf, 0.0))
    alpha, beta = np.clip(alpha, 0.0, 1.0), np.clip(beta, 0.0, 1.0)
    norm = np.outer(s1, s2)
    return {"weight": alpha * beta, "alpha": alpha, "beta": beta, "z_alpha": z_a, "z_beta": z_b,
            "expected": e_a / norm}


def link_shares(
    M: np.ndarray, sizes: np.ndarray | None = None, sizes_next: np.ndarray | None = None, *,
    measure: str = "relative", null: str = "config", forward: np.ndarray | None = None,
    backward: np.ndarray | None = None, backward_exact: bool = True,
) -> dict[str, np.ndarray]:
    """The matrices every event is read from, for one transition (all (n_source, n_target)).

    ``relative`` (default): ``relative_shares`` (needs ``forward`` and ``backward``, the player-level
    mass of ``mass.residual_transition`` / ``mass.mlp_transition``).
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
    if measure == "relative":
        if forward is None or backward is None:
            raise ValueError("measure='relative' needs the player-level mass (forward, backward) of the "
                             "transition; compute it with mass.residual_transition or mass.mlp_transition "
                             "(with W_down and the activations), or use measure='excess'")
        return relative_shares(M, _sizes(sizes, n_s, "sizes"), _sizes(sizes_next, n_t, "sizes_next"),
                               forward, backward, backward_exact=backward_exact)
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


def _decide(M: np.ndarray, A: np.ndarray, B: np.ndarray, W: np.ndarray, hi: float, floor: float,
            many_to_one: bool, measure: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Partner (-1: none), whether the matching chose it, and the event of every source (rows of M)."""
    n_s = M.shape[0]
    rows_idx, cols_idx = linear_sum_assignment(W, maximize=True)
    match = np.full(n_s, -1, dtype=np.int64)
    hit = W[rows_idx, cols_idx] > 0            # zero-weight matches count as unmatched
    match[rows_idx[hit]] = cols_idx[hit]
    best = A.argmax(axis=1) if measure != "raw" else M.argmax(axis=1)
    has_best = A[np.arange(n_s), best] > 0 if measure != "raw" else M.sum(axis=1) > 0
    # many-to-one: a source whose share goes mostly (alpha >= hi) to a target the one-to-one matching
    # gave to another source, or that was left unmatched, is read against that best target
    swap = many_to_one & has_best & ((match < 0) | ((best != match) & (A[np.arange(n_s), best] >= hi)))
    partner = np.where(swap, best, match)
    matched = (match >= 0) & ~swap
    events = []
    for c in range(n_s):
        t = int(partner[c])
        events.append(classify(float(A[c, t]), float(B[c, t]), hi, floor=floor) if t >= 0 else "vanish")
    return partner, matched, events


def _partner_scores(W: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """alpha x beta of each source's partner (0 without one): the link strength the chance test compares."""
    return np.where(partner >= 0, W[np.arange(W.shape[0]), np.maximum(partner, 0)], 0.0)


def _chance_hits(events: list[str], scores: np.ndarray, forward: np.ndarray, backward_players: np.ndarray,
                 labels_next: np.ndarray, sizes: np.ndarray, hi: float, floor: float, z_min: tuple[float, float],
                 many_to_one: bool, backward_exact: bool, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Per source: in how many of ``draws`` random redraws of the next layer's partition (labels permuted)
    it gets an event of the class of its observed one (persist: persist; merge / split: any but vanish)
    with a link at least as strong (alpha x beta of its partner >= the observed ``scores``)."""
    F = np.asarray(forward, dtype=np.float64)
    S = np.asarray(backward_players, dtype=np.float64)
    s1 = np.asarray(sizes, dtype=np.float64)
    s2 = coalition_sizes(labels_next).astype(np.float64)
    want_persist = np.array([e == "persist" for e in events])
    hits = np.zeros(len(events))
    if not np.any(np.array(events) != "vanish"):  # nothing to test against chance
        return hits
    fixed = _source_side(F, s1, s2)
    Ft, St = np.ascontiguousarray(F.T), np.ascontiguousarray(S.T)   # aggregated under every redraw
    for _ in range(draws):
        lab = labels_next[rng.permutation(labels_next.size)]
        T = _aggregate(F, lab, At=Ft)
        M = T / np.outer(s1, s2)
        L = relative_shares(M, s1, s2, F, _aggregate(S, lab, At=St), backward_exact=backward_exact, source_side=fixed)
        A = np.where(L["z_alpha"] >= z_min[0], L["alpha"], 0.0)
        B = np.where(L["z_beta"] >= z_min[1], L["beta"], 0.0)
        W = A * B
        partner, _, ev = _decide(M, A, B, W, hi, floor, many_to_one, "relative")
        ev = np.array(ev)
        same_class = np.where(want_persist, ev == "persist", ev != "vanish")
        hits += same_class & (_partner_scores(W, partner) >= scores - 1e-12)
    return hits


def track_transition(
    M: np.ndarray, hi: float = 0.7, lo: float = 0.1, *, source_ids: Sequence[int] | None = None,
    target_ids: Sequence[int] | None = None, sizes: Sequence[int] | None = None,
    sizes_next: Sequence[int] | None = None, measure: str = "relative", null: str = "config",
    many_to_one: bool | None = None, forward: np.ndarray | None = None, backward: np.ndarray | None = None,
    backward_exact: bool = True, z_min: float | None = Z_MIN, floor: float | None = None,
    labels_next: np.ndarray | None = None, backward_players: np.ndarray | None = None,
    chance_draws: int = CHANCE_DRAWS, chance_p: float = CHANCE_P, chance_gate: bool = CHANCE_GATE,
    random_state: Any = 0,
) -> list[dict[str, Any]]:
    """One row per source coalition (row of M): its partner, alpha, beta, event and link count.

    ``M`` is the size-normalised interaction mass (paper 3.4); ``sizes`` / ``sizes_next`` the coalition sizes of its
    rows / columns (default 1: M is then taken as total mass). ``measure="relative"`` (default) reads every link
    against size-matched random groups and against what an identical coalition would carry (``relative_shares``;
    needs ``forward`` / ``backward``); a share counts only when its link is significant (z >= ``z_min``, default 2;
    None: ``bonferroni_z`` at family-wise level 0.05 over the links of one source for alpha, of one target for
    beta), and the weaker share of a merge or split must reach ``floor`` (default: 0.4 under ``relative``, 0
    otherwise; docs/tracking.md gives the measurements behind both). ``measure="excess"`` reads against random
    groups only, ``measure="raw"`` is the paper's rule on M itself. Sources are matched one-to-one by maximum
    ``weight`` (a zero-weight match counts as none). ``many_to_one`` (default: True except for raw): a source left
    unmatched, or whose best target (largest alpha) is not its match and takes alpha >= hi of its mass, is read
    against that best target, so two coalitions feeding one both read *merge* (the one-to-one matching can give the
    target to only one of them); with False an unmatched source always vanishes (the paper's reading).
    ``source_ids`` / ``target_ids`` name the rows / columns (coalition ids; default 0..n-1). ``target`` is the
    partner the event refers to (-1 if none); ``matched`` says whether the matching chose it.

    Chance gate (``relative`` with ``labels_next`` and ``backward_players`` given, ``chance_draws`` > 0):
    the next layer's partition is redrawn ``chance_draws`` times at random (its labels permuted, sizes
    kept) and every source tracked again; a redraw is a hit when it gives the source an event of its
    class (persist; or any of persist / merge / split) through a link at least as strong (alpha x beta of
    the partner); the event is *beyond chance* when p = (1 + hits) / (draws + 1) <= ``chance_p``
    (``p_chance``, ``beyond_chance`` in the row). With ``chance_gate`` (default) an event that is not
    beyond chance reads vanish (``event_link`` keeps the event of the link rule alone).
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
        many_to_one = measure != "raw"
    if floor is None:
        floor = FLOOR if measure == "relative" else 0.0
    L = link_shares(M, sizes, sizes_next, measure=measure, null=null, forward=forward, backward=backward,
                    backward_exact=backward_exact)
    A, B = L["alpha"], L["beta"]
    if measure == "relative":  # a share counts only where the link beats random groups significantly
        za, zb = (bonferroni_z(n_t), bonferroni_z(n_s)) if z_min is None else (z_min, z_min)
        A = np.where(L["z_alpha"] >= za, A, 0.0)
        B = np.where(L["z_beta"] >= zb, B, 0.0)
        W = A * B
    else:
        W = L["weight"]
    out_mass = M.sum(axis=1)
    in_mass = M.sum(axis=0)
    partner, matched_to, events = _decide(M, A, B, W, hi, floor, many_to_one, measure)
    p_chance = None
    gate = (measure == "relative" and chance_draws > 0 and labels_next is not None
            and backward_players is not None and forward is not None)
    if gate:
        hits = _chance_hits(events, _partner_scores(W, partner), forward, backward_players, np.asarray(labels_next),
                            _sizes(sizes, n_s, "sizes"), hi, floor, (za, zb), many_to_one, backward_exact,
                            chance_draws, np.random.default_rng(random_state))
        p_chance = (1.0 + hits) / (chance_draws + 1.0)
    best = A.argmax(axis=1) if measure != "raw" else M.argmax(axis=1)
    has_best = A[np.arange(n_s), best] > 0 if measure != "raw" else out_mass > 0
    rows: list[dict[str, Any]] = []
    for c in range(n_s):
        t = int(partner[c])
        matched = bool(matched_to[c])
        alpha = float(A[c, t]) if t >= 0 else 0.0
        beta = float(B[c, t]) if t >= 0 else 0.0
        event = events[c]
        event_link = event
        beyond = p_chance is not None and event != "vanish" and p_chance[c] <= chance_p
        if chance_gate and p_chance is not None and not beyond:
            event = "vanish"
        row = {
            "source": int(source_ids[c]),
            "target": int(target_ids[t]) if t >= 0 else -1,
            "matched": bool(matched),
            "mass": float(M[c, t]) if t >= 0 else 0.0,
            "expected": float(L["expected"][c, t]) if t >= 0 else 0.0,
            "out_mass": float(out_mass[c]),
            "in_mass": float(in_mass[t]) if t >= 0 else 0.0,
            "alpha": alpha,
            "beta": beta,
            "z_alpha": float(L["z_alpha"][c, t]) if t >= 0 and "z_alpha" in L else "",
            "z_beta": float(L["z_beta"][c, t]) if t >= 0 and "z_beta" in L else "",
            "event": event,
            "event_link": event_link,
            "p_chance": float(p_chance[c]) if p_chance is not None else "",
            "beyond_chance": bool(beyond) if p_chance is not None else "",
            "best_target": int(target_ids[best[c]]) if has_best[c] else -1,
            "n_links": int(np.sum(A[c] >= lo)),
        }
        rows.append(row)
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


def _parts(value: Any) -> dict[str, Any]:
    """A transition's mass: an (n_coal, n_coal') matrix M, or the dict of ``mass.residual_transition`` /
    ``mass.mlp_transition`` (M with its player-level forward / backward mass)."""
    if isinstance(value, Mapping):
        out = {"M": np.asarray(value["M"]), "forward": value.get("forward"), "backward": value.get("backward"),
               "backward_players": value.get("backward_players")}
        if "backward_exact" in value:
            out["backward_exact"] = bool(np.asarray(value["backward_exact"]))
        return out
    return {"M": np.asarray(value)}


def mass_matrix(value: Any) -> np.ndarray:
    """M of a transition given as a matrix or as a ``*_transition`` dict."""
    return _parts(value)["M"]


def track_layers(
    labels_by_layer: Mapping[Any, np.ndarray], mass_by_transition: Mapping[tuple, Any],
    hi: float = 0.7, lo: float = 0.1, *, measure: str = "relative", null: str = "config",
    many_to_one: bool | None = None, z_min: float | None = Z_MIN, floor: float | None = None,
    chance_draws: int = CHANCE_DRAWS, chance_p: float = CHANCE_P, chance_gate: bool = CHANCE_GATE,
    random_state: int = 0,
) -> list[dict[str, Any]]:
    """Track every transition given per-layer labels and the mass of each (l, l2) pair.

    A mass is an (n_coal, n_coal') matrix M, or the dict of ``mass.residual_transition`` /
    ``mass.mlp_transition`` (M and its player-level mass, which ``measure="relative"`` needs).
    ``measure``, ``null``, ``many_to_one``, ``z_min``, ``floor``, ``chance_*`` as
    in ``track_transition`` (coalition sizes come from the labels; the chance gate's draws are seeded by
    ``random_state`` and the target layer's name).

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
        parts = _parts(mass_by_transition[key])
        M = parts.pop("M")
        if M.shape != (ids1.size, ids2.size):
            raise ValueError(f"mass for {l1}->{l2} has shape {M.shape} but the partitions have "
                             f"{ids1.size} and {ids2.size} coalitions; recompute it from these labels")
        _, n1 = np.unique(lab1[lab1 >= 0], return_counts=True)
        _, n2 = np.unique(lab2[lab2 >= 0], return_counts=True)
        sizes = dict(zip(ids1.tolist(), n1.tolist(), strict=True))
        for row in track_transition(M, hi, lo, source_ids=ids1, target_ids=ids2, sizes=n1, sizes_next=n2,
                                    measure=measure, null=null, many_to_one=many_to_one, z_min=z_min,
                                    floor=floor, labels_next=lab2, chance_draws=chance_draws, chance_p=chance_p,
                                    chance_gate=chance_gate,
                                    random_state=[random_state, zlib.crc32(str(l2).encode())], **parts):
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
