"""Coalition samplers: the distribution D over coalitions that PAC-Top-Cover learns from.

Each sampler is a proper distribution over coalitions of the players still in play (`remaining`)
with sizes in [min_size, max_size]; `sample` can be called at any time to draw fresh coalitions
(the stability certificate does). Coalitions come as an (M, max_size) int64 array, -1 padded.
Pure numpy. Register new samplers with `register_sampler`.
"""

from __future__ import annotations

import numpy as np

from hedonic_neurons.game.utility import Game, coalition_values

_SMALL_R = 256  # below this many players, draw members by sorting random keys (no rejection)


class CoalitionSampler:
    """Base class: override `_draw(n_samples, remaining, rng, seeds)`."""

    name = "base"

    def __init__(self, min_size: int = 2, max_size: int = 10):
        if not 1 <= min_size <= max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
        self.min_size = int(min_size)
        self.max_size = int(max_size)
        self.game: Game | None = None

    def bind(self, game: Game) -> CoalitionSampler:
        """Attach the game (samplers that look at phi precompute here)."""
        self.game = game
        return self

    def _sizes(self, n_samples: int, n_remaining: int, rng: np.random.Generator) -> np.ndarray:
        hi = min(self.max_size, n_remaining)
        lo = min(self.min_size, hi)
        return rng.integers(lo, hi + 1, size=n_samples)

    def sample(
        self, n_samples: int, remaining: np.ndarray, rng: np.random.Generator, seeds: np.ndarray | None = None
    ) -> np.ndarray:
        """Draw `n_samples` coalitions inside `remaining` (sorted player ids); with `seeds`, sample t
        contains seeds[t] (used to top up players that no sample covers)."""
        remaining = np.asarray(remaining, dtype=np.int64)
        if remaining.size == 0 or n_samples == 0:
            return np.full((0, self.max_size), -1, dtype=np.int64)
        return self._draw(int(n_samples), remaining, rng, seeds)

    def _draw(self, n_samples, remaining, rng, seeds):  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "min_size": self.min_size, "max_size": self.max_size}


def _uniform_members(
    sizes: np.ndarray, remaining: np.ndarray, max_size: int, rng: np.random.Generator,
    seeds: np.ndarray | None = None,
) -> np.ndarray:
    """Uniform subsets of `remaining` of the given sizes (containing seeds[t] when given)."""
    M, r = sizes.size, remaining.size
    out = np.full((M, max_size), -1, dtype=np.int64)
    if r <= _SMALL_R:
        keys = rng.random((M, r))
        if seeds is not None:
            pos = np.searchsorted(remaining, seeds)
            keys[np.arange(M), pos] = -1.0  # the seed sorts first
        picks = remaining[np.argsort(keys, axis=1)[:, :max_size]]
        if picks.shape[1] < max_size:  # fewer players left than slots
            picks = np.pad(picks, ((0, 0), (0, max_size - picks.shape[1])), constant_values=-1)
    else:
        picks = remaining[rng.integers(0, r, size=(M, max_size))]
        if seeds is not None:
            picks[:, 0] = seeds
        while True:
            srt = np.sort(picks, axis=1)
            dup_rows = np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))
            if dup_rows.size == 0:
                break
            fresh = remaining[rng.integers(0, r, size=(dup_rows.size, max_size))]
            if seeds is not None:
                fresh[:, 0] = seeds[dup_rows]
            picks[dup_rows] = fresh
    slot = np.arange(max_size)[None, :]
    out[:] = np.where(slot < sizes[:, None], picks, -1)
    return out


class UniformSampler(CoalitionSampler):
    """The paper's D: size uniform in [min_size, max_size], members uniform (section 3.3)."""

    name = "uniform"

    def _draw(self, n_samples, remaining, rng, seeds):
        sizes = self._sizes(n_samples, remaining.size, rng)
        return _uniform_members(sizes, remaining, self.max_size, rng, seeds)


class WeightedSampler(CoalitionSampler):
    """Reservoir proportional to Phi(S) (appendix B.2): uniform proposals resampled by value.

    Draws `oversample` x n uniform coalitions and keeps n of them without replacement with
    probability proportional to max(Phi(S), 0) + floor (Efraimidis-Spirakis keys), so the induced
    distribution is the uniform D tilted by coalition value.
    """

    name = "weighted"

    def __init__(self, min_size: int = 2, max_size: int = 10, oversample: int = 4, floor: float = 1e-6):
        super().__init__(min_size, max_size)
        self.oversample = int(oversample)
        self.floor = float(floor)

    def _draw(self, n_samples, remaining, rng, seeds):
        if self.game is None:
            raise RuntimeError("WeightedSampler needs bind(game) before sampling")
        pool_n = n_samples * self.oversample
        pool_seeds = None if seeds is None else np.repeat(seeds, self.oversample)
        sizes = self._sizes(pool_n, remaining.size, rng)
        pool = _uniform_members(sizes, remaining, self.max_size, rng, pool_seeds)
        w = np.maximum(coalition_values(self.game, pool), 0.0) + self.floor
        keys = np.log(rng.random(pool_n)) / w
        if seeds is None:
            keep = np.argpartition(-keys, n_samples - 1)[:n_samples]
            return pool[np.sort(keep)]
        # one survivor per seed among its own `oversample` proposals
        best = keys.reshape(n_samples, self.oversample).argmax(axis=1)
        return pool[np.arange(n_samples) * self.oversample + best]

    def describe(self) -> dict:
        return {**super().describe(), "oversample": self.oversample}


