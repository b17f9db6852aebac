"""Stability certificate: how often a fresh coalition S ~ D blocks a partition (beyond the paper).

S blocks pi when every member strictly prefers S to its own coalition, u_i(S) > u_i(pi(i))
(paper section 2.1). The paper claims eps-PAC stability but never measures it; we count blocking
coalitions among fresh draws and report a one-sided Clopper-Pearson upper bound at level 1 - delta.
"""

from __future__ import annotations

import math

import numpy as np

from hedonic_neurons.game.samplers import CoalitionSampler
from hedonic_neurons.game.utility import Game, member_utilities, utilities_in_partition


def certificate_size(epsilon: float, delta: float) -> int:
    """Fresh draws used by default: enough for a Hoeffding bound of epsilon/4 at level delta."""
    return max(2000, math.ceil(math.log(1.0 / delta) / (2.0 * (epsilon / 4.0) ** 2)))


def clopper_pearson_upper(blocked: int, n: int, delta: float) -> float:
    """One-sided upper confidence bound (level 1 - delta) on a binomial rate."""
    from scipy import stats  # lazily: scipy.stats costs seconds at import

    if n == 0:
        return 1.0
    if blocked >= n:
        return 1.0
    return float(stats.beta.ppf(1.0 - delta, blocked + 1, n - blocked))


def blocking_mask(game: Game, labels: np.ndarray, samples: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:
    """Which sampled coalitions block the partition `labels` (all members strictly better off)."""
    if own is None:
        own = utilities_in_partition(game, labels)
    util, _ = member_utilities(game, samples)
    valid = samples >= 0
    better = util > own[np.where(valid, samples, 0)] + 1e-12
    return np.all(better | ~valid, axis=1)


def stability_certificate(
    game: Game, labels: np.ndarray, sampler: CoalitionSampler, epsilon: float, delta: float,
    rng: np.random.Generator, n_samples: int | None = None,
) -> dict:
    """Empirical blocking rate of `labels` under the sampler's D, with its upper bound at 1 - delta."""
    n_samples = certificate_size(epsilon, delta) if n_samples is None else int(n_samples)
    samples = sampler.sample(n_samples, np.arange(game.n), rng)
    blocked = int(blocking_mask(game, labels, samples).sum())
    upper = clopper_pearson_upper(blocked, n_samples, delta)
    return {
        "distribution": sampler.name, "n_samples": n_samples, "blocked": blocked,
        "rate": blocked / max(n_samples, 1), "upper": upper, "epsilon": epsilon, "delta": delta,
        "certified": bool(upper <= epsilon),
    }


def partition_shape(labels: np.ndarray, max_size: int) -> dict:
    """Share of players in coalitions of size <= max_size, and in 2..max_size; largest; count."""
    labels = np.asarray(labels)
    _, inv = np.unique(labels, return_inverse=True)
    sizes = np.bincount(inv)
    per_player = sizes[inv]
    return {"share_within_max_size": float(np.mean(per_player <= max_size)),
            "share_in_2_to_max": float(np.mean((per_player >= 2) & (per_player <= max_size))),
            "largest": int(sizes.max()) if sizes.size else 0, "n_coalitions": int(sizes.size),
            "max_size": int(max_size)}


def partition_synergy(labels: np.ndarray, phi_eval: np.ndarray, psi_eval: np.ndarray | None = None) -> dict:
    """Pair (and Ratio with the singles psi_eval) of a partition scored on an evaluation valuation.

    Pair(C) = mean of phi_eval over the ordered pairs of C; Ratio(C) = their sum / sum of psi_eval
    over C (paper eq. 8); both averaged over coalitions of size >= 2, Pair with a normal 95 % CI
    half-width over coalitions. Score on a valuation from inputs the partition was not fitted on.
    """
    labels = np.asarray(labels)
    phi_eval = np.asarray(phi_eval, dtype=np.float64)
    if phi_eval.shape != (labels.size, labels.size):
        raise ValueError(f"phi_eval has shape {phi_eval.shape}, expected ({labels.size}, {labels.size}) "
                         "(the same players as the partition)")
    pairs, ratios = [], []
    order = np.argsort(labels, kind="stable")
    for group in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1):
        if group.size < 2:
            continue
        sub = phi_eval[np.ix_(group, group)]
        tot = float(sub.sum() - np.trace(sub))
        pairs.append(tot / (group.size * (group.size - 1)))
        if psi_eval is not None:
            den = float(np.asarray(psi_eval, dtype=np.float64)[group].sum())
            ratios.append(tot / den if den != 0 else np.nan)
    p = np.asarray(pairs)
    return {"pair": float(p.mean()) if p.size else float("nan"),
            "pair_ci95": float(1.96 * p.std(ddof=1) / np.sqrt(p.size)) if p.size > 1 else float("nan"),
            "ratio": float(np.nanmean(ratios)) if ratios and not np.all(np.isnan(ratios)) else float("nan"),
            "n_scored": int(p.size)}
