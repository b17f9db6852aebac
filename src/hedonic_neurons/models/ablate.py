"""Coalition ablation through the rest of a model: the one mechanism behind every extrinsic metric.

- `ablate_channels`: a set of MLP channels ablated inside a full forward pass (every token, every later
  layer sees it), with the semantics of `LayerCache` (revert the channels' LoRA change, or zero / mean
  them), as a hook on the layer's down projection. Several coalitions can share one forward pass: give a
  (B, n) boolean mask, one row per (replicated) input.
- `ablation_scores` (`CoalitionAblator`): many coalitions per pass through `ablate_channels`, the layers
  before the ablated one replayed from a cache (the reranker's OOD drop).
- `residual_ablation_logits`: coordinates of a cached residual h_l zeroed (or set to their mean) and the
  edit propagated through the later blocks with `forward_from` (the MNIST net's dAcc and loss deltas).

What to score from the outputs (task metric, accuracy, cross-entropy) is for the caller (`metrics`).

    with ablate_channels(model, layer=10, channels=[3, 17, 42]):
        logits = model(**batch).logits
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .adapters import get_adapter
from .lora import base_weight, merged_weight

__all__ = ["ablate_channels", "CoalitionAblator", "ablation_scores", "residual_ablation_logits"]


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


class CoalitionAblator:
    """Scores of the model with coalitions' LoRA reverted at one MLP layer, many coalitions per pass.

    Reverting channel i's LoRA change at layer l, for every token (`ablate_channels`, "auto": LoRA revert
    where the MLP has LoRA), one mask row per replicated input. Layers before l are not re-run: their
    output is cached once per batch of inputs and replayed (a patched forward that returns the cached,
    repeated hidden states), so each ablated pass costs only layers l..L.
    """

    chunk = 8

    def __init__(self, model: torch.nn.Module, layer: int):
        self.model = model
        self.ad = get_adapter(model)
        self.layer = self.ad.check_layer(int(layer), "mlp")
        self.layers = self.ad.module(self.ad.layers_prefix)

    def _cache_prefix(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(unablated scores, output of layer l - 1 or None when l = 0) of one batch."""
        store: dict[str, Any] = {}
        handle = None
        if self.layer > 0:
            def grab(mod, args, out):
                store["h"] = out

            handle = self.layers[self.layer - 1].register_forward_hook(grab)
        try:
            with torch.no_grad():
                logits = self.model(**batch).logits[:, 0]
        finally:
            if handle is not None:
                handle.remove()
        return logits, store.get("h")

    def scores(self, batch: dict, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(unablated (b,), ablated (K, b)) scores of one batch of inputs under K coalition masks (K, n)."""
        base_scores, h_prev = self._cache_prefix(batch)
        b = next(iter(batch.values())).shape[0]
        out = []
        for s in range(0, masks.shape[0], self.chunk):
            M = torch.as_tensor(np.asarray(masks[s:s + self.chunk], dtype=bool))
            K = M.shape[0]
            rep = {k: v.repeat(K, *([1] * (v.ndim - 1))) for k, v in batch.items()}
            with ablate_channels(self.model, self.layer, M.repeat_interleave(b, dim=0)):
                out.append(self._replayed(rep, h_prev, K).reshape(K, b))
        return base_scores.double().cpu().numpy(), torch.cat(out).double().cpu().numpy()

    def _replayed(self, rep: dict, h_prev: torch.Tensor | None, K: int) -> torch.Tensor:
        patched = []
        if h_prev is not None:
            h_rep = h_prev.repeat(K, *([1] * (h_prev.ndim - 1)))
            for j in range(self.layer):
                mod = self.layers[j]
                mod.forward = (lambda *a, _h=h_rep, **k: _h)  # replay: layers < l are not re-run
                patched.append(mod)
        try:
            with torch.no_grad():
                return self.model(**rep).logits[:, 0]
        finally:
            for mod in patched:
                del mod.forward


def ablation_scores(model, tokenizer, texts: list[str], layer: int, masks: np.ndarray, *, batch_size: int = 10,
                    coalition_batch: int = 8, max_length: int = 128, device: str = "cpu",
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(unablated (N,), ablated (K, N)) scores of `texts` with each of K coalition masks (K, n) ablated."""
    ab = CoalitionAblator(model, layer)
    ab.chunk = max(1, int(coalition_batch))
    model.eval()
    base, abl = [], []
    it = range(0, len(texts), batch_size)
    for s in tqdm(it, desc=f"ablations layer {layer}", disable=not progress or bool(os.environ.get("TQDM_DISABLE"))):
        enc = tokenizer(texts[s:s + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(device)
        b0, a0 = ab.scores(dict(enc), masks)
        base.append(b0)
        abl.append(a0)
    return np.concatenate(base), np.concatenate(abl, axis=1)


def _first_block(model, layer: int):
    """The block that reads h_layer first, when it is a gated block whose gate/up we can split; else None."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or layer > len(blocks):
        return None
    b = blocks[layer - 1]
    if all(hasattr(b, a) for a in ("gate", "up", "down")) and b.gate.bias is None and b.up.bias is None:
        return b
    return None


def residual_ablation_logits(model, H: np.ndarray, layer: int, coalitions: Sequence[Sequence[int]], *,
                             mean: np.ndarray | None = None, max_rows: int = 2048, progress: bool = False,
                             desc: str = "ablations") -> tuple[torch.Tensor, Iterator[tuple[int, torch.Tensor]]]:
    """(logits (N, k) of the unablated model, iterator of (first coalition, logits (c, N, k))) with each
    coalition's coordinates of the cached residual `H` (N, d) = h_layer zeroed (or set to `mean` (d,)) and
    the edit propagated through the later blocks (`model.forward_from`, the MNIST net).

    A chunk of c coalitions is one pass of c x N rows, at most `max_rows`: small passes (a few MB per
    tensor) are reused by the allocator instead of being mapped afresh, which measured 30 % faster than
    32k-row passes (system time from page faults dominated those).
    """
    Ht = torch.as_tensor(np.asarray(H, dtype=np.float32))
    N, d = Ht.shape
    fill = None if mean is None else torch.as_tensor(np.asarray(mean, dtype=np.float32))
    with torch.no_grad():
        logits = model.forward_from(Ht, layer)
    masks = torch.zeros((len(coalitions), d), dtype=torch.bool)
    for c, members in enumerate(coalitions):
        idx = torch.as_tensor(np.asarray(members, dtype=np.int64))
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= d):
            raise ValueError(f"coalition {c} has members outside 0..{d - 1}")
        masks[c, idx] = True
    per = max(1, max_rows // N)
    first = _first_block(model, layer)

    @torch.no_grad()
    def chunks() -> Iterator[tuple[int, torch.Tensor]]:
        if first is not None:
            # The first later block's gate/up projections are linear in h: project H once and subtract each
            # coalition's own columns (N x |C| x d_ff work instead of N x d x d_ff per coalition).
            Wg, Wu = first.gate.weight, first.up.weight
            G0, U0 = Ht @ Wg.T, Ht @ Wu.T
        for s in tqdm(range(0, len(coalitions), per), desc=desc, disable=not progress, leave=False):
            m = masks[s:s + per]  # (c, d)
            Hb = Ht.unsqueeze(0).expand(m.shape[0], N, d)
            if fill is None:
                Hb = Hb.masked_fill(m[:, None, :], 0.0)
            else:
                Hb = torch.where(m[:, None, :], fill, Hb)
            if first is None:
                out = model.forward_from(Hb.reshape(-1, d), layer)
            else:
                diff = Ht.unsqueeze(0) - Hb  # (c, N, d): what the ablation removed
                G = torch.empty((m.shape[0], N, Wg.shape[0]))
                U = torch.empty_like(G)
                for c in range(m.shape[0]):
                    cols = torch.nonzero(m[c]).ravel()
                    dc = diff[c][:, cols]
                    G[c] = G0 - dc @ Wg[:, cols].T
                    U[c] = U0 - dc @ Wu[:, cols].T
                h_next = Hb + first.down(F.silu(G) * U)
                out = model.forward_from(h_next.reshape(-1, d), layer + 1)
            yield s, out.view(m.shape[0], N, -1)

    return logits, chunks()
