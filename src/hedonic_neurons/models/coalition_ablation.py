"""Coalition ablation through the rest of a LoRA model, many coalitions per forward pass (the reranker's
OOD drop; moved here from experiments/reranker.py so that the experiment only orchestrates)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm


class CoalitionAblator:
    """Scores of the model with coalitions' LoRA reverted at one MLP layer, many coalitions per pass.

    Reverting channel i's LoRA change at layer l, for every token: g_i -> g_base_i (the rows of the
    up/gate deltas) and the column i of the down projection's LoRA delta dropped. Layers before l are
    not re-run: their output is cached once per batch of inputs and replayed (a patched forward that
    returns the cached, repeated hidden states), so each ablated pass costs only layers l..L.
    """

    def __init__(self, model: torch.nn.Module, layer: int):
        from hedonic_neurons.models import get_adapter

        self.model = model
        self.ad = get_adapter(model)
        self.layer = self.ad.check_layer(int(layer), "mlp")
        self.layers = self.ad.module(self.ad.layers_prefix)
        self.down = self.ad.mlp_modules(self.layer)["down"]
        self.mlp_in = self.ad.module(self.ad.mlp_input_path(self.layer))
        _, dW = self.ad.down_weights(self.layer)
        self.dW = dW

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
            M = torch.as_tensor(masks[s:s + self.chunk], dtype=torch.float32)
            K = M.shape[0]
            rep = {k: v.repeat(K, *([1] * (v.ndim - 1))) for k, v in batch.items()}
            Mr = M.repeat_interleave(b, dim=0)[:, None, :]
            out.append(self._ablated(rep, Mr, h_prev, K).reshape(K, b))
        return base_scores.double().cpu().numpy(), torch.cat(out).double().cpu().numpy()

    chunk = 8

    def _ablated(self, rep: dict, Mr: torch.Tensor, h_prev: torch.Tensor | None, K: int) -> torch.Tensor:
        state: dict[str, torch.Tensor] = {}
        ad, layer = self.ad, self.layer

        def grab_x(mod, args, kwargs):
            state["x"] = args[0] if args else next(iter(kwargs.values()))

        def swap_g(mod, args):
            g = args[0]
            g_base = ad.mlp_activation(layer, state["x"], base=True).to(g.dtype)
            m = Mr.to(g.dtype)
            g2 = g + m * (g_base - g)
            state["g2"] = g2
            return (g2, *args[1:])

        def drop_down_delta(mod, args, out):
            if self.dW is None:
                return out
            return out - torch.nn.functional.linear(state["g2"] * Mr.to(out.dtype), self.dW.to(out.dtype))

        hooks = [self.mlp_in.register_forward_pre_hook(grab_x, with_kwargs=True),
                 self.down.register_forward_pre_hook(swap_g),
                 self.down.register_forward_hook(drop_down_delta)]
        patched = []
        if h_prev is not None:
            h_rep = h_prev.repeat(K, *([1] * (h_prev.ndim - 1)))
            for j in range(layer):
                mod = self.layers[j]
                mod.forward = (lambda *a, _h=h_rep, **k: _h)  # replay: layers < l are not re-run
                patched.append(mod)
        try:
            with torch.no_grad():
                return self.model(**rep).logits[:, 0]
        finally:
            for h in hooks:
                h.remove()
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
