"""Mean absolute Jacobian of a residual block, for tracking at residual sites (MNIST).

The only part of ``tracking`` that imports torch: the Jacobian of h_{l+1} = block(h_l) with respect to
h_l is taken per sample with ``torch.func.jacrev`` vectorised by ``vmap``, on a sample subset, in
chunks, and its absolute value averaged.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.func import functional_call, jacrev, vmap

__all__ = ["residual_jacobian_abs"]

log = logging.getLogger(__name__)


def residual_jacobian_abs(
    block: torch.nn.Module, H: np.ndarray | torch.Tensor, *, max_samples: int = 256, batch_size: int = 32,
    random_state: int = 0,
) -> np.ndarray:
    """E_x |d h_{l+1} / d h_l| as a (d', d) float64 array, over at most ``max_samples`` rows of H (N, d).

    ``block`` maps a batch (B, d) of h_l to (B, d') of h_{l+1} (for a residual block that includes the
    skip connection, so the identity is part of the Jacobian). Samples beyond ``max_samples`` are
    subsampled without replacement with ``random_state``.
    """
    H = torch.as_tensor(np.asarray(H) if not isinstance(H, torch.Tensor) else H)
    if H.ndim != 2 or H.shape[0] == 0:
        raise ValueError(f"H must be (samples, d) with at least one sample; got shape {tuple(H.shape)}")
    if H.shape[0] > max_samples:
        idx = np.sort(np.random.default_rng(random_state).choice(H.shape[0], max_samples, replace=False))
        H = H[torch.as_tensor(idx)]
    try:
        dtype = next(block.parameters()).dtype
    except StopIteration:
        dtype = torch.float32
    H = H.to(dtype)
    params = {k: v.detach() for k, v in block.named_parameters()}
    buffers = {k: v.detach() for k, v in block.named_buffers()}

    def f(h: torch.Tensor) -> torch.Tensor:  # one sample (d,) -> (d',)
        return functional_call(block, (params, buffers), (h[None, :],))[0]

    jac = vmap(jacrev(f))
    total = None
    was_training = block.training
    block.eval()
    try:
        with torch.no_grad():
            for s in range(0, H.shape[0], batch_size):
                J = jac(H[s:s + batch_size]).abs().sum(dim=0, dtype=torch.float64)  # (d', d)
                total = J if total is None else total + J
    finally:
        block.train(was_training)
    log.debug("mean |Jacobian| over %d samples: shape %s", H.shape[0], tuple(total.shape))
    return (total / H.shape[0]).numpy()
