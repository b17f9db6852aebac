"""LoRA/PEFT helpers: base vs adapted outputs and weights of a (possibly LoRA-wrapped) Linear.

A channel's ablation in a LoRA model reverts its LoRA-induced change, so we need
for the same input both the adapted projection and the base one; these helpers give them from the
module's own weights, without a second forward pass and without toggling adapters globally.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "is_lora_layer",
    "unwrap_model",
    "base_output",
    "lora_delta_weight",
    "merged_weight",
    "base_weight",
    "has_lora",
    "lora_config",
]


def is_lora_layer(module: nn.Module) -> bool:
    """True for a PEFT LoRA layer (it has `base_layer`, `lora_A`, `lora_B`)."""
    return hasattr(module, "base_layer") and hasattr(module, "lora_A") and hasattr(module, "lora_B")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (`get_base_model()`), else the model itself."""
    if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
        return model.get_base_model()
    return model


def _active_adapters(module: nn.Module) -> list[str]:
    if getattr(module, "disable_adapters", False):
        return []
    active = module.active_adapters if hasattr(module, "active_adapters") else ["default"]
    if isinstance(active, str):
        active = [active]
    return [a for a in active if a in module.lora_A.keys()]


def lora_delta_weight(module: nn.Module) -> torch.Tensor | None:
    """Sum of the active adapters' Delta W = (alpha/r) B A, shape (out, in); None when no LoRA is active."""
    if not is_lora_layer(module):
        return None
    adapters = _active_adapters(module)
    if not adapters:
        return None
    for a in adapters:
        if a in getattr(module, "lora_variant", {}):
            raise ValueError(
                f"LoRA variant {type(module.lora_variant[a]).__name__} (e.g. DoRA) on {type(module).__name__}"
                " is not supported: its delta is not a fixed low-rank matrix; use plain LoRA adapters"
            )
    delta = None
    for a in adapters:
        d = module.get_delta_weight(a)
        delta = d if delta is None else delta + d
    return delta


def has_lora(module: nn.Module) -> bool:
    """True when `module` is a LoRA layer with at least one active adapter."""
    return is_lora_layer(module) and bool(_active_adapters(module))


def _plain(module: nn.Module) -> nn.Module:
    return module.base_layer if is_lora_layer(module) else module


def merged_weight(module: nn.Module) -> torch.Tensor:
    """The effective weight W + Delta W of a Linear (plain Linear: its weight), detached."""
    w = _plain(module).weight.detach()
    delta = lora_delta_weight(module)
    if delta is None or getattr(module, "merged", False):
        return w
    return w + delta.detach().to(w.dtype)


def base_weight(module: nn.Module) -> torch.Tensor:
    """The pre-LoRA weight W of a Linear (undoes a merge when the adapter was merged into it)."""
    w = _plain(module).weight.detach()
    delta = lora_delta_weight(module)
    if delta is not None and getattr(module, "merged", False):
        return w - delta.detach().to(w.dtype)
    return w


def base_output(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The base (pre-LoRA) projection of `x` through `module`, whatever its adapter state."""
    if not is_lora_layer(module):
        return module(x)
    out = module.base_layer(x)
    if getattr(module, "merged", False):
        delta = lora_delta_weight(module)
        if delta is not None:
            out = out - nn.functional.linear(x, delta.to(x.dtype))
    return out


def lora_config(
    model: nn.Module,
    layers: Sequence[int],
    *,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    train_head: bool = True,
    task_type: str = "SEQ_CLS",
):
    """A PEFT `LoraConfig` with rank-`r` LoRA on the MLP modules of the chosen layers only.

    `target_modules` is a regex matched in full against module names, so BERT's `output.dense` (the MLP
    down projection) is not confused with `attention.output.dense`. `train_head` adds the
    classification head to `modules_to_save` (a new head is randomly initialised and must be trained), with
    the adapter's `head_extra_paths` (BERT's pooler: without it a CLS-read MiniLM barely learns CQTR from
    MLP LoRA on CPU-sized runs, measured in docs/reranker.md).
    """
    from peft import LoraConfig

    from .adapters import get_adapter

    adapter = get_adapter(model)
    layers = sorted({int(x) for x in layers})
    if not layers:
        raise ValueError("lora_config: no layers given; pass e.g. layers=range(7, 15)")
    for layer in layers:
        adapter.check_layer(layer, site="mlp")
    names = adapter.mlp_module_names(layers[0])
    # Names relative to the layer: identical for every layer, so one alternation covers them.
    rel = [n[len(adapter.layer_path(layers[0])) + 1:] for n in names.values()]
    layer_alt = "|".join(str(x) for x in layers)
    rel_alt = "|".join(re.escape(x) for x in rel)
    prefix = re.escape(adapter.layers_prefix)
    pattern = rf"(.*\.)?{prefix}\.({layer_alt})\.({rel_alt})"
    kwargs = {}
    if train_head and adapter.head_path is not None:
        kwargs["modules_to_save"] = [path.split(".")[-1] for path in (adapter.head_path, *adapter.head_extra_paths)]
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=pattern,
        task_type=task_type if task_type else None,
        **kwargs,
    )
