"""The MNIST gated MLP of the paper's appendix I.1, and its deterministic CPU training loop.

784 -> 256 input projection (h1), four gated residual blocks ``h + down(silu(gate(h)) * up(h))``
(h2..h5), final LayerNorm and a linear head. The paper does not give the blocks' hidden width;
this project uses d_ff = 1024 (4 x d_model, the usual MLP ratio).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

LAYERS = ("h1", "h2", "h3", "h4", "h5")


class GatedBlock(nn.Module):
    """One residual gated-MLP block: h + W_down (silu(W_gate h) * W_up h) (paper appendix I.1)."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.down(F.silu(self.gate(h)) * self.up(h))


class ThreadStableLayerNorm(nn.LayerNorm):
    """nn.LayerNorm whose gradients do not depend on the torch thread count.

    The fused CPU kernel reduces the gain and bias gradients over the batch in per-thread chunks, so
    training with 1 and 2 threads drifts apart (~1e-5 per step, then different networks, partitions
    and tables). Normalising without the affine part and applying gain and bias as plain tensor ops
    leaves those two reductions to autograd's sum over the batch dimension, which is computed per
    output element, whatever the thread count. Same parameters and state_dict as nn.LayerNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x, self.normalized_shape, None, None, self.eps)
        if not self.elementwise_affine:
            return y
        y = y * self.weight
        return y + self.bias if self.bias is not None else y


class GatedMLPClassifier(nn.Module):
    """Input projection (h1), `n_blocks` gated blocks (h2..h_{n_blocks+1}), LayerNorm, linear head."""

    def __init__(self, d_in: int = 784, d_model: int = 256, d_ff: int = 1024, n_blocks: int = 4,
                 n_classes: int = 10):
        super().__init__()
        self.config = {"d_in": d_in, "d_model": d_model, "d_ff": d_ff, "n_blocks": n_blocks,
                       "n_classes": n_classes}
        self.inp = nn.Linear(d_in, d_model)
        self.blocks = nn.ModuleList(GatedBlock(d_model, d_ff) for _ in range(n_blocks))
        self.norm = ThreadStableLayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    @property
    def n_layers(self) -> int:
        """Number of hidden layers h1..h_L (input projection plus blocks)."""
        return len(self.blocks) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.inp(x), 1)

    def hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[h1, ..., h5]: the residual stream after the input projection and after every block."""
        h = self.inp(x)
        out = [h]
        for block in self.blocks:
            h = block(h)
            out.append(h)
        return out

    def forward_from(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """Propagate a (possibly edited) h_layer, layer in 1..n_layers, through the later blocks to logits."""
        if not 1 <= layer <= self.n_layers:
            raise ValueError(f"layer must be in 1..{self.n_layers}, got {layer}")
        for block in self.blocks[layer - 1:]:
            h = block(h)
        return self.head(self.norm(h))

    # persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        """Weights as safetensors (atomic), with the architecture in the metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: str(v) for k, v in {**self.config, **(metadata or {})}.items()}
        tmp = path.with_suffix(".tmp")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> GatedMLPClassifier:
        """Rebuild a classifier saved by `save` (architecture from the safetensors metadata)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        keys = ("d_in", "d_model", "d_ff", "n_blocks", "n_classes")
        model = cls(**{k: int(meta[k]) for k in keys if k in meta})
        model.load_state_dict(load_file(str(path)))
        return model.eval()


def _seed_all(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build_classifier(seed: int = 0, **kwargs) -> GatedMLPClassifier:
    """A freshly initialised classifier, deterministic in `seed` (also the random-init control)."""
    torch.manual_seed(seed)
    return GatedMLPClassifier(**kwargs)


def random_shift(xb: torch.Tensor, gen: torch.Generator, max_shift: int, fill: float, side: int = 28
                 ) -> torch.Tensor:
    """Translate each flattened side x side image by up to `max_shift` pixels (data augmentation)."""
    b = xb.shape[0]
    img = F.pad(xb.view(b, side, side), (max_shift,) * 4, value=fill)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    ar = torch.arange(side)
    rows, cols = dy[:, None] + ar[None, :], dx[:, None] + ar[None, :]
    return img[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]].reshape(b, -1)


def train_classifier(model: GatedMLPClassifier, X: np.ndarray, y: np.ndarray, epochs: int = 20,
                     lr: float = 1e-3, seed: int = 0, shuffle_labels: bool = False, batch_size: int = 128,
                     weight_decay: float = 0.05, max_shift: int = 2, progress: bool = True) -> dict:
    """Train with AdamW (float32, CPU, batch 128, cosine-decayed lr); returns {"loss": [...per epoch]}.

    Deterministic given `seed`. Images (d_in = 784 = 28 x 28) are randomly shifted by up to
    `max_shift` pixels each step (0 turns it off): with 8,000 training digits this is what lifts
    held-out accuracy from ~96.5 % to ~98 %. `shuffle_labels=True` permutes the labels once (the
    label-shuffled negative control of the paper's Table 9).
    """
    from tqdm.auto import tqdm

    gen = _seed_all(seed)
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    if Xt.ndim != 2 or Xt.shape[0] != yt.shape[0]:
        raise ValueError(f"X must be (N, d_in) and y (N,), got {tuple(Xt.shape)} and {tuple(yt.shape)}")
    if shuffle_labels:
        yt = yt[torch.randperm(len(yt), generator=gen)]
    n = len(yt)
    augment = max_shift > 0 and Xt.shape[1] == 784
    fill = float(Xt.min())  # the background value, whatever normalisation the caller used
    steps_per_epoch = math.ceil(n / batch_size)
    total = max(1, epochs * steps_per_epoch)
    # fused: one pass over each parameter per step instead of ~10 elementwise kernels (the unfused update
    # took ~30 % of a training step, measured with torch.profiler); elementwise, so thread-independent
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    model.train()
    losses = []
    bar = tqdm(range(epochs), desc="train", leave=False, disable=not progress)
    for _ in bar:
        perm = torch.randperm(n, generator=gen)
        tot = 0.0
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            xb = random_shift(Xt[idx], gen, max_shift, fill) if augment else Xt[idx]
            loss = F.cross_entropy(model(xb), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        losses.append(tot / n)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    return {"loss": losses}


@torch.no_grad()
def accuracy(model: GatedMLPClassifier, X: np.ndarray, y: np.ndarray, batch_size: int = 4096) -> float:
    """Top-1 accuracy of `model` on (X, y)."""
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float32))
    preds = torch.cat([model(Xt[s:s + batch_size]).argmax(1) for s in range(0, len(Xt), batch_size)])
    return float((preds.numpy() == np.asarray(y)).mean())


__all__ = ["ThreadStableLayerNorm", "random_shift", "GatedBlock", "GatedMLPClassifier", "LAYERS", "build_classifier",
           "train_classifier", "accuracy"]
