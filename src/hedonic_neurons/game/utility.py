"""The MFC (multi-friend choice) utility of a top-responsive game, vectorised over many coalitions.

A player's utility in a coalition depends only on its choice set: its <= k best partners whose
valuation exceeds the significance threshold tau (paper section 3.2 and appendix B.1; the utility and
the sampling distribution decide the result: docs/solver.md). Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MFC_UTILITIES = ("sum", "mean")  # top-responsive: the value depends on the choice set only
SEPARABLE_UTILITIES = ("fractional", "additive", "average")  # every member counts: no chaining into giant coalitions
UTILITIES = (*SEPARABLE_UTILITIES, *MFC_UTILITIES)


@dataclass
class Game:
    """A hedonic game given by a pairwise valuation `phi` (n x n, zero diagonal).

    `phi` is the matrix the utilities read: when a per-pair threshold was used, entries that are not
    significant have already been set to 0 (they count as no partner). Partners must exceed `tau`.
    `utility="sum"` is (1/k) x the sum over the <= k best partners above tau (appendix B.1, monotone,
    top-responsive); `"mean"` averages them (Algorithm 1's pseudocode; not monotone).
    `"additive"`: u_i(S) = sum_{j in S, j != i} (phi_ij - tau) (additively separable; tau is the cost of a
    partner). `"fractional"`: the same sum divided by |S| (fractional hedonic preferences).
    """

    phi: np.ndarray
    k: int = 3
    tau: float = 0.0
    utility: str = "sum"

    @property
    def n(self) -> int:
        return int(self.phi.shape[0])


def _tie_order(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Indices sorting the last axis by decreasing value, ties to the smaller player id."""
    return np.lexsort((np.broadcast_to(ids, values.shape), -values), axis=-1)


def member_utilities(
    game: Game, members: np.ndarray, chunk: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """Utility u_i(S) and choice set Ch(i, S) of every member of every coalition (eq. 2-3).

    `members` is (M, s) int with -1 padding. Returns `util` (M, s) float64 (nan at padding) and
    `choice` (M, s, k) player ids (-1 where the choice set holds fewer than k partners).
    """
    members = np.asarray(members)
    if game.utility in SEPARABLE_UTILITIES:
        return _separable_utilities(game, members, chunk)
    M, s = members.shape
    k = game.k
    util = np.full((M, s), np.nan)
    choice = np.full((M, s, k), -1, dtype=np.int64)
    for start in range(0, M, chunk):
        mem = members[start : start + chunk]
        valid = mem >= 0
        safe = np.where(valid, mem, 0)
        sub = game.phi[safe[:, :, None], safe[:, None, :]].astype(np.float64)
        pair_ok = valid[:, :, None] & valid[:, None, :]
        pair_ok &= ~np.eye(s, dtype=bool)[None]
        pair_ok &= sub > game.tau
        vals = np.where(pair_ok, sub, -np.inf)
        order = _tie_order(vals, safe[:, None, :])[:, :, :k]
        top = np.take_along_axis(vals, order, axis=-1)
        ok = np.isfinite(top)
        n_ok = ok.sum(-1)
        total = np.where(ok, top, 0.0).sum(-1)
        if game.utility == "sum":
            u = total / k
        else:
            u = np.where(n_ok > 0, total / np.maximum(n_ok, 1), 0.0)
        util[start : start + chunk] = np.where(valid, u, np.nan)
        ids = np.take_along_axis(np.broadcast_to(safe[:, None, :], vals.shape), order, axis=-1)
        choice[start : start + chunk] = np.where(ok & valid[:, :, None], ids, -1)
    return util, choice


def _separable_utilities(game: Game, members: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """member_utilities for additive / fractional utilities; the choice set is the <= k best partners above tau."""
    M, s = members.shape
    k = game.k
    util = np.full((M, s), np.nan)
    choice = np.full((M, s, k), -1, dtype=np.int64)
    for start in range(0, M, chunk):
        mem = members[start : start + chunk]
        valid = mem >= 0
        safe = np.where(valid, mem, 0)
        sub = game.phi[safe[:, :, None], safe[:, None, :]].astype(np.float64)
        pair_ok = valid[:, :, None] & valid[:, None, :] & ~np.eye(s, dtype=bool)[None]
        total = np.where(pair_ok, sub - game.tau, 0.0).sum(-1)
        if game.utility == "fractional":
            total = total / np.maximum(valid.sum(1, keepdims=True), 1)
        elif game.utility == "average":
            total = total / np.maximum(valid.sum(1, keepdims=True) - 1, 1)
        util[start : start + chunk] = np.where(valid, total, np.nan)
        vals = np.where(pair_ok & (sub > game.tau), sub, -np.inf)
        order = _tie_order(vals, safe[:, None, :])[:, :, :k]
        ok = np.isfinite(np.take_along_axis(vals, order, axis=-1))
        ids = np.take_along_axis(np.broadcast_to(safe[:, None, :], vals.shape), order, axis=-1)
        choice[start : start + chunk, :, : ids.shape[-1]] = np.where(ok & valid[:, :, None], ids, -1)
    return util, choice


def coalition_values(game: Game, members: np.ndarray) -> np.ndarray:
    """Coalition value Phi(S) = mean over members of u_i(S) (appendix B.2), one per row."""
    util, _ = member_utilities(game, members)
    return np.nanmean(util, axis=1)


def utilities_in_partition(game: Game, labels: np.ndarray) -> np.ndarray:
    """u_i(pi(i)) for every player: its utility inside its own coalition (any size)."""
    labels = np.asarray(labels)
    out = np.zeros(game.n)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for group in np.split(order, bounds):
        if group.size < 2:
            continue
        sub = game.phi[np.ix_(group, group)].astype(np.float64)
        if game.utility in SEPARABLE_UTILITIES:
            np.fill_diagonal(sub, game.tau)  # a player is not its own partner: contributes 0
            total = (sub - game.tau).sum(1)
            den = {"fractional": group.size, "average": group.size - 1}.get(game.utility, 1)
            out[group] = total / den
            continue
        np.fill_diagonal(sub, -np.inf)
        sub = np.where(sub > game.tau, sub, -np.inf)
        top = -np.sort(-sub, axis=1)[:, : game.k]
        ok = np.isfinite(top)
        total = np.where(ok, top, 0.0).sum(1)
        if game.utility == "sum":
            out[group] = total / game.k
        else:
            out[group] = np.where(ok.any(1), total / np.maximum(ok.sum(1), 1), 0.0)
    return out


def false_partner_z(n: int, alpha: float) -> float:
    """One-sided z so that a player expects `alpha` noise partners among its n-1 (Bonferroni-style)."""
    from scipy import stats  # lazily: scipy.stats costs seconds at import

    if n < 2:
        return 0.0
    return float(stats.norm.isf(min(0.5, alpha / (n - 1))))


def robust_noise_scale(phi: np.ndarray, max_entries: int = 2_000_000, seed: int = 0) -> tuple[float, float]:
    """Median and MAD-based sd of the off-diagonal entries (most pairs carry no synergy)."""
    n = phi.shape[0]
    rng = np.random.default_rng(seed)
    total = n * (n - 1)
    if total <= max_entries:
        vals = phi[~np.eye(n, dtype=bool)]
    else:
        i = rng.integers(0, n, max_entries)
        j = rng.integers(0, n - 1, max_entries)
        j = j + (j >= i)
        vals = phi[i, j]
    vals = np.asarray(vals, dtype=np.float64)
    med = float(np.median(vals))
    mad = float(np.median(np.abs(vals - med)))
    return med, 1.4826 * mad


def choose_z(zscores: np.ndarray, z_floor: float, cost: float = 10.0, z_max: float = 12.0) -> float:
    """Significance cut on standardised valuations: argmin over z of (1 + cost) E0(z) - O(z).

    O(z) counts entries above z and E0(z) those a standard normal null expects. Each admitted
    entry gains 1 if it is real synergy and costs `cost` if it is noise (a noise partner can merge
    two coalitions, worse than a missed partner that splits one), so the minimiser balances the
    two; with no signal it runs to z_max (no partners). Never below `z_floor`.
    """
    from scipy import stats  # lazily: scipy.stats costs seconds at import

    z = np.sort(np.asarray(zscores, dtype=np.float64).ravel())
    total = z.size
    if total == 0:
        return float(z_floor)
    grid = np.arange(z_floor, z_max + 1e-9, 0.01)
    observed = total - np.searchsorted(z, grid, side="right")
    expected = total * stats.norm.sf(grid)
    return float(grid[np.argmin((1.0 + cost) * expected - observed)])


def sample_offdiag(mats: list[np.ndarray], max_entries: int = 2_000_000, seed: int = 0) -> list[np.ndarray]:
    """The same off-diagonal entries of each matrix (all of them, or a uniform sample)."""
    n = mats[0].shape[0]
    if n * (n - 1) <= max_entries:
        mask = ~np.eye(n, dtype=bool)
        return [np.asarray(m[mask], dtype=np.float64) for m in mats]
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, max_entries)
    j = rng.integers(0, n - 1, max_entries)
    j = j + (j >= i)
    return [np.asarray(m[i, j], dtype=np.float64) for m in mats]


def positive_quantile(phi: np.ndarray, q: float, max_entries: int = 2_000_000, seed: int = 0) -> float:
    """The q-quantile of the positive off-diagonal entries of (phi + phi^T) / 2 (0 if none is positive).

    The default tau of the separable utilities: the rule Leiden's CPM resolution uses in this project
    (there on phi scaled to max 1; a quantile does not depend on the scale).
    """
    vals = _symmetric_offdiag(phi, max_entries, seed)
    pos = vals[vals > 0]
    return float(np.quantile(pos, q)) if pos.size else 0.0


def _symmetric_offdiag(phi: np.ndarray, max_entries: int, seed: int) -> np.ndarray:
    """The off-diagonal entries of (phi + phi^T) / 2 (all, or the same uniform sample for a given seed)."""
    a, b = sample_offdiag([phi, np.asarray(phi).T], max_entries=max_entries, seed=seed)
    return (a + b) / 2


def partner_quantile(phi: np.ndarray, q: float, partners: float, max_entries: int = 2_000_000,
                     seed: int = 0) -> float:
    """`q`, lowered where needed so that the positive pairs above the q-quantile give a player on average
    at least `partners` partners: min(q, 1 - partners / (share of positive pairs x (n - 1))).

    Why: a quantile of the positive phi assumes a player's real partners are a small share of
    the others. In a small game the top (1 - q) of the positive pairs can be fewer than `partners` per
    player, and a strict cut (q97 on 48 players: 0.8 partners each) then falls inside the signal and splits
    real groups. It binds at q97 on most MNIST layers (256 neurons: q95.4-q97), not on 1,536 MiniLM channels.
    """
    n = np.shape(phi)[0]
    if n < 2:
        return q
    vals = _symmetric_offdiag(phi, max_entries, seed)
    share = float(np.mean(vals > 0)) if vals.size else 0.0
    expected = share * (n - 1)  # positive partners of a player, on average
    if expected <= 0:
        return q
    return float(min(q, max(0.0, 1.0 - partners / expected)))
