"""Mergeable sufficient statistics of every valuation, so that phi from shards equals phi from one pass.

Every valuation is an expectation over inputs (paper eq. 6-7, sec. 3.2), so it is a function of
per-input sums that can be computed on disjoint shards of the inputs and combined exactly:

- OCA: count, mean and co-moment matrix of the activations (`RunningStats`, Chan et al.'s merge);
- exact PAS: count, mean and sum of squared deviations (M2) of Delta_ij(x) per pair, of the singles
  l(x) - l_-i(x) (psi, eq. 6) and of the local logit (`Moments`);
- Hessian PAS: count and mean of delta_i^T Hess delta_j (`Moments` without M2).

Means and M2 are merged with Chan's parallel formula (M2 = M2_a + M2_b + d^2 n_a n_b / n), which never
subtracts two large sums of squares, so merged values agree with a one-pass computation to rounding
(about 1e-15 relative in float64). `merge_all` is the k-way form of the same formula: the one an
all-reduce computes (`models.distributed`). Everything saves to and loads from safetensors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hedonic_neurons.valuations.activations import RunningStats

__all__ = ["Moments", "ValuationStats", "merge_all", "running_stats_merge_all"]


class Moments:
    """Count, mean and (optionally) sum of squared deviations M2 of an array-valued per-input statistic.

    ``Moments.from_samples(X)`` takes samples along axis 0; ``merge`` folds another shard in (Chan's
    formula); ``se`` is sd / sqrt(count) per entry (NaN below two samples).
    """

    def __init__(self, count: int, mean: np.ndarray, m2: np.ndarray | None = None) -> None:
        self.count = int(count)
        self.mean = np.asarray(mean)
        self.m2 = None if m2 is None else np.asarray(m2)
        if self.count < 0:
            raise ValueError(f"Moments count {count} is negative")
        if self.m2 is not None and self.m2.shape != self.mean.shape:
            raise ValueError(f"Moments m2 has shape {self.m2.shape} but mean has {self.mean.shape}")

    @classmethod
    def from_samples(cls, X: Any, *, with_m2: bool = True) -> Moments:
        """Two-pass moments of samples X (N, ...) in float64."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[0] == 0:
            return cls(0, np.zeros(X.shape[1:]), np.zeros(X.shape[1:]) if with_m2 else None)
        mean = X.mean(0)
        m2 = ((X - mean) ** 2).sum(0) if with_m2 else None
        return cls(X.shape[0], mean, m2)

    @classmethod
    def from_mean_se(cls, count: int, mean: np.ndarray, se: np.ndarray | None) -> Moments:
        """Back from a mean and its standard error (se = sqrt(M2 / ((N-1) N))); N = 1 has M2 = 0."""
        mean = np.asarray(mean, dtype=np.float64)
        if se is None:
            return cls(count, mean)
        if count < 2:
            return cls(count, mean, np.zeros_like(mean))
        return cls(count, mean, np.asarray(se, dtype=np.float64) ** 2 * (count * (count - 1)))

    def copy(self) -> Moments:
        return Moments(self.count, self.mean.copy(), None if self.m2 is None else self.m2.copy())

    def merge(self, other: Moments) -> Moments:
        """Fold `other` (disjoint inputs) into this one, in place (Chan et al. 1979); returns self."""
        if other.mean.shape != self.mean.shape:
            raise ValueError(f"cannot merge moments of shape {other.mean.shape} into {self.mean.shape}: "
                             "the shards were computed for different layers or methods")
        if (self.m2 is None) != (other.m2 is None):
            raise ValueError("cannot merge moments with and without M2: compute both shards the same way")
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.mean = other.count, other.mean.copy()
            self.m2 = None if other.m2 is None else other.m2.copy()
            return self
        na, nb = self.count, other.count
        n = na + nb
        delta = other.mean - self.mean
        if self.m2 is not None:
            self.m2 = self.m2 + other.m2 + delta * delta * (na * nb / n)
        self.mean = self.mean + delta * (nb / n)
        self.count = n
        return self

    @property
    def var(self) -> np.ndarray:
        """Unbiased variance per entry (NaN below two samples)."""
        if self.m2 is None:
            raise ValueError("these moments carry no M2: variances need with_m2=True")
        if self.count < 2:
            return np.full(self.mean.shape, np.nan)
        return np.maximum(self.m2, 0.0) / (self.count - 1)

    @property
    def se(self) -> np.ndarray:
        """Standard error of the mean, sqrt(var / N)."""
        return np.sqrt(self.var / self.count) if self.count >= 2 else np.full(self.mean.shape, np.nan)

    def state_dict(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.count": np.array([self.count], dtype=np.int64), f"{prefix}.mean": self.mean}
        if self.m2 is not None:
            out[f"{prefix}.m2"] = self.m2
        return out

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray], prefix: str) -> Moments:
        return cls(int(np.asarray(state[f"{prefix}.count"]).reshape(-1)[0]), np.asarray(state[f"{prefix}.mean"]),
                   state.get(f"{prefix}.m2"))


