"""Orthogonal-Co-Activation: phi_ij = (1 - |cos(W[:, i], W[:, j])|) * pearson(a_i, a_j) (paper sec. 3.2).

W's columns are the players' output directions (the LoRA-merged W_down for an MLP site; for a residual
site the caller passes the next block's input-projection rows transposed, or None for the identity, in
which case the weight term is 1 off the diagonal). Pearson, not covariance: the paper's text says correlation
(its released code used covariance).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from hedonic_neurons.valuations.activations import RunningStats, corr_from_comoment, inv_sd_from_comoment

log = logging.getLogger(__name__)


def _unit_columns(W: torch.Tensor) -> torch.Tensor:
    norms = torch.linalg.vector_norm(W, dim=0)
    zero = norms == 0
    if bool(zero.any()):
        log.warning("%d players have an all-zero weight column: their cosines are set to 0", int(zero.sum()))
    return W / torch.where(zero, torch.ones_like(norms), norms)


def _standardised(acts: np.ndarray, tdt: torch.dtype) -> torch.Tensor:
    """Columns centred and scaled to unit norm, so that Z^T Z is the Pearson matrix; constant -> 0."""
    # moments in float64: a constant float32 column must come out with variance exactly 0
    mean = acts.mean(0, dtype=np.float64)
    ss = np.zeros(acts.shape[1])
    step = max(1, (1 << 24) // max(1, acts.shape[1]))
    for r0 in range(0, acts.shape[0], step):
        x = acts[r0:r0 + step].astype(np.float64) - mean
        ss += np.einsum("ij,ij->j", x, x)
    const = ss <= 1e-24 * max(float(ss.max(initial=0.0)), np.finfo(np.float64).tiny)
    if const.any():
        log.warning("%d of %d players never vary over the samples: their correlations are set to 0",
                    int(const.sum()), ss.size)
    inv = np.where(const, 0.0, 1.0 / np.sqrt(np.where(const, 1.0, ss)))
    # a copy: for float32/float64 input `.to(tdt)` would alias the caller's array, which the in-place
    # centring below would then overwrite (the caller's activations came back standardised)
    Z = torch.from_numpy(np.ascontiguousarray(acts)).to(tdt, copy=True)
    Z -= torch.from_numpy(mean).to(tdt)
    Z *= torch.from_numpy(inv).to(tdt)
    return Z


def oca(acts_or_stats: np.ndarray | RunningStats, W: np.ndarray | None, *, dtype: Any = None,
        block: int = 2048, device: str | torch.device | None = None) -> np.ndarray:
    """OCA valuation (n, n), zero diagonal, from activations (N, n) or a `RunningStats`, and W (d, n).

    Computed in upper-triangle tiles (phi is symmetric) so that the only n x n array held is the result.
    ``dtype`` defaults to the activations' precision, at least float32 (in float16
    the rounding noise is as large as the real synergy); RunningStats
    input gives float64. ``device`` (e.g. "cuda") runs the products there; the result comes back as numpy.
    """
    if isinstance(acts_or_stats, RunningStats):
        n = acts_or_stats.n
        out_dt = np.dtype(dtype or np.float64)
    else:
        a = acts_or_stats
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        a = np.asarray(a)
        if a.ndim != 2:
            raise ValueError(f"activations have shape {a.shape}: pass an (N samples, n players) array")
        if a.shape[0] < 2:
            raise ValueError(f"{a.shape[0]} samples: a Pearson correlation needs at least 2")
        n = a.shape[1]
        out_dt = np.dtype(dtype or (np.float64 if a.dtype == np.float64 else np.float32))
    if out_dt not in (np.float32, np.float64):
        raise ValueError(f"dtype {out_dt} is not supported: use np.float32 or np.float64")
    tdt = torch.float64 if out_dt == np.float64 else torch.float32
    if W is not None:
        if hasattr(W, "detach"):
            W = W.detach().cpu().numpy()
        W = np.asarray(W)
        if W.ndim != 2 or W.shape[1] != n:
            raise ValueError(f"W has shape {W.shape}: it must be (d, n={n}), one column per player (W_down)")
        Wn = _unit_columns(torch.from_numpy(np.ascontiguousarray(W)).to(tdt)).to(device or "cpu")

    if isinstance(acts_or_stats, RunningStats):
        if acts_or_stats.count < 2:
            raise ValueError(f"RunningStats has {acts_or_stats.count} samples: a correlation needs at least 2")
        # correlation tiles straight from the co-moment matrix: no second n x n float64 copy
        m2 = torch.from_numpy(acts_or_stats.comoment).to(device or "cpu")
        inv = torch.from_numpy(inv_sd_from_comoment(acts_or_stats.comoment)).to(device or "cpu")
        Z = None
    else:
        Z = _standardised(a, tdt).to(device or "cpu")

    # phi is symmetric: compute upper-triangle tiles only (half the products) and mirror them
    phi = torch.empty((n, n), dtype=tdt, device=device or "cpu")
    starts = list(range(0, n, max(1, int(block))))
    for k, i0 in enumerate(starts):
        I = slice(i0, min(i0 + block, n))
        for j0 in starts[k:]:
            J = slice(j0, min(j0 + block, n))
            if Z is None:
                tile = (m2[I, J] * inv[I, None] * inv[None, J]).to(tdt)
            else:
                tile = Z[:, I].T @ Z[:, J]
            if W is not None:
                tile.mul_((Wn[:, I].T @ Wn[:, J]).abs_().neg_().add_(1.0))
            tile.clamp_(-1.0, 1.0)
            phi[I, J] = tile
            if i0 != j0:
                phi[J, I] = tile.T
    phi.fill_diagonal_(0.0)
    return phi.cpu().numpy()


def oca_null_se(n_samples: int) -> float:
    """Null sd of a Pearson r over N independent samples: 1/sqrt(N - 1) (exact for bivariate normals).

    Under independence E[r] = 0 and Var[r] = 1/(N - 1) exactly for Gaussian data (and asymptotically for
    any finite-variance data). Since |1 - |cos|| <= 1, it bounds the null sd of every OCA entry.
    """
    if int(n_samples) < 2:
        raise ValueError(f"n_samples={n_samples}: the null sd of a correlation needs at least 2 samples")
    return 1.0 / math.sqrt(int(n_samples) - 1)


def oca_se(W: np.ndarray | None, n_samples: int, n: int | None = None) -> np.ndarray:
    """Per-pair null sd of OCA, (1 - |cos_ij|) / sqrt(N - 1), as an (n, n) matrix with zero diagonal.

    This is the ``phi_se`` to give `HedonicPartition.fit` with an OCA phi. ``W=None`` (identity players,
    weight term 1) needs ``n``.
    """
    s = oca_null_se(n_samples)
    if W is None:
        if n is None:
            raise ValueError("oca_se with W=None needs n, the number of players")
        out = np.full((n, n), s)
        np.fill_diagonal(out, 0.0)
        return out
    if hasattr(W, "detach"):
        W = W.detach().cpu().numpy()
    Wn = _unit_columns(torch.from_numpy(np.ascontiguousarray(np.asarray(W, dtype=np.float64))))
    out = (1.0 - (Wn.T @ Wn).abs()).clamp_(min=0.0) * s
    out.fill_diagonal_(0.0)
    return out.numpy()


__all__ = ["oca", "oca_null_se", "oca_se", "corr_from_comoment"]
