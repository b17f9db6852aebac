"""Models larger than one device: accelerate's ``device_map`` (layers on several GPUs, CPU, or disk).

`load_model(..., device_map="auto", max_memory={0: "70GiB", 1: "70GiB"})` places the layers with
accelerate; the hooks of `extract` then read each layer where it sits (accelerate moves every block's
inputs to that block's device), and the weights the valuation math needs outside a forward pass
(W_down, the LoRA deltas, the final norm and head) are read through `onloaded`, which brings
offloaded (meta / disk) weights in for the moment they are read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where used: the CLI adds these flags without paying for torch
    import torch
    from torch import nn

__all__ = ["add_placement_args", "placement_kwargs", "parse_device_map", "parse_max_memory", "onloaded",
           "is_dispatched", "input_device"]


def parse_device_map(spec: str | None) -> str | dict | None:
    """"auto" / "balanced" / "balanced_low_0" / "sequential", a JSON object, or a JSON file path."""
    if spec is None or spec == "":
        return None
    if spec in ("auto", "balanced", "balanced_low_0", "sequential"):
        return spec
    text = Path(spec).read_text() if Path(spec).is_file() else spec
    try:
        dm = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--device-map {spec!r} is neither auto/balanced/sequential, a JSON object nor a JSON "
                         "file: e.g. '{\"model.layers.0\": 0, \"model.layers.1\": 1, ...}'") from exc
    if not isinstance(dm, dict):
        raise ValueError(f"--device-map must be a JSON object of module -> device, got {type(dm).__name__}")
    return dm


def parse_max_memory(spec: str | None) -> dict | None:
    """"0=70GiB,1=70GiB,cpu=200GiB" -> {0: "70GiB", 1: "70GiB", "cpu": "200GiB"}."""
    if not spec:
        return None
    out: dict[Any, str] = {}
    for part in spec.split(","):
        if "=" not in part:
            raise ValueError(f"--max-memory {spec!r}: use DEVICE=SIZE pairs, e.g. 0=70GiB,1=70GiB,cpu=200GiB")
        k, v = (x.strip() for x in part.split("=", 1))
        out[int(k) if k.isdigit() else k] = v
    return out


def add_placement_args(p: argparse.ArgumentParser) -> None:
    """--device-map, --max-memory, --offload-folder (for models larger than one device)."""
    g = p.add_argument_group("models larger than one device (accelerate device_map; docs/scale.md)")
    g.add_argument("--device-map", default=None,
                   help="auto | balanced | sequential | JSON object or file of module -> device "
                        "(default: none, the whole model on --device)")
    g.add_argument("--max-memory", default=None, help="per-device budget, e.g. 0=70GiB,1=70GiB,cpu=200GiB "
                   "(default: what accelerate finds free)")
    g.add_argument("--offload-folder", default=None, help="where weights that fit nowhere go, disk offload "
                   "(default: none)")


def placement_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for `load_model` from the parsed placement options ({} when none were given)."""
    dm = parse_device_map(getattr(args, "device_map", None))
    mm = parse_max_memory(getattr(args, "max_memory", None))
    off = getattr(args, "offload_folder", None)
    if dm is None:
        if mm or off:
            raise ValueError("--max-memory / --offload-folder need --device-map (e.g. --device-map auto)")
        return {}
    return {"device_map": dm, "max_memory": mm, "offload_folder": off}


def is_dispatched(model: nn.Module) -> bool:
    """True when accelerate placed the model with a device_map (its layers may sit on several devices)."""
    from torch import nn

    seen = model
    for _ in range(4):  # PEFT wrappers: PeftModel -> LoraModel -> the transformers model
        if getattr(seen, "hf_device_map", None):
            return True
        nxt = getattr(seen, "base_model", None) or getattr(seen, "model", None)
        if nxt is None or nxt is seen or not isinstance(nxt, nn.Module):
            return False
        seen = nxt
    return False


def input_device(model: nn.Module) -> torch.device:
    """Where a dispatched model takes its inputs: the first parameter that is not offloaded (meta)."""
    import torch

    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def onloaded(root: nn.Module, module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, `module`'s weights are real tensors even if accelerate offloaded them (meta/disk).

    accelerate hooks either each leaf module (offload) or the top-level blocks of the device_map, so
    every descendant of `module` with offloaded parameters is onloaded, and else the nearest ancestor
    that holds them; they are offloaded again on exit.
    """
    def meta(m: nn.Module) -> bool:
        return any(p.device.type == "meta" for p in m.parameters())

    if not meta(module):
        yield module
        return
    from accelerate.utils import align_module_device, has_offloaded_params

    with contextlib.ExitStack() as stack:
        for m in module.modules():
            if has_offloaded_params(m):
                stack.enter_context(align_module_device(m))
        if meta(module):
            names = {id(m): n for n, m in root.named_modules()}
            name = names.get(id(module), "")
            parts = name.split(".") if name else []
            for k in range(len(parts) - 1, -1, -1):
                anc = root.get_submodule(".".join(parts[:k])) if k else root
                if has_offloaded_params(anc):
                    stack.enter_context(align_module_device(anc))
                    break
        if meta(module):
            raise ValueError(f"{type(module).__name__} has weights on the meta device and no accelerate hook that can "
                             "load them: load the model with device_map (and offload_folder) through "
                             "hedonic_neurons.models.load_model")
        yield module


def device_map_error(device_map: Any, max_memory: Any, exc: BaseException) -> ValueError:
    """One line for a device_map that does not fit (or names unknown modules)."""
    first = next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)[:240]
    return ValueError(f"device_map {device_map!r} (max_memory {max_memory!r}) does not fit this model: {first}; "
                      "give more devices or a larger --max-memory, or --offload-folder DIR for disk offload")
