"""Functional importance by ablation (paper appendix I.3 and I.6 (1)): the scores.

A coalition C of layer h_l is ablated by zeroing its coordinates of the residual h_l and propagating the
edited residual through the later blocks to the logits; the mechanism (many coalitions per forward pass)
is `models.ablate.residual_ablation_logits`, the one home of coalition ablation. Here: accuracy and
cross-entropy of those logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from hedonic_neurons.models.ablate import residual_ablation_logits


@torch.no_grad()
def ablation_effects(model, H: np.ndarray, layer: int, y: np.ndarray, coalitions: Sequence[Sequence[int]],
                     *, mean: np.ndarray | None = None, max_rows: int = 2048, progress: bool = False,
                     desc: str = "ablations") -> dict[str, np.ndarray]:
    """Accuracy and mean cross-entropy with each coalition ablated, plus the unablated baseline.

    `H` (N, d): the cached h_layer on the evaluation images; `mean` (d,), if given, replaces the
    coalition's coordinates (mean ablation) instead of zero. Returns {"acc": (n_coal,), "loss":
    (n_coal,), "acc_base": float, "loss_base": float}. `max_rows` bounds the rows of one forward pass.
    """
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    N = np.shape(H)[0]
    if yt.shape != (N,):
        raise ValueError(f"y has shape {tuple(yt.shape)} but H holds {N} samples")
    logits, chunks = residual_ablation_logits(model, H, layer, coalitions, mean=mean, max_rows=max_rows,
                                              progress=progress, desc=desc)
    acc_base = float((logits.argmax(1) == yt).double().mean())
    loss_base = float(F.cross_entropy(logits, yt))
    acc = np.empty(len(coalitions))
    loss = np.empty(len(coalitions))
    for s, out in chunks:
        c = out.shape[0]
        acc[s:s + c] = (out.argmax(-1) == yt).double().mean(1).numpy()
        ce = F.cross_entropy(out.reshape(-1, out.shape[-1]), yt.repeat(c), reduction="none")
        loss[s:s + c] = ce.view(c, N).mean(1).double().numpy()
    return {"acc": acc, "loss": loss, "acc_base": acc_base, "loss_base": loss_base}


def accuracy_drop(model, H: np.ndarray, layer: int, y: np.ndarray, coalitions: Sequence[Sequence[int]],
                  **kwargs) -> np.ndarray:
    """Delta Acc(C) = Acc_base - Acc_-C for every coalition, in accuracy points (fraction; x100 for pp)."""
    res = ablation_effects(model, H, layer, y, coalitions, **kwargs)
    return res["acc_base"] - res["acc"]


def neuron_loss_delta(model, H: np.ndarray, layer: int, y: np.ndarray, **kwargs) -> np.ndarray:
    """Per-neuron loss delta Delta_i = L(h_{l,-i}) - L(h_l) (appendix I.3), one ablation per coordinate."""
    d = np.shape(H)[1]
    res = ablation_effects(model, H, layer, y, [[i] for i in range(d)], **kwargs)
    return res["loss"] - res["loss_base"]


__all__ = ["ablation_effects", "accuracy_drop", "neuron_loss_delta"]
