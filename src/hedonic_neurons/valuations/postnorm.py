"""Post-norm blocks: the MLP output is normalised before the residual add (Gemma-2/3, OLMo-2).

The layer computes h = r + post(m), m = W_down g the MLP output, post an RMSNorm (gain w or 1 + w) or a
LayerNorm; the local logit is l = head(final_norm(h)). An ablation changes m (m -> m - delta_S), so the
players' deltas act on m, not on h, and the tail depends on each sample's r. `PostNormTail` is that tail
(rows are indexed by sample: ``targets`` passed to it are sample ids, the class targets live inside it),
and `exact_pas_postnorm` evaluates exact PAS over all pairs in O(N n^2) from Gram-type quantities
(derivation in docs/valuations.md, "Exact PAS for post-norm blocks").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hedonic_neurons.valuations.pas import PASResult
from hedonic_neurons.valuations.tail import NormTail

__all__ = ["PostNormTail", "exact_pas_postnorm"]


@dataclass
class PostNormTail:
    """l(m, x) = final(R[x] + post(m)): post-MLP norm, residual add, final norm and head, per sample x.

    ``post_kind`` "rms" (m / rms(m) * post_weight) or "layer" (centred, + post_bias); ``R`` (N, d) the rest
    of the layer output (h_l - post(m)); ``final`` a `NormTail` (final norm + head); ``class_targets`` (N,)
    for a (K, d) head. ``logit(M, ids)`` takes sample ids (the `LayerCache` passes arange(N) as targets).
    """

    post_kind: str
    post_weight: np.ndarray
    post_eps: float
    R: np.ndarray
    final: NormTail
    post_bias: np.ndarray | None = None
    class_targets: np.ndarray | None = None
    kind = "postnorm"
    sample_indexed = True

    def __post_init__(self) -> None:
        if self.post_kind not in ("rms", "layer"):
            raise ValueError(f"post_kind {self.post_kind!r} is unknown: use 'rms' or 'layer'")
        self.R = np.asarray(self.R)
        if self.R.ndim != 2 or self.R.shape[1] != self.final.d:
            raise ValueError(f"R has shape {self.R.shape}: expected (N, {self.final.d})")
        if self.final.n_classes is not None and self.class_targets is None:
            raise ValueError(f"the head has {self.final.n_classes} classes: pass class_targets (one per sample)")

    @property
    def d(self) -> int:
        return self.final.d

    @property
    def n_classes(self) -> int | None:
        return None  # classes are resolved inside, per sample id

    def _ids(self, ids: Any, rows: int) -> np.ndarray:
        if ids is None:
            if rows != self.R.shape[0]:
                raise ValueError(f"{rows} rows for {self.R.shape[0]} samples: pass the sample ids as targets")
            return np.arange(rows)
        return np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)

    def logit_torch(self, M: torch.Tensor, ids: Any = None) -> torch.Tensor:
        """Differentiable local logit of each row of M (rows: MLP outputs of samples `ids`)."""
        ids = self._ids(ids, M.shape[0])
        dt, dev = M.dtype, M.device
        X = M - M.mean(-1, keepdim=True) if self.post_kind == "layer" else M
        q = X * torch.rsqrt(X.pow(2).mean(-1, keepdim=True) + self.post_eps)
        q = q * torch.as_tensor(self.post_weight, dtype=dt, device=dev)
        if self.post_bias is not None:
            q = q + torch.as_tensor(self.post_bias, dtype=dt, device=dev)
        h = torch.as_tensor(self.R, dtype=dt, device=dev)[torch.as_tensor(ids, device=dev)] + q
        t = None if self.class_targets is None else torch.as_tensor(np.asarray(self.class_targets)[ids], device=dev)
        return self.final.logit_torch(h, t)

    @torch.no_grad()
    def logit(self, M: Any, ids: Any = None) -> np.ndarray:
        Mt = M if isinstance(M, torch.Tensor) else torch.as_tensor(np.asarray(M))
        if Mt.ndim == 1:
            Mt = Mt[None]
        if not Mt.is_floating_point() or Mt.dtype in (torch.float16, torch.bfloat16):
            Mt = Mt.float()
        return self.logit_torch(Mt, ids).cpu().numpy()

    def __repr__(self) -> str:
        return (f"PostNormTail(post={self.post_kind}, final={self.final.kind}, d={self.d}, "
                f"N={self.R.shape[0]})")


def exact_pas_postnorm(
    H: np.ndarray,
    coef: np.ndarray,
    C: np.ndarray,
    tail: PostNormTail,
    targets: Any = None,
    *,
    C_base: np.ndarray | None = None,
    coef_base: np.ndarray | None = None,
    block: int = 128,
    batch_size: int | None = None,
    progress: bool = True,
    **_: Any,
) -> PASResult:
    """Exact PAS over all pairs for a `PostNormTail`, float64, O(N n^2) after a few n x n Gram products.

    With P1 / P2 the centring of the post / final norm (identity for RMSNorm), M = P2 diag(g1) P1 and
    u the folded head row, removing S (delta_S = sum of delta_i) gives
        s1'^2 = s1^2 + (|P1 delta_S|^2 - 2 P1 m . P1 delta_S) / d,   t = 1 / s1'
        num = A + (B - u.M delta_S) t,   A = u.P2 r~, B = u.M m,   r~ = R + post bias
        |P2 h'|^2 = |P2 r~|^2 + 2 (P2 r~ . M m - P2 r~ . M delta_S) t + |M m - M delta_S|^2 t^2
        l_-S = num / sqrt(|P2 h'|^2 / d + eps2) + c
    and for a pair every term is a per-player scalar plus one of two Gram terms, P1 delta_i . P1 delta_j
    and M delta_i . M delta_j. `targets` must be None or arange(N) (sample ids).
    """
    f64 = torch.float64
    Hm = torch.as_tensor(np.asarray(H), dtype=f64)
    N, d = Hm.shape
    cf = torch.as_tensor(np.asarray(coef), dtype=f64)
    n = cf.shape[1]
    Ct = torch.as_tensor(np.asarray(C), dtype=f64)
    if Ct.shape != (d, n) or cf.shape[0] != N or tail.R.shape[0] != N:
        raise ValueError(f"shapes disagree: H {tuple(Hm.shape)}, coef {tuple(cf.shape)}, C {tuple(Ct.shape)}, "
                         f"R {tail.R.shape}: need (N, d), (N, n), (d, n), (N, d)")
    if targets is not None and not np.array_equal(np.asarray(targets).reshape(-1), np.arange(N)):
        raise ValueError("a PostNormTail's targets are the sample ids 0..N-1 (rows in cache order)")
    Cb = None if C_base is None else torch.as_tensor(np.asarray(C_base), dtype=f64)
    cb = None if coef_base is None else torch.as_tensor(np.asarray(coef_base), dtype=f64)
    fin = tail.final
    g1 = torch.as_tensor(tail.post_weight, dtype=f64)
    b1 = None if tail.post_bias is None else torch.as_tensor(tail.post_bias, dtype=f64)
    eps1 = tail.post_eps
    norm2 = fin.kind != "none"
    eps2 = fin.eps

    def P1(X: torch.Tensor, dim: int) -> torch.Tensor:
        return X - X.mean(dim, keepdim=True) if tail.post_kind == "layer" else X

    def P2(X: torch.Tensor, dim: int) -> torch.Tensor:
        return X - X.mean(dim, keepdim=True) if fin.kind == "layer" else X

    def Mop(X: torch.Tensor, dim: int) -> torch.Tensor:  # M = P2 diag(g1) P1, along `dim` = the d axis
        shape = [1, 1]
        shape[dim] = d
        return P2(P1(X, dim) * g1.view(shape), dim)

    u, c = fin.readout(np.float64)
    t_idx = np.zeros(N, dtype=np.int64) if fin.n_classes is None else np.asarray(tail.class_targets, np.int64)
    U = P2(torch.as_tensor(u, dtype=f64), 1)[torch.as_tensor(t_idx)]  # (N, d) per-sample readout row
    Rt = torch.as_tensor(np.asarray(tail.R), dtype=f64)
    if b1 is not None:
        Rt = Rt + b1
    R2v = P2(Rt, 1)
    m1 = P1(Hm, 1)
    s1sq = (m1 * m1).sum(1) / d + eps1
    Mm = Mop(Hm, 1)
    A = (U * R2v).sum(1)
    B = (U * Mm).sum(1)
    RR = (R2v * R2v).sum(1)
    RM = (R2v * Mm).sum(1)
    MM = (Mm * Mm).sum(1)
    PC = P1(Ct, 0)
    MC = Mop(Ct, 0)
    PCb = None if Cb is None else P1(Cb, 0)
    MCb = None if Cb is None else Mop(Cb, 0)

    def per_player(vec_rows: torch.Tensor, X: torch.Tensor, Xb: torch.Tensor | None) -> torch.Tensor:
        """(N, n): row vector of each sample . delta_i, delta_i = coef_i X_i - cb_i Xb_i."""
        out = (vec_rows @ X) * cf
        if Xb is not None:
            out -= (vec_rows @ Xb) * cb
        return out

    def sq(X: torch.Tensor, Xb: torch.Tensor | None) -> torch.Tensor:
        out = cf * cf * (X * X).sum(0)
        if Xb is not None:
            out = out - 2 * cf * cb * (X * Xb).sum(0) + cb * cb * (Xb * Xb).sum(0)
        return out

    beta1 = per_player(m1, PC, PCb)
    gam1 = sq(PC, PCb)
    a = per_player(U, MC, MCb)
    rho = per_player(R2v, MC, MCb)
    mu = per_player(Mm, MC, MCb)
    nu = sq(MC, MCb)
    G1, G2 = PC.T @ PC, MC.T @ MC
    if Cb is not None:
        G1cb, G1bb, G2cb, G2bb = PC.T @ PCb, PCb.T @ PCb, MC.T @ MCb, MCb.T @ MCb

    cap = fin.softcap
    cvec = torch.as_tensor(c, dtype=f64)[torch.as_tensor(t_idx)]  # the head's constant per sample (for the cap)

    def logit(e1, aS, rhoS, muS, nuS, s1sq_, A_, B_, RR_, RM_, MM_, c_=None):
        t = torch.rsqrt(s1sq_ + e1 / d)
        num = A_ + (B_ - aS) * t
        if norm2:
            hh = RR_ + 2 * (RM_ - rhoS) * t + (MM_ - 2 * muS + nuS) * t * t
            num = num * torch.rsqrt(hh / d + eps2)
        if cap is None:
            return num
        return cap * torch.tanh((num + c_) / cap)  # Gemma-2's final soft-capping of the whole logit

    z = torch.zeros(N, dtype=f64)
    l0 = logit(z, z, z, z, z, s1sq, A, B, RR, RM, MM, cvec)
    e_single = gam1 - 2 * beta1
    li = logit(e_single, a, rho, mu, nu, *(x[:, None] for x in (s1sq, A, B, RR, RM, MM, cvec)))
    single = l0[:, None] - li
    psi = single.mean(0).numpy()
    psi_se = (single.std(0, unbiased=True) / math.sqrt(N)).numpy() if N > 1 else np.full(n, np.nan)

    block = max(1, min(int(block), n))
    if batch_size is None:
        batch_size = max(1, (1 << 17) // (block * block))
    starts = list(range(0, n, block))
    tiles = [(i0, j0) for k, i0 in enumerate(starts) for j0 in starts[k:]]
    acc = torch.zeros((n, n), dtype=f64)
    acc2 = torch.zeros((n, n), dtype=f64)
    for i0, j0 in tqdm(tiles, desc="exact PAS tiles (post-norm)", disable=not progress, leave=False):
        I = slice(i0, min(i0 + block, n))
        J = slice(j0, min(j0 + block, n))
        s1 = torch.zeros((I.stop - I.start, J.stop - J.start), dtype=f64)
        s2 = torch.zeros_like(s1)
        for b0 in range(0, N, batch_size):
            b = slice(b0, min(b0 + batch_size, N))
            D1 = _pair_gram(cf, cb, b, I, J, G1, G1cb if Cb is not None else None, G1bb if Cb is not None else None)
            D2 = _pair_gram(cf, cb, b, I, J, G2, G2cb if Cb is not None else None, G2bb if Cb is not None else None)

            def pi(x, b=b, I=I):
                return x[b, I][:, :, None]

            def pj(x, b=b, J=J):
                return x[b, J][:, None, :]

            def sc(x, b=b):
                return x[b][:, None, None]

            e1 = pi(e_single) + pj(e_single) + 2 * D1
            lij = logit(e1, pi(a) + pj(a), pi(rho) + pj(rho), pi(mu) + pj(mu), pi(nu) + pj(nu) + 2 * D2,
                        sc(s1sq), sc(A), sc(B), sc(RR), sc(RM), sc(MM), sc(cvec))
            delta = sc(l0) - pi(li) - pj(li) + lij
            s1 += delta.sum(0)
            s2 += (delta * delta).sum(0)
        acc[I, J] = s1
        acc2[I, J] = s2
        if i0 != j0:
            acc[J, I] = s1.T
            acc2[J, I] = s2.T
    phi = acc / N
    if N > 1:
        se = (acc2 - N * phi * phi).clamp(min=0.0).div((N - 1) * N).sqrt()
    else:
        se = torch.full_like(acc2, float("nan"))
    phi.fill_diagonal_(0.0)
    se.fill_diagonal_(0.0)
    logit_mean = float((l0 if cap is not None else l0 + cvec).mean())
    return PASResult(phi.numpy(), se.numpy(), psi, psi_se, N, logit_mean, "postnorm", "float64")


def _pair_gram(cf, cb, b, I, J, G, Gcb, Gbb) -> torch.Tensor:
    """(B, |I|, |J|) Gram term delta_i . delta_j under G's geometry, with the C_base blocks when present."""
    ci, cj = cf[b, I][:, :, None], cf[b, J][:, None, :]
    D = ci * cj * G[I, J]
    if Gcb is not None:
        bi, bj = cb[b, I][:, :, None], cb[b, J][:, None, :]
        D = D - ci * bj * Gcb[I, J] - bi * cj * Gcb[J, I].T + bi * bj * Gbb[I, J]
    return D
