"""A layer's hidden states of the MNIST gated MLP (`models.gated_mlp`), for the partitions and metrics of the
MNIST experiment (its valuations go through `layer_cache` and `GatedMLPAdapter`, like the language models').
torch is imported inside the function, so that importing the experiment (and the `mnist` parser) stays light."""

from __future__ import annotations

import numpy as np


def hidden_at(model, X: np.ndarray, layer: str) -> np.ndarray:
    """The hidden state h_l (``layer`` = 'h1'..'h5') of the inputs X, float32."""
    import torch

    with torch.no_grad():
        return model.hidden_states(torch.as_tensor(X))[int(layer[1:]) - 1].numpy().astype(np.float32)
