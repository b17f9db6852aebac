"""Streaming first and second moments of activations (for OCA's Pearson term without holding N x n)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class RunningStats:
    """Running mean and covariance of n-dimensional samples, merged batch by batch (Chan et al. 1979).

    Holds only the mean (n,) and the co-moment matrix M2 (n, n) in float64, so the number of samples can
    grow without bound; batches are merged exactly (no drift from one-at-a-time Welford updates).
    """

    def __init__(self, n: int, dtype: Any = np.float64) -> None:
        if int(n) < 1:
            raise ValueError(f"RunningStats needs n >= 1 players, got {n}")
        self.n = int(n)
        self.dtype = np.dtype(dtype)
        self._count = 0
        self._mean = np.zeros(self.n, dtype=self.dtype)
        self._m2 = np.zeros((self.n, self.n), dtype=self.dtype)

    @property
    def count(self) -> int:
        """Number of samples seen."""
        return self._count

    def update(self, batch: Any) -> RunningStats:
        """Merge a batch (B, n) of samples (numpy or torch; rows are samples)."""
        if hasattr(batch, "detach"):
            batch = batch.detach().cpu().numpy()
        X = np.asarray(batch, dtype=self.dtype)
        if X.ndim == 1:
            X = X[None]
        if X.ndim != 2 or X.shape[1] != self.n:
            raise ValueError(f"batch has shape {X.shape}: expected (B, {self.n}) activations")
        if not np.isfinite(X).all():
            raise ValueError("batch holds NaN or inf activations: check the model's precision (use float32+)")
        B = X.shape[0]
        if B == 0:
            return self
        mb = X.mean(0)
        Xc = X - mb
        m2b = Xc.T @ Xc
        n_a = self._count
        tot = n_a + B
        delta = mb - self._mean
        self._m2 += m2b + np.outer(delta, delta) * (n_a * B / tot)
        self._mean += delta * (B / tot)
        self._count = tot
        return self

    def merge(self, other: RunningStats) -> RunningStats:
        """Fold another RunningStats (e.g. from another worker) into this one."""
        if other.n != self.n:
            raise ValueError(f"cannot merge stats over {other.n} players into stats over {self.n}")
        if other.count == 0:
            return self
        n_a, n_b = self._count, other.count
        tot = n_a + n_b
        delta = other._mean - self._mean
        self._m2 += other._m2 + np.outer(delta, delta) * (n_a * n_b / tot)
        self._mean += delta * (n_b / tot)
        self._count = tot
        return self

    @property
    def mean(self) -> np.ndarray:
        """Sample mean (n,)."""
        return self._mean.copy()

    def _need(self, k: int) -> None:
        if self._count < k:
            raise ValueError(f"RunningStats has {self._count} samples: need at least {k}; call update()")

    @property
    def cov(self) -> np.ndarray:
        """Unbiased sample covariance (n, n) (ddof = 1, like np.cov)."""
        self._need(2)
        return self._m2 / (self._count - 1)

    @property
    def var(self) -> np.ndarray:
        """Unbiased sample variances (n,)."""
        self._need(2)
        return np.diag(self._m2) / (self._count - 1)

    @property
    def corr(self) -> np.ndarray:
        """Pearson correlation (n, n); a constant (zero-variance) player correlates 0 with all (warned)."""
        self._need(2)
        return corr_from_comoment(self._m2)

    @property
    def comoment(self) -> np.ndarray:
        """The co-moment matrix sum_x (a - mean)(a - mean)^T (n, n), not a copy: do not modify."""
        return self._m2

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays for safetensors (count as a 1-element int64 array)."""
        return {"count": np.array([self._count], dtype=np.int64), "mean": self._mean, "m2": self._m2}

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> RunningStats:
        """Rebuild from `state_dict` output."""
        mean = np.asarray(state["mean"])
        rs = cls(mean.shape[0], dtype=mean.dtype)
        rs._mean = mean.copy()
        rs._m2 = np.asarray(state["m2"]).copy()
        rs._count = int(np.asarray(state["count"]).reshape(-1)[0])
        return rs


def inv_sd_from_comoment(m2: np.ndarray, rel_tol: float = 1e-12) -> np.ndarray:
    """1/sqrt(diag(m2)) with 0 for zero-variance (constant) players, which are counted in a warning."""
    v = np.diag(m2).astype(np.float64)
    scale = max(float(v.max(initial=0.0)), np.finfo(np.float64).tiny)
    const = v <= rel_tol * scale
    if const.any():
        log.warning("%d of %d players never vary over the samples: their correlations are set to 0",
                    int(const.sum()), v.size)
    return np.where(const, 0.0, 1.0 / np.sqrt(np.where(const, 1.0, v)))


def corr_from_comoment(m2: np.ndarray, rel_tol: float = 1e-12) -> np.ndarray:
    """Pearson correlation from a co-moment (or covariance) matrix; zero-variance rows/columns give 0."""
    inv = inv_sd_from_comoment(m2, rel_tol)
    out = m2 * inv[:, None] * inv[None, :]
    np.clip(out, -1.0, 1.0, out=out)
    return out