def merge_all(parts: Sequence[Moments]) -> Moments:
    """k-way merge: mean = sum n_k m_k / N, M2 = sum_k [M2_k + n_k (m_k - mean)^2] (what an all-reduce does)."""
    parts = [p for p in parts]
    if not parts:
        raise ValueError("merge_all needs at least one Moments")
    N = sum(p.count for p in parts)
    if N == 0:
        return parts[0].copy()
    mean = sum(p.mean * (p.count / N) for p in parts if p.count)
    m2 = None
    if parts[0].m2 is not None:
        m2 = sum(p.m2 + p.count * (p.mean - mean) ** 2 for p in parts if p.count)
    return Moments(N, mean, m2)


def running_stats_merge_all(parts: Sequence[RunningStats]) -> RunningStats:
    """k-way merge of activation co-moments: M2 = sum_k [M2_k + n_k d_k d_k^T], d_k = mean_k - mean."""
    parts = list(parts)
    N = sum(p.count for p in parts)
    out = RunningStats(parts[0].n, dtype=parts[0].dtype)
    if N == 0:
        return out
    mean = sum(p._mean * (p.count / N) for p in parts if p.count)
    m2 = np.zeros_like(out._m2)
    for p in parts:
        if p.count:
            d = p._mean - mean
            m2 += p._m2 + np.outer(d, d) * p.count
    out._count, out._mean, out._m2 = N, mean, m2
    return out


