"""Pairwise Ablation Synergy: exact over all pairs (paper eq. 6-7) and its Hessian approximation (sec. 3.2).

Player i's ablation subtracts delta_i(x) = coef[x, i] * C[:, i] (- coef_base[x, i] * C_base[:, i]) from the
cached residual h(x), and l_-S(x) = tail(h(x) - sum_{i in S} delta_i(x)).

For a norm + linear tail, l(h) = a.P h / s(h) + c with s(h) = sqrt(|P h|^2 / d + eps), a = P (weight * w_t),
P = I (RMSNorm) or the centring I - 11^T/d (LayerNorm). Every pair's l_-{i,j} then depends on the pair only
through per-player scalars alpha_i = a.P delta_i, beta_i = P h . P delta_i, gamma_i = |P delta_i|^2 and the
Gram term P delta_i . P delta_j = coef_i coef_j (P C)^T (P C)_ij. Exact PAS over all pairs is
O(N n^2) elementwise after one n x n product; the Hessian form is a few n x N x n products.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hedonic_neurons.valuations.tail import NormTail

log = logging.getLogger(__name__)

TailLike = NormTail | Callable[..., Any]


@dataclass
class PASResult:
    """Exact PAS over every pair (paper eq. 7) with per-entry standard errors and eq. 6 singles."""

    phi: np.ndarray  # (n, n) E_x[Delta_ij(x)], zero diagonal
    se: np.ndarray  # (n, n) standard error of phi over the inputs (sd / sqrt(N)), zero diagonal
    psi: np.ndarray  # (n,) E_x[l(x) - l_-i(x)]  (eq. 6)
    psi_se: np.ndarray  # (n,) its standard error
    n_samples: int
    logit_mean: float  # E_x[l(x)]: the scale the synergies compare to
    kind: str = ""
    dtype: str = "float64"
    extra: dict = field(default_factory=dict)

    def matrices(self, prefix: str = "pas") -> dict[str, np.ndarray]:
        """Arrays to store with `RunDir.save_matrices` (phi, se, psi, psi_se)."""
        return {prefix: self.phi, f"{prefix}_se": self.se, f"{prefix}_psi": self.psi,
                f"{prefix}_psi_se": self.psi_se}


# ---------------------------------------------------------------------------------------------------
# shared preparation: per-player scalars in the "RMS form" (centred quantities for LayerNorm)
# ---------------------------------------------------------------------------------------------------


def _to_torch(x: Any, dtype: torch.dtype, device: Any = "cpu") -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device, dtype)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x))).to(device, dtype)


def _check_inputs(H, coef, C, tail, C_base, coef_base) -> tuple[int, int, int]:
    if not isinstance(tail, NormTail):
        raise ValueError(f"tail must be a NormTail here, got {type(tail).__name__}: build a NormTail(...)")
    H_shape, coef_shape = np.shape(H), np.shape(coef)
    if len(H_shape) != 2:
        raise ValueError(f"H has shape {H_shape}: pass the cached residuals as an (N, d) array")
    N, d = H_shape
    if d != tail.d:
        raise ValueError(f"H has width {d} but the tail's head has width {tail.d}: use the matching residual")
    if len(coef_shape) != 2 or coef_shape[0] != N:
        raise ValueError(f"coef has shape {coef_shape}: must be (N={N}, n): one value per sample and player")
    n = coef_shape[1]
    C_shape = (d, d) if C is None else np.shape(C)
    if C_shape != (d, n):
        raise ValueError(f"C has shape {C_shape}: it must be (d={d}, n={n}) (W_down, or None = identity)")
    if (C_base is None) != (coef_base is None):
        raise ValueError("C_base and coef_base go together: pass both (LoRA on W_down) or neither")
    if C_base is not None:
        if np.shape(C_base) != (d, n):
            raise ValueError(f"C_base has shape {np.shape(C_base)}: it must be (d={d}, n={n})")
        if np.shape(coef_base) != (N, n):
            raise ValueError(f"coef_base has shape {np.shape(coef_base)}: it must be (N={N}, n={n})")
    if N < 1:
        raise ValueError("H holds no samples: PAS is an expectation over at least one input")
    return N, d, n


@dataclass
class _Prep:
    N: int
    d: int
    n: int
    A: torch.Tensor  # (N,) a.Ph
    s0sq: torch.Tensor  # (N,) |Ph|^2/d + eps
    alpha: torch.Tensor  # (N, n) a.P delta_i
    beta: torch.Tensor  # (N, n) Ph . P delta_i
    gamma: torch.Tensor  # (N, n) |P delta_i|^2
    coef: torch.Tensor
    coef_base: torch.Tensor | None
    Cc: torch.Tensor  # (d, n) P C
    Cbc: torch.Tensor | None  # (d, n) P C_base
    logit: torch.Tensor  # (N,) l(x)


def _prepare(H, coef, C, tail: NormTail, targets, C_base, coef_base, dtype: torch.dtype,
             device: Any = "cpu") -> _Prep:
    N, d, n = _check_inputs(H, coef, C, tail, C_base, coef_base)
    t_idx = torch.from_numpy(tail.target_index(targets, N)).to(device)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    u, c = tail.readout(np_dtype)
    u, c = torch.from_numpy(u).to(device), torch.from_numpy(c).to(device)
    Ht = _to_torch(H, dtype, device)
    Ct = torch.eye(d, dtype=dtype, device=device) if C is None else _to_torch(C, dtype, device)
    Cb = None if C_base is None else _to_torch(C_base, dtype, device)
    if tail.kind == "layer":
        # LayerNorm = RMS form on centred vectors: P h, P C, and a = P u (so a.h = a.Ph = u.Ph).
        Ht = Ht - Ht.mean(1, keepdim=True)
        Ct = Ct - Ct.mean(0, keepdim=True)
        Cb = None if Cb is None else Cb - Cb.mean(0, keepdim=True)
        u = u - u.mean(1, keepdim=True)
    coef_t = _to_torch(coef, dtype, device)
    cb_t = None if coef_base is None else _to_torch(coef_base, dtype, device)
    for name, x in (("H", Ht), ("coef", coef_t), ("C", Ct), ("C_base", Cb), ("coef_base", cb_t)):
        if x is not None and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} holds NaN or inf: cache activations in float32 or better "
                             "(float16 overflows, and its rounding is as large as the synergy)")

    A = (Ht * u[t_idx]).sum(1)
    s0sq = Ht.pow(2).sum(1) / d + tail.eps
    alpha = coef_t * (u @ Ct)[t_idx]
    beta = coef_t * (Ht @ Ct)
    gamma = coef_t.pow(2) * Ct.pow(2).sum(0)
    if Cb is not None:
        alpha -= cb_t * (u @ Cb)[t_idx]
        beta -= cb_t * (Ht @ Cb)
        gamma += cb_t.pow(2) * Cb.pow(2).sum(0) - 2 * coef_t * cb_t * (Ct * Cb).sum(0)
    if tail.kind == "none":
        logit = A + c[t_idx]
    else:
        logit = A * torch.rsqrt(s0sq) + c[t_idx]
    return _Prep(N, d, n, A, s0sq, alpha, beta, gamma, coef_t, cb_t, Ct, Cb, logit)


def _resolve_dtype(dtype: Any) -> torch.dtype:
    dt = np.dtype(dtype)
    if dt == np.float64:
        return torch.float64
    if dt == np.float32:
        return torch.float32
    raise ValueError(f"dtype {dt} is not supported: use np.float64 (default) or np.float32 "
                     "(float16 rounding is as large as the synergy)")


def _capdiff(a: torch.Tensor, delta: torch.Tensor, cap: float) -> torch.Tensor:
    """f(a) - f(a - delta) for f(z) = cap tanh(z / cap), without cancellation:
    cap sinh(delta / cap) / (cosh(a / cap) cosh((a - delta) / cap))."""
    return cap * torch.sinh(delta / cap) / (torch.cosh(a / cap) * torch.cosh((a - delta) / cap))


def _finv_sqrt_diff(e: torch.Tensor, s0: torch.Tensor, s0sq: torch.Tensor) -> torch.Tensor:
    """1/sqrt(s0^2 + e) - 1/s0 without cancellation: -e / (s0 t (s0 + t)), t = sqrt(s0^2 + e)."""
    t = torch.sqrt(s0sq + e)
    return -e / (s0 * t * (s0 + t))


# ---------------------------------------------------------------------------------------------------
# exact PAS
# ---------------------------------------------------------------------------------------------------


def exact_pas(
    H: np.ndarray,
    coef: np.ndarray,
    C: np.ndarray | None,
    tail: NormTail,
    targets: np.ndarray | None = None,
    *,
    C_base: np.ndarray | None = None,
    coef_base: np.ndarray | None = None,
    batch_size: int | None = None,
    block: int = 128,
    dtype: Any = np.float64,
    n_jobs: int | None = None,
    progress: bool = True,
) -> PASResult:
    """Exact PAS phi_ij = E_x[l - l_-i - l_-j + l_-ij] for ALL pairs (paper eq. 7), with standard errors.

    H (N, d) cached residuals, coef (N, n) per-player ablation coefficients, C (d, n) their directions
    (None = identity, n = d). Cost O(N n^2) elementwise after one n x n Gram product, memory O(n^2 + N n):
    pairs are visited in (block x block) tiles of the upper triangle and samples in chunks of
    ``batch_size`` (default: about 256K elements per tile), spread over ``n_jobs`` single-threaded workers
    (default: torch's thread count); sums and sums of squares are kept in float64.
    """
    tdt = _resolve_dtype(dtype)
    prep = _prepare(H, coef, C, tail, targets, C_base, coef_base, tdt)
    N, d, n = prep.N, prep.d, prep.n
    s0sq = prep.s0sq
    s0 = torch.sqrt(s0sq)

    # singles (eq. 6): l - l_-i = alpha_i / s0 - (A - alpha_i) f_i, f_i = 1/s_i - 1/s0
    Aa = prep.A[:, None] - prep.alpha  # A - alpha_i
    if tail.kind == "none":
        single = prep.alpha.clone()
        f_i = None
    else:
        e_i = (prep.gamma - 2 * prep.beta) / d  # s_i^2 - s0^2
        f_i = _finv_sqrt_diff(e_i, s0[:, None], s0sq[:, None])
        single = prep.alpha / s0[:, None] - Aa * f_i
    cap = tail.softcap
    if cap is not None:
        if tail.kind == "none":
            raise ValueError("a soft-capped tail without a norm has no closed form here: use the direct evaluation "
                             "(models.valuate.exact_pas_pairs)")
        z0 = prep.logit  # the logit before the cap; single = z0 - z_-i is exact, so differences of the cap are too
        z0b = z0[:, None]
        single_z = single
        single = _capdiff(z0b, single_z, cap)
    single64 = single.double()
    psi = single64.mean(0).numpy()
    psi_se = (single64.std(0, unbiased=True) / math.sqrt(N)).numpy() if N > 1 else np.full(n, np.nan)
    logit_mean = float(prep.logit.double().mean()) if cap is None else float(
        (cap * torch.tanh(prep.logit.double() / cap)).mean())

    if tail.kind == "none":
        # the tail is affine in h: l - l_-i - l_-j + l_-ij = 0 identically
        phi = np.zeros((n, n))
        se = np.zeros((n, n))
        return PASResult(phi, se, psi, psi_se, N, logit_mean, tail.kind, np.dtype(dtype).name,
                         extra={"note": "affine tail: pairwise ablation effects vanish exactly"})

    # Pair terms: Delta_ij = (A - alpha_i - alpha_j) f_ij - (A - alpha_i) f_i - (A - alpha_j) f_j with
    # e_ij = e_i + e_j + 2 P delta_i . P delta_j / d. Written as differences of 1/s so that the linear
    # parts cancel analytically instead of in floating point.
    p_i = Aa * f_i
    Aa_s = Aa / s0[:, None]
    al_s = prep.alpha / s0[:, None]
    del Aa, f_i
    G2 = (prep.Cc.T @ prep.Cc) * (2.0 / d)
    if prep.Cbc is not None:
        GCB2 = (prep.Cc.T @ prep.Cbc) * (2.0 / d)
        GBB2 = (prep.Cbc.T @ prep.Cbc) * (2.0 / d)
    cf, cb = prep.coef, prep.coef_base

    block = max(1, min(int(block), n))
    if batch_size is None:
        batch_size = max(1, (1 << 18) // (block * block))  # ~2 MB float64 temporaries: cache-sized
    starts = list(range(0, n, block))
    tiles = [(i0, j0) for k, i0 in enumerate(starts) for j0 in starts[k:]]
    acc = torch.zeros((n, n), dtype=torch.float64)
    acc2 = torch.zeros((n, n), dtype=torch.float64)

    def tile(i0: int, j0: int) -> None:
        I = slice(i0, min(i0 + block, n))
        J = slice(j0, min(j0 + block, n))
        g2 = G2[I, J]
        if prep.Cbc is not None:
            gcb_ij, gcb_ji, gbb = GCB2[I, J], GCB2[J, I].T, GBB2[I, J]
        s1 = torch.zeros((g2.shape[0], g2.shape[1]), dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        for b0 in range(0, N, batch_size):
            b = slice(b0, min(b0 + batch_size, N))
            ci, cj = cf[b, I], cf[b, J]
            e = ci[:, :, None] * cj[:, None, :]
            e.mul_(g2)
            if prep.Cbc is not None:
                bi, bj = cb[b, I], cb[b, J]
                e.addcmul_(ci[:, :, None] * bj[:, None, :], gcb_ij, value=-1.0)
                e.addcmul_(bi[:, :, None] * cj[:, None, :], gcb_ji, value=-1.0)
                e.addcmul_(bi[:, :, None] * bj[:, None, :], gbb)
            e.add_(e_i[b, I][:, :, None]).add_(e_i[b, J][:, None, :])
            t = torch.add(e, s0sq[b, None, None]).sqrt_()
            den = torch.add(t, s0[b, None, None]).mul_(t)
            # (A - alpha_i - alpha_j) f_ij = (alpha_j - (A - alpha_i)) / s0 * e / (t (s0 + t))
            delta = al_s[b, J][:, None, :] - Aa_s[b, I][:, :, None]
            delta.mul_(e).div_(den).sub_(p_i[b, I][:, :, None]).sub_(p_i[b, J][:, None, :])
            if cap is not None:
                # f = cap tanh(z / cap): Delta_f = [f(z0) - f(z_i)] - [f(z_j) - f(z_ij)], with z0 - z_i = s_i and
                # z_j - z_ij = s_i - Delta_z (both exact), each difference in closed form (no cancellation)
                a0 = z0[b, None, None]
                si = single_z[b, I][:, :, None]
                delta = _capdiff(a0, si, cap) - _capdiff(a0 - single_z[b, J][:, None, :], si - delta, cap)
            s1 += delta.sum(0, dtype=torch.float64)
            s2 += delta.pow_(2).sum(0, dtype=torch.float64)
        acc[I, J] = s1  # tiles are disjoint: no two workers write the same entries
        acc2[I, J] = s2
        if i0 != j0:
            acc[J, I] = s1.T
            acc2[J, I] = s2.T

    # Many small elementwise ops: run tiles on single-threaded workers instead of torch's intra-op threads,
    # whose barriers collapse (10x slower) when the cores are shared with other processes.
    workers = max(1, int(n_jobs) if n_jobs is not None else torch.get_num_threads())
    prev_threads = torch.get_num_threads()
    bar = tqdm(total=len(tiles), desc="exact PAS tiles", disable=not progress, leave=False)
    try:
        if workers == 1:
            torch.set_num_threads(1)
            for i0, j0 in tiles:
                tile(i0, j0)
                bar.update()
        else:
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as ex:
                for fut in as_completed([ex.submit(tile, i0, j0) for i0, j0 in tiles]):
                    fut.result()
                    bar.update()
    finally:
        bar.close()
        torch.set_num_threads(prev_threads)
    # in place: at n = 14k every n x n float64 is 1.6 GB
    phi = acc.div_(N)
    if N > 1:
        se = acc2.addcmul_(phi, phi, value=-float(N)).clamp_(min=0.0).div_((N - 1) * N).sqrt_()
    else:
        log.warning("exact PAS over a single input: standard errors are undefined (NaN)")
        se = acc2.fill_(float("nan"))
    phi.fill_diagonal_(0.0)
    se.fill_diagonal_(0.0)
    return PASResult(phi.numpy(), se.numpy(), psi, psi_se, N, logit_mean, tail.kind, np.dtype(dtype).name)


# ---------------------------------------------------------------------------------------------------
# Hessian approximation (paper sec. 3.2; validated against exact PAS, never assumed)
# ---------------------------------------------------------------------------------------------------


def hessian_pas(
    H: np.ndarray,
    coef: np.ndarray,
    C: np.ndarray | None,
    tail: TailLike,
    targets: np.ndarray | None = None,
    *,
    C_base: np.ndarray | None = None,
    coef_base: np.ndarray | None = None,
    method: str = "auto",
    dtype: Any = np.float64,
    block: int = 2048,
    batch_size: int = 32,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Second-order PAS phi_ij ~= E_x[delta_i^T Hess_h l(x) delta_j] (paper sec. 3.2), (n, n), zero diagonal.

    ``method="closed"`` (default for a NormTail): for l = a.h/s, s = sqrt(|h|^2/d + eps) (centred vectors for
    LayerNorm), delta_i^T Hess delta_j = -(alpha_i beta_j + beta_i alpha_j)/(d s^3) - (a.h) D_ij/(d s^3)
    + 3 (a.h) beta_i beta_j/(d^2 s^5), so the expectation is v^T beta + beta^T v - G o (coef^T W coef) with
    v = -alpha/(d s^3) + 1.5 (a.h) beta/(d^2 s^5): three n x N x n products and one Gram product, in tiles.
    ``method="autograd"`` (forced for a callable ``tail(H (B, d) tensor, targets) -> (B,)``) takes n
    Hessian-vector products per sample batch by double backward: small n only. ``device`` (e.g. "cuda")
    runs the closed form's products there; the result comes back as numpy.
    """
    if method not in ("auto", "closed", "autograd"):
        raise ValueError(f"method {method!r} is unknown: use 'auto', 'closed' or 'autograd'")
    if not isinstance(tail, NormTail):
        if method == "closed":
            raise ValueError("method='closed' needs a NormTail; a callable tail uses method='autograd'")
        return _hessian_autograd(H, coef, C, tail, targets, C_base, coef_base, dtype, batch_size)
    if method == "autograd":
        return _hessian_autograd(H, coef, C, tail.logit_torch, tail.target_index(targets, np.shape(H)[0])
                                 if tail.n_classes else None, C_base, coef_base, dtype, batch_size)
    tdt = _resolve_dtype(dtype)
    prep = _prepare(H, coef, C, tail, targets, C_base, coef_base, tdt, device or "cpu")
    N, d, n = prep.N, prep.d, prep.n
    if tail.kind == "none":
        return np.zeros((n, n), dtype=np.dtype(dtype))  # affine tail: zero Hessian, so zero PAS
    s0 = torch.sqrt(prep.s0sq)
    w1 = 1.0 / (d * s0**3)
    w2 = prep.A * w1
    w3 = prep.A / (d * d * s0**5)
    beta = prep.beta
    extra = None
    if tail.softcap is not None:
        # f(z) = cap tanh(z / cap): Hess f = f'(z) Hess z + f''(z) grad z grad z^T, and
        # grad z . delta_i = alpha_i / s - (a.h) beta_i / (d s^3)
        cap = tail.softcap
        th = torch.tanh(prep.logit / cap)
        f1 = 1.0 - th * th
        f2 = -2.0 / cap * th * f1
        gz = prep.alpha / s0[:, None] - beta * (prep.A / (d * s0**3))[:, None]
        extra = (gz * f2[:, None]).T @ gz
        w1, w2, w3 = w1 * f1, w2 * f1, w3 * f1
    v = prep.alpha * (-w1)[:, None]
    v.add_(beta * (1.5 * w3)[:, None])
    prep.alpha = None  # free (N, n) before the n x n work
    out = torch.empty((n, n), dtype=tdt, device=device or "cpu")
    torch.matmul(v.T, beta, out=out)  # M; the Hessian term is M + M^T
    del v
    starts = list(range(0, n, max(1, int(block))))
    tiles = [(i0, j0) for k, i0 in enumerate(starts) for j0 in starts[k:]]
    cw = prep.coef * w2[:, None]
    if prep.Cbc is not None:
        bw = prep.coef_base * w2[:, None]
    for i0, j0 in tqdm(tiles, desc="Hessian PAS tiles", disable=not progress, leave=False):
        I = slice(i0, min(i0 + block, n))
        J = slice(j0, min(j0 + block, n))
        # sum_x w2 D_ij(x), D = P delta_i . P delta_j
        dterm = (prep.Cc[:, I].T @ prep.Cc[:, J]).mul_(cw[:, I].T @ prep.coef[:, J])
        if prep.Cbc is not None:
            dterm.sub_((prep.Cc[:, I].T @ prep.Cbc[:, J]).mul_(cw[:, I].T @ prep.coef_base[:, J]))
            dterm.sub_((prep.Cbc[:, I].T @ prep.Cc[:, J]).mul_(bw[:, I].T @ prep.coef[:, J]))
            dterm.add_((prep.Cbc[:, I].T @ prep.Cbc[:, J]).mul_(bw[:, I].T @ prep.coef_base[:, J]))
        if i0 == j0:
            tile = out[I, J] + out[I, J].T
            tile.sub_(dterm)
            out[I, J] = tile
        else:
            tile = out[I, J] + out[J, I].T
            tile.sub_(dterm)
            out[I, J] = tile
            out[J, I] = tile.T
    if extra is not None:
        out.add_(extra)
    out.div_(N)
    out.fill_diagonal_(0.0)
    return out.cpu().numpy()


def _hessian_autograd(H, coef, C, f, targets, C_base, coef_base, dtype, batch_size) -> np.ndarray:
    """E_x[D_x^T Hess_x D_x] with per-sample autograd Hessians (reference / fallback for any tail)."""
    tdt = _resolve_dtype(dtype)
    Ht = _to_torch(H, tdt)
    N, d = Ht.shape
    cf = _to_torch(coef, tdt)
    n = cf.shape[1]
    Ct = torch.eye(d, dtype=tdt) if C is None else _to_torch(C, tdt)
    if Ct.shape != (d, n) or cf.shape[0] != N:
        raise ValueError(f"shapes disagree: H {tuple(Ht.shape)}, coef {tuple(cf.shape)}, C {tuple(Ct.shape)}:"
                         " need (N, d), (N, n), (d, n)")
    tt = None if targets is None else torch.as_tensor(np.asarray(targets), dtype=torch.long)
    Cb = None if C_base is None else _to_torch(C_base, tdt)
    cbt = None if coef_base is None else _to_torch(coef_base, tdt)
    # Each sample's logit depends on its own row only, so the Hessian of the batch sum is block diagonal:
    # one Hessian-vector product per player with the batch of that player's deltas gives H_x delta_j(x)
    # for every x at once (no vmap, so any torch callable works, numpy-consuming ones included).
    out = torch.zeros((n, n), dtype=torch.float64)
    for b0 in range(0, N, batch_size):
        b = slice(b0, min(b0 + batch_size, N))
        h = Ht[b].clone().requires_grad_(True)
        with torch.enable_grad():
            y = f(h, None if tt is None else tt[b])
            (g,) = torch.autograd.grad(y.sum(), h, create_graph=True)
        if not g.requires_grad:
            continue  # the tail is affine: zero Hessian
        D = Ct[None] * cf[b, None, :]  # (B, d, n)
        if Cb is not None:
            D = D - Cb[None] * cbt[b, None, :]
        if d < n:
            # Fewer HVPs: the d columns of each sample's Hessian (one per basis vector), then H_x D_x by bmm
            # (MiniLM: d = 384 against n = 1,536 players, 4x fewer double-backward passes).
            Hx = torch.empty((h.shape[0], d, d), dtype=h.dtype)
            for k in range(d):
                e = torch.zeros_like(h)
                e[:, k] = 1.0
                (hv,) = torch.autograd.grad(g, h, grad_outputs=e, retain_graph=k < d - 1, allow_unused=True)
                Hx[:, :, k] = 0.0 if hv is None else hv
            HD = torch.bmm(Hx, D)
        else:
            HD = torch.empty_like(D)
            for j in range(n):
                (hv,) = torch.autograd.grad(g, h, grad_outputs=D[:, :, j], retain_graph=j < n - 1,
                                            allow_unused=True)
                HD[:, :, j] = 0.0 if hv is None else hv
        out += torch.einsum("bdi,bdj->ij", D, HD).double()
    out /= N
    out.fill_diagonal_(0.0)
    return out.numpy().astype(np.dtype(dtype), copy=False)


# ---------------------------------------------------------------------------------------------------
# brute force (reference for tests, any callable tail)
# ---------------------------------------------------------------------------------------------------


def _deltas(coef: np.ndarray, C: np.ndarray | None, C_base=None, coef_base=None) -> np.ndarray:
    """Per-sample ablation vectors delta (N, n, d)."""
    coef = np.asarray(coef)
    Cm = np.eye(coef.shape[1]) if C is None else np.asarray(C)
    D = coef[:, :, None] * Cm.T[None]
    if C_base is not None:
        D = D - np.asarray(coef_base)[:, :, None] * np.asarray(C_base).T[None]
    return D


def brute_force_pas(H, coef, C, tail, targets=None, *, C_base=None,
                    coef_base=None) -> tuple[np.ndarray, np.ndarray]:
    """Reference PAS and psi from ``tail.logit(H - delta_i - delta_j)`` for every pair (small n only)."""
    H = np.asarray(H, dtype=np.float64)
    D = _deltas(coef, C, C_base, coef_base)
    n = D.shape[1]
    logit = tail.logit if isinstance(tail, NormTail) else tail
    l0 = logit(H, targets)
    li = np.stack([logit(H - D[:, i], targets) for i in range(n)], 1)
    phi = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            lij = logit(H - D[:, i] - D[:, j], targets)
            phi[i, j] = phi[j, i] = np.mean(l0 - li[:, i] - li[:, j] + lij)
    return phi, np.mean(l0[:, None] - li, 0)
