"""The layer-local logit: the model's final norm and task head applied to a cached residual.

`NormTail` is the scalar readout l(h) = head(final_norm(h)) used by PAS (paper eq. 6-7). The final norm
is what makes PAS non-zero: with ``kind="none"`` the tail is affine in h and every
pairwise ablation effect vanishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

KINDS = ("rms", "layer", "none")


@dataclass
class NormTail:
    """head(final_norm(h)) at one position: RMSNorm, LayerNorm or no norm, then a linear head.

    ``kind``: "rms" (``h / sqrt(mean(h^2) + eps) * weight``), "layer"
    (``(h - mean) / sqrt(var + eps) * weight + bias``) or "none" (``h * weight + bias``: no
    normalisation, the affine part only; identity when weight and bias are None).
    ``head_w`` (d,) gives one logit; (K, d) gives K and ``targets`` picks one per sample.
    ``softcap`` (Gemma-2's final logit soft-capping): the logit z becomes cap * tanh(z / cap).
    """

    kind: str
    head_w: np.ndarray
    head_b: Any = 0.0
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    eps: float = 1e-5
    softcap: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"NormTail kind {self.kind!r} is unknown: use one of {KINDS}")
        self.head_w = np.asarray(self.head_w)
        if self.head_w.ndim not in (1, 2):
            raise ValueError(
                f"NormTail head_w has shape {self.head_w.shape}: give a (d,) vector or a (K, d) matrix"
            )
        d = self.d
        if self.head_w.ndim == 2:
            hb = np.zeros(self.head_w.shape[0]) if self.head_b is None else np.asarray(self.head_b)
            if hb.ndim == 0:
                hb = np.full(self.head_w.shape[0], float(hb))
            if hb.shape != (self.head_w.shape[0],):
                raise ValueError(
                    f"NormTail head_b has shape {hb.shape} for a head of {self.head_w.shape[0]} classes: "
                    "give a (K,) vector or a scalar"
                )
            self.head_b = hb
        else:
            self.head_b = 0.0 if self.head_b is None else float(np.asarray(self.head_b).reshape(()))
        for name in ("weight", "bias"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v)
                if v.shape != (d,):
                    raise ValueError(f"NormTail {name} has shape {v.shape}: it must be ({d},) like the head")
                setattr(self, name, v)
        if self.kind == "rms" and self.bias is not None:
            raise ValueError("NormTail kind 'rms' takes no bias: pass bias=None (RMSNorm has none)")
        self.eps = float(self.eps)
        if self.softcap is not None:
            self.softcap = float(self.softcap)
            if not self.softcap > 0:
                raise ValueError(f"NormTail softcap must be positive (or None), got {self.softcap}")

    @property
    def d(self) -> int:
        """Residual width."""
        return int(self.head_w.shape[-1])

    @property
    def n_classes(self) -> int | None:
        """K for a (K, d) head, None for a vector head."""
        return int(self.head_w.shape[0]) if self.head_w.ndim == 2 else None

    def check_targets(self, targets: Any, n_samples: int) -> np.ndarray | None:
        """Validate per-sample targets for a (K, d) head (None for a vector head)."""
        if self.head_w.ndim == 1:
            return None
        if targets is None:
            raise ValueError(
                f"this NormTail has a ({self.n_classes}, {self.d}) head: pass targets (one class per sample) "
                "to pick the logit to read"
            )
        t = np.asarray(targets)
        if t.shape != (n_samples,) or not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"targets must be integers of shape ({n_samples},): got {t.dtype} {t.shape}")
        if t.size and (t.min() < 0 or t.max() >= self.n_classes):
            raise ValueError(f"targets must lie in [0, {self.n_classes}); got {t.min()}..{t.max()}")
        return t.astype(np.int64)

    # ---- the readout as a linear functional of the (centred) normalised state ----------------------

    def readout(self, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
        """Per-class folded readout vectors u = weight * head_w (K', d) and constants (K',).

        l(h) = u_t . norm0(h) + c_t, where norm0 is the norm without its affine part. With a vector
        head K' = 1 and every sample uses row 0.
        """
        W = np.atleast_2d(self.head_w).astype(dtype)
        u = W * (self.weight.astype(dtype) if self.weight is not None else 1.0)
        c = np.atleast_1d(np.asarray(self.head_b, dtype=dtype)).copy()
        if self.bias is not None:
            c = c + W @ self.bias.astype(dtype)
        return u, c

    def target_index(self, targets: Any, n_samples: int) -> np.ndarray:
        """Row of `readout` used by each sample (zeros for a vector head)."""
        t = self.check_targets(targets, n_samples)
        return np.zeros(n_samples, dtype=np.int64) if t is None else t

    # ---- evaluation -----------------------------------------------------------------------------

    def logit(self, H: np.ndarray, targets: Any = None) -> np.ndarray:
        """Local logit l(h) for each row of H (N, d) -> (N,), in H's float precision (float32 at least)."""
        H = np.asarray(H)
        if H.ndim == 1:
            H = H[None]
        if H.ndim != 2 or H.shape[1] != self.d:
            raise ValueError(f"H has shape {H.shape}: expected (N, {self.d}) residual states")
        dtype = np.float64 if H.dtype == np.float64 else np.float32
        H = H.astype(dtype, copy=False)
        z = self._norm_np(H)
        if self.head_w.ndim == 1:
            out = z @ self.head_w.astype(dtype) + dtype(self.head_b)
        else:
            t = self.check_targets(targets, H.shape[0])
            W = self.head_w.astype(dtype)
            out = np.einsum("nd,nd->n", z, W[t]) + self.head_b.astype(dtype)[t]
        if self.softcap is not None:
            out = dtype(self.softcap) * np.tanh(out / dtype(self.softcap))
        return out

    def _norm_np(self, H: np.ndarray) -> np.ndarray:
        dtype = H.dtype
        if self.kind == "rms":
            z = H / np.sqrt(np.mean(H * H, axis=1, keepdims=True) + self.eps)
        elif self.kind == "layer":
            Hc = H - H.mean(axis=1, keepdims=True)
            z = Hc / np.sqrt(np.mean(Hc * Hc, axis=1, keepdims=True) + self.eps)
        else:
            z = H
        if self.weight is not None:
            z = z * self.weight.astype(dtype)
        if self.bias is not None:
            z = z + self.bias.astype(dtype)
        return z

    def logit_torch(self, H: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable torch version of `logit` (H (B, d) -> (B,)), for autograd checks."""
        dtype, dev = H.dtype, H.device
        if self.kind == "rms":
            z = H * torch.rsqrt(H.pow(2).mean(-1, keepdim=True) + self.eps)
        elif self.kind == "layer":
            Hc = H - H.mean(-1, keepdim=True)
            z = Hc * torch.rsqrt(Hc.pow(2).mean(-1, keepdim=True) + self.eps)
        else:
            z = H
        if self.weight is not None:
            z = z * torch.as_tensor(self.weight, dtype=dtype, device=dev)
        if self.bias is not None:
            z = z + torch.as_tensor(self.bias, dtype=dtype, device=dev)
        W = torch.as_tensor(self.head_w, dtype=dtype, device=dev)
        if self.head_w.ndim == 1:
            out = z @ W + float(self.head_b)
        else:
            if targets is None:
                raise ValueError("this NormTail has a (K, d) head: pass targets to logit_torch")
            t = torch.as_tensor(targets, dtype=torch.long, device=dev)
            out = (z * W[t]).sum(-1) + torch.as_tensor(self.head_b, dtype=dtype, device=dev)[t]
        if self.softcap is not None:
            out = self.softcap * torch.tanh(out / self.softcap)
        return out

    # ---- construction from torch modules ----------------------------------------------------------

    @classmethod
    def from_modules(cls, norm: torch.nn.Module | None, head: torch.nn.Module | Any, kind: str | None = None,
                     row: int | None = None, rows: Any = None, softcap: float | None = None) -> NormTail:
        """Build from a model's final norm module (LayerNorm / RMSNorm of either parametrisation / None) and
        linear head.

        The norm's formula is found by running the module on random inputs (`norm_params`): RMSNorm with
        gain ``w`` or ``1 + w`` (Gemma), LayerNorm; anything else raises a ValueError naming the module, never
        a silently wrong tail. ``row`` keeps a single row of a (K, d) head (one logit of a 1-label reranker);
        ``rows`` keeps those rows only, as a (len(rows), d) head (a language model's next tokens: the rows are
        taken before the float64 copy, never the whole vocabulary). ``softcap``: see the class.
        """
        if norm is None:
            kind = kind or "none"
            weight = bias = None
            eps = 0.0
        else:
            kind_found, weight, bias, eps = norm_params(norm)
            if kind is not None and kind != kind_found:
                raise ValueError(f"{type(norm).__name__} behaves as kind {kind_found!r}, not {kind!r}: drop kind=")
            kind = kind_found
        W = head.weight.detach()
        hb = getattr(head, "bias", None)
        hb = None if hb is None else hb.detach()
        if rows is not None:
            r = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=W.device)
            W = W[r]
            hb = None if hb is None else hb[r]
        hw = W.double().cpu().numpy()
        hb = np.zeros(hw.shape[0]) if hb is None else hb.double().cpu().numpy()
        if row is not None:
            hw, hb = hw[row], float(hb[row])
        return cls(kind=kind, head_w=hw, head_b=hb, weight=weight, bias=bias, eps=float(eps), softcap=softcap)


def norm_params(norm: torch.nn.Module) -> tuple[str, np.ndarray | None, np.ndarray | None, float]:
    """(kind, effective gain, bias, eps) of a norm module, found by evaluating it (not from its class name).

    Candidates: RMSNorm ``x / rms * g`` with g = weight, 1 + weight (Gemma) or 1, and LayerNorm
    ``(x - mean) / sd * weight + bias``; the one that reproduces the module's output on random inputs (to
    float32 precision: HF norms compute in float32) is returned with the effective gain g. A module that
    matches none raises ValueError naming it.
    """
    w = getattr(norm, "weight", None)
    b = getattr(norm, "bias", None)
    eps = getattr(norm, "eps", None)
    if eps is None:
        eps = getattr(norm, "variance_epsilon", None)
    if eps is None:
        eps = 1e-6
    if isinstance(eps, (tuple, list)):
        eps = eps[0]
    eps = float(eps)
    if w is not None and w.ndim != 1:
        raise ValueError(f"norm module {type(norm).__name__} is neither an RMSNorm nor a LayerNorm (a {tuple(w.shape)} "
                         "weight): write an adapter whose tail builds it by hand (docs/models.md)")
    p = next(norm.parameters(), None)
    shape = getattr(norm, "normalized_shape", None)
    d = int(w.shape[-1]) if w is not None else (int(shape[-1]) if shape else None)
    if d is None:
        raise ValueError(f"norm {type(norm).__name__} has no weight: build its NormTail by hand")
    wv = np.ones(d) if w is None else w.detach().double().cpu().numpy().reshape(-1)
    bv = None if b is None else b.detach().double().cpu().numpy().reshape(-1)
    gen = torch.Generator().manual_seed(0)
    # inputs with a non-zero mean and rms ~ 3: eps matters little, the parametrisation a lot
    x = (torch.randn(4, d, generator=gen, dtype=torch.float64) * 3 + 0.5)
    with torch.no_grad():
        y = norm(x.to(p.dtype if p is not None else torch.float64)).double().cpu().numpy()
    xn = x.numpy()
    rms = xn / np.sqrt(np.mean(xn * xn, 1, keepdims=True) + eps)
    xc = xn - xn.mean(1, keepdims=True)
    ln = xc / np.sqrt(np.mean(xc * xc, 1, keepdims=True) + eps)
    cands = [("rms", rms, wv, None), ("rms", rms, 1.0 + wv, None), ("rms", rms, np.ones(d), None),
             ("layer", ln, wv, bv), ("layer", ln, np.ones(d), bv)]
    scale = max(float(np.abs(y).max()), 1e-30)
    for kind, z, g, bb in cands:
        pred = z * g + (0.0 if bb is None else bb)
        if np.abs(pred - y).max() <= 1e-4 * scale:
            if kind == "rms" and bv is not None and np.abs(bv).max() > 0:
                continue
            return kind, g.copy(), (None if kind == "rms" else bb), eps
    raise ValueError(
        f"norm module {type(norm).__name__} is neither an RMSNorm (gain w or 1 + w) nor a LayerNorm on random "
        "inputs: write an adapter whose tail builds it by hand (docs/models.md)"
    )