@dataclass
class ValuationStats:
    """The mergeable statistics of one layer's valuations over a set of inputs.

    ``oca``: activation co-moments (OCA's Pearson term); ``pas`` (n, n) Delta_ij moments; ``psi`` (n,)
    singles; ``logit`` (1,) local logit; ``hessian`` (n, n) mean Hessian term. Entries are None when the
    method was not run. ``pairs`` (2, P) marks PAS moments kept on a subset of pairs only (tails without
    a closed form); ``meta`` holds JSON-able facts (layer, site, ablation, tail kind, dtypes).
    """

    n_players: int
    oca: RunningStats | None = None
    pas: Moments | None = None
    psi: Moments | None = None
    logit: Moments | None = None
    hessian: Moments | None = None
    pairs: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    _MOMENTS = ("pas", "psi", "logit", "hessian")

    @property
    def n_samples(self) -> int:
        for m in (self.logit, self.pas, self.psi, self.hessian):
            if m is not None:
                return m.count
        return 0 if self.oca is None else self.oca.count

    def merge(self, other: ValuationStats) -> ValuationStats:
        """Fold the statistics of disjoint inputs into these (in place); returns self."""
        if other.n_players != self.n_players:
            raise ValueError(f"cannot merge statistics over {other.n_players} players into {self.n_players}")
        for name in ("oca", *self._MOMENTS):
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None):
                raise ValueError(f"one shard has {name} statistics and the other not: run the same methods on "
                                 "every shard")
            if a is not None:
                a.merge(b)
        if (self.pairs is None) != (other.pairs is None) or (
                self.pairs is not None and not np.array_equal(self.pairs, other.pairs)):
            raise ValueError("the shards' PAS statistics cover different pairs: use the same pair subset")
        return self

    @classmethod
    def merge_all(cls, parts: Sequence[ValuationStats]) -> ValuationStats:
        """k-way merge of shards (the all-reduce formula); the result is a new object."""
        parts = list(parts)
        first = parts[0]
        for p in parts[1:]:
            if p.n_players != first.n_players:
                raise ValueError(f"cannot merge statistics over {p.n_players} and {first.n_players} players")
        out = cls(first.n_players, pairs=first.pairs, meta=dict(first.meta))
        if first.oca is not None:
            out.oca = running_stats_merge_all([p.oca for p in parts])
        for name in cls._MOMENTS:
            if getattr(first, name) is not None:
                setattr(out, name, merge_all([getattr(p, name) for p in parts]))
        return out

    # ---- finalisation: the valuations themselves --------------------------------------------------

    def oca_phi(self, W: np.ndarray | None, dtype: Any = np.float64) -> np.ndarray:
        """OCA phi (n, n) from the merged co-moments and the W_down columns (None: residual site)."""
        from hedonic_neurons.valuations.oca import oca

        if self.oca is None:
            raise ValueError("no OCA statistics: compute them with 'oca' among the methods")
        return oca(self.oca, W, dtype=dtype)

    def pas_result(self):
        """`PASResult` (phi, se, psi, psi_se) of exact PAS from the merged moments."""
        from hedonic_neurons.valuations.pas import PASResult

        if self.pas is None or self.psi is None:
            raise ValueError("no exact PAS statistics: compute them with 'pas' among the methods")
        if self.pairs is not None:
            raise ValueError("these PAS statistics cover a subset of pairs: read pas.mean / pas.se instead")
        N = self.pas.count
        phi = self.pas.mean.copy()
        se = self.pas.se if N >= 2 else np.full(phi.shape, np.nan)
        np.fill_diagonal(phi, 0.0)
        np.fill_diagonal(se, 0.0)
        logit_mean = float(self.logit.mean.reshape(-1)[0]) if self.logit is not None else float("nan")
        return PASResult(phi, se, self.psi.mean.copy(), self.psi.se, N, logit_mean,
                         self.meta.get("tail", ""), self.meta.get("pas_dtype", "float64"))

    def hessian_phi(self) -> np.ndarray:
        """Hessian PAS (n, n) from the merged means, in the dtype it was computed in."""
        if self.hessian is None:
            raise ValueError("no Hessian statistics: compute them with 'hessian' among the methods")
        out = self.hessian.mean.astype(np.dtype(self.meta.get("pas_dtype", "float64")))
        np.fill_diagonal(out, 0.0)
        return out

    # ---- files ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"n_players": np.array([self.n_players], dtype=np.int64)}
        if self.oca is not None:
            out.update({f"oca.{k}": v for k, v in self.oca.state_dict().items()})
        for name in self._MOMENTS:
            m = getattr(self, name)
            if m is not None:
                out.update(m.state_dict(name))
        if self.pairs is not None:
            out["pairs"] = np.asarray(self.pairs, dtype=np.int64)
        return out

    def save(self, path: str | Path) -> Path:
        """Write one safetensors file (the meta dict goes in its JSON header), atomically."""
        from safetensors.numpy import save_file

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in self.state_dict().items()}, str(tmp),
                  metadata={"meta": json.dumps(self.meta, default=float)})
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> ValuationStats:
        """Read what `save` wrote."""
        from safetensors import safe_open
        from safetensors.numpy import load_file

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no valuation statistics at {p}: save them there first (ValuationStats.save)")
        state = load_file(str(p))
        with safe_open(str(p), "numpy") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
        out = cls(int(state["n_players"].reshape(-1)[0]), pairs=state.get("pairs"), meta=meta)
        if "oca.count" in state:
            out.oca = RunningStats.from_state_dict({k[4:]: v for k, v in state.items() if k.startswith("oca.")})
        for name in cls._MOMENTS:
            if f"{name}.count" in state:
                setattr(out, name, Moments.from_state_dict(state, name))
        return out


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (0 when both are all zero): the figure the shard-vs-one-pass checks quote."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.nanmax(np.abs(b))) if b.size else 0.0
    diff = float(np.nanmax(np.abs(a - b))) if b.size else 0.0
    if scale == 0.0:
        return diff
    return diff / scale if math.isfinite(diff) else float("inf")
