"""Stability certificate: how often a fresh coalition S ~ D blocks a partition (beyond the paper).

S blocks pi when every member strictly prefers S to its own coalition, u_i(S) > u_i(pi(i))
(paper section 2.1). The paper claims eps-PAC stability but never measures it; we count blocking
coalitions among fresh draws and report a one-sided Clopper-Pearson upper bound at level 1 - delta.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from hedonic_neurons.game.samplers import CoalitionSampler
from hedonic_neurons.game.utility import Game, member_utilities, utilities_in_partition


def certificate_size(epsilon: float, delta: float) -> int:
    """Fresh draws used by default: enough for a Hoeffding bound of epsilon/4 at level delta."""
    return max(2000, math.ceil(math.log(1.0 / delta) / (2.0 * (epsilon / 4.0) ** 2)))


def clopper_pearson_upper(blocked: int, n: int, delta: float) -> float:
    """One-sided upper confidence bound (level 1 - delta) on a binomial rate."""
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