class PartnerSampler(CoalitionSampler):
    """Seeded proposal: a seed player plus members drawn from its highest-phi partners.

    Seeds cycle through the remaining players in random order. With probability `p_greedy` the
    coalition is the seed plus its best (size-1) remaining partners above tau; otherwise partners are
    drawn from its `n_candidates` best without replacement with weight 1/(rank+1), and each slot is
    replaced by a uniform player with probability `p_explore`. Slots left empty (too few partners
    above tau) are filled uniformly. This is a proper distribution that puts mass on the coalitions
    a top-responsive player actually wants, which the paper's uniform D almost never draws once n is in
    the thousands.
    """

    name = "partners"

    def __init__(self, min_size: int = 2, max_size: int = 10, n_candidates: int = 40,
                 p_greedy: float = 0.5, p_explore: float = 0.1):
        super().__init__(min_size, max_size)
        self.n_candidates = int(n_candidates)
        self.p_greedy = float(p_greedy)
        self.p_explore = float(p_explore)
        self.candidates_: np.ndarray | None = None

    def bind(self, game: Game, chunk: int = 1024) -> PartnerSampler:
        super().bind(game)
        n, L = game.n, min(self.n_candidates, max(game.n - 1, 1))
        cand = np.full((n, L), -1, dtype=np.int64)
        for start in range(0, n, chunk):
            rows = np.array(game.phi[start : start + chunk], dtype=np.float64)  # a copy: phi stays intact
            rows[np.arange(rows.shape[0]), np.arange(start, start + rows.shape[0])] = -np.inf
            part = np.argpartition(-rows, L - 1, axis=1)[:, :L] if L < n else np.argsort(-rows, axis=1)[:, :L]
            vals = np.take_along_axis(rows, part, axis=1)
            # stable order by value then index, so ties go to the smaller index
            order = np.lexsort((part, -vals), axis=1)
            part = np.take_along_axis(part, order, axis=1)
            vals = np.take_along_axis(vals, order, axis=1)
            cand[start : start + chunk] = np.where(vals > game.tau, part, -1)
        self.candidates_ = cand
        return self

    def _draw(self, n_samples, remaining, rng, seeds):
        if self.candidates_ is None:
            raise RuntimeError("PartnerSampler needs bind(game) before sampling")
        n = self.candidates_.shape[0]
        in_r = np.zeros(n, dtype=bool)
        in_r[remaining] = True
        if seeds is None:
            reps = -(-n_samples // remaining.size)
            seeds = np.concatenate([rng.permutation(remaining) for _ in range(reps)])[:n_samples]
        sizes = self._sizes(n_samples, remaining.size, rng)
        cand = self.candidates_[seeds]
        ok = (cand >= 0) & in_r[np.where(cand >= 0, cand, 0)]
        # ranks among the still-available candidates; unavailable ones sort last
        rank = np.cumsum(ok, axis=1) - 1
        weight_key = np.where(ok, -np.log1p(np.maximum(rank, 0)), -np.inf)
        greedy = rng.random(n_samples) < self.p_greedy
        gumbel = -np.log(-np.log(rng.random(cand.shape)))
        keys = np.where(greedy[:, None], -rank.astype(np.float64), weight_key + gumbel)
        keys = np.where(ok, keys, -np.inf)
        order = np.argsort(-keys, axis=1, kind="stable")[:, : self.max_size - 1]
        picked = np.take_along_axis(cand, order, axis=1)
        picked_ok = np.take_along_axis(ok, order, axis=1)
        n_fill = self.max_size - 1 - picked.shape[1]
        if n_fill > 0:
            picked = np.pad(picked, ((0, 0), (0, n_fill)), constant_values=-1)
            picked_ok = np.pad(picked_ok, ((0, 0), (0, n_fill)), constant_values=False)
        slot = np.arange(self.max_size - 1)[None, :]
        want = slot < (sizes - 1)[:, None]
        explore = (~greedy[:, None]) & (rng.random(picked.shape) < self.p_explore)
        uniform = remaining[rng.integers(0, remaining.size, size=picked.shape)]
        members = np.where(picked_ok & ~explore, picked, uniform)
        members = np.where(want, members, -1)
        out = np.concatenate([seeds[:, None], members], axis=1)
        # drop duplicates (a uniform fill may repeat a member): keep the first occurrence
        srt_idx = np.argsort(out, axis=1, kind="stable")
        srt = np.take_along_axis(out, srt_idx, axis=1)
        dup_sorted = np.zeros_like(srt, dtype=bool)
        dup_sorted[:, 1:] = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
        dup = np.zeros_like(dup_sorted)
        np.put_along_axis(dup, srt_idx, dup_sorted, axis=1)
        return np.where(dup, -1, out)

    def describe(self) -> dict:
        return {**super().describe(), "n_candidates": self.n_candidates, "p_greedy": self.p_greedy,
                "p_explore": self.p_explore}


SAMPLERS: dict[str, type[CoalitionSampler]] = {
    "uniform": UniformSampler,
    "weighted": WeightedSampler,
    "partners": PartnerSampler,
}


def register_sampler(name: str, cls: type[CoalitionSampler]) -> None:
    """Make a sampler available by name to `HedonicPartition(sampler=name)`."""
    SAMPLERS[name] = cls


def make_sampler(spec: str | CoalitionSampler, min_size: int, max_size: int) -> CoalitionSampler:
    """A sampler from a registered name, or the given instance as is."""
    if isinstance(spec, CoalitionSampler):
        return spec
    if spec not in SAMPLERS:
        raise ValueError(f"unknown sampler {spec!r}: choose one of {sorted(SAMPLERS)} or pass a "
                         "CoalitionSampler instance (register new ones with register_sampler)")
    return SAMPLERS[spec](min_size=min_size, max_size=max_size)
