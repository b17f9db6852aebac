"""Ablate a set of MLP channels inside a full forward pass (every token, every later layer sees it).

The same semantics as `LayerCache` (revert the channels' LoRA change, or zero / mean them), applied as
a hook on the layer's down projection, for extrinsic metrics (OOD drop, MNIST accuracy drop). Several
coalitions can share one forward pass: give a (B, n) boolean mask, one row per (replicated) input.

    with ablate_channels(model, layer=10, channels=[3, 17, 42]):
        logits = model(**batch).logits
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .adapters import get_adapter
from .lora import base_weight, merged_weight

__all__ = ["ablate_channels"]


def _mask(channels: Any, n: int) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(channels))
    if m.dtype == torch.bool:
        if m.shape[-1] != n or m.ndim not in (1, 2):
            raise ValueError(f"channel mask has shape {tuple(m.shape)}: use (n={n},) or (batch, n={n})")
        return m
    idx = m.reshape(-1).long()
    if idx.numel() and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"channel indices must lie in 0..{n - 1}")
    out = torch.zeros(n, dtype=torch.bool)
    out[idx] = True
    return out


@contextmanager
def ablate_channels(
    model: nn.Module,
    layer: int,
    channels: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    ablation: str = "auto",
    means: np.ndarray | torch.Tensor | None = None,
) -> Iterator[None]:
    """Within the block, the MLP channels `channels` of `layer` are ablated in every forward pass.

    ``ablation``: "lora" (channel activations back to their base values, their down-projection LoRA
    columns removed), "zero", "mean" (needs `means`, the (n,) mean activations), or "auto" (lora when
    the layer's MLP has LoRA, else zero). `channels`: indices, an (n,) mask, or a (B, n) mask per row.
    """
    adapter = get_adapter(model)
    layer = adapter.check_layer(layer, "mlp")
    lora = adapter.has_lora(layer)
    if ablation == "auto":
        ablation = "lora" if lora else "zero"
    if ablation not in ("lora", "zero", "mean"):
        raise ValueError(f"ablation {ablation!r} is unknown: use 'auto', 'lora', 'zero' or 'mean'")
    if ablation == "lora" and not lora:
        raise ValueError(f"ablation='lora' needs LoRA on the MLP of layer {layer}: use 'zero' or 'mean'")
    if ablation == "mean" and means is None:
        raise ValueError("ablation='mean' needs means= (the channels' mean activations, e.g. cache.acts.mean(0))")
    n = adapter.d_ff(layer)
    mask = _mask(channels, n)
    down = adapter.mlp_modules(layer)["down"]
    from .placement import onloaded

    with onloaded(adapter.model, down):  # weights offloaded by a device_map are read while loaded
        W = merged_weight(down).clone()
        Wb = base_weight(down).clone() if ablation == "lora" else None
    mu = None if means is None else torch.as_tensor(np.asarray(means)).reshape(-1)
    store: dict[str, torch.Tensor] = {}

    def mlp_pre(m, args, kwargs):
        x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        store["g_base"] = adapter.mlp_activation(layer, x, base=True)

    def down_fwd(m, args, out):
        g = args[0]
        mk = mask.to(g.device)
        if mk.ndim == 2:
            if mk.shape[0] != g.shape[0]:
                raise ValueError(f"channel mask has {mk.shape[0]} rows but the batch has {g.shape[0]} inputs")
            mk = mk.view(mk.shape[0], *([1] * (g.ndim - 2)), n)
        mk = mk.to(g.dtype)
        Wd = W.to(device=g.device, dtype=g.dtype)
        if ablation == "lora":
            return out - F.linear(g * mk, Wd) + F.linear(store.pop("g_base") * mk, Wb.to(g.device, g.dtype))
        if ablation == "zero":
            return out - F.linear(g * mk, Wd)
        return out - F.linear((g - mu.to(g.device, g.dtype)) * mk, Wd)

    handles = [down.register_forward_hook(down_fwd)]
    if ablation == "lora":
        handles.append(adapter.module(adapter.mlp_input_path(layer)).register_forward_pre_hook(
            mlp_pre, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
