"""What the MNIST valuations read from the gated MLP (`models.gated_mlp`): a layer's hidden states, the
local logit after it (appendix I.3) and OCA's weight term. torch is imported inside the functions, so that
importing the experiment (and the `mnist` command's parser) stays light."""

from __future__ import annotations

import numpy as np


def hidden_at(model, X: np.ndarray, layer: str) -> np.ndarray:
    """The hidden state h_l (``layer`` = 'h1'..'h5') of the inputs X, float32."""
    import torch

    with torch.no_grad():
        return model.hidden_states(torch.as_tensor(X))[int(layer[1:]) - 1].numpy().astype(np.float32)


def local_tail(model):
    """The local logit: the model's final LayerNorm and head, cloned and applied to h_l (I.3)."""
    from hedonic_neurons.valuations.tail import NormTail

    norm, head = model.norm, model.head
    return NormTail(kind="layer", head_w=head.weight.detach().double().numpy(),
                    head_b=head.bias.detach().double().numpy(), weight=norm.weight.detach().double().numpy(),
                    bias=norm.bias.detach().double().numpy(), eps=float(norm.eps))


def oca_weight(model, layer: str, how: str = "next") -> np.ndarray | None:
    """The weight term of OCA for residual coordinate i (DESIGN 3): column i of what reads h_l next.

    h1..h4: the next block's gate and up projections stacked, (2 d_ff, d); h5: the head with the final
    LayerNorm gain folded in, (n_classes, d). ``how="identity"`` returns None (no weight term).
    """
    if how == "identity":
        return None
    li = int(layer[1:])
    if li <= len(model.blocks):
        b = model.blocks[li - 1]
        return np.vstack([b.gate.weight.detach().numpy(), b.up.weight.detach().numpy()]).astype(np.float64)
    return (model.head.weight.detach().double() * model.norm.weight.detach().double()).numpy()
