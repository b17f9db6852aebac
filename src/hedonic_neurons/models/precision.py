"""float64 through Hugging Face modules that upcast to float32 internally.

HF's RMSNorms compute ``hidden_states.to(torch.float32)`` (Gemma: ``x.float()``) even in a float64 model, so
a float64 forward carries ~1e-8 relative error in every norm. Inside `keep_float64()` a cast of a float64
tensor to a lower float precision is a no-op, so the module's own code runs in float64 throughout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["keep_float64"]

_LOW = (torch.float32, torch.float16, torch.bfloat16)


class _Keep64(TorchFunctionMode):
    """Turns casts of float64 tensors to a lower float precision into no-ops (HF norms upcast to float32)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if args and isinstance(args[0], torch.Tensor) and args[0].dtype == torch.float64:
            name = getattr(func, "__name__", "")
            if name in ("float", "half", "bfloat16") and len(args) == 1 and not kwargs:
                return args[0]
            if name in ("to", "type"):
                dt = kwargs.get("dtype")
                rest = []
                for a in args[1:]:
                    if isinstance(a, torch.dtype):
                        dt = a
                    else:
                        rest.append(a)
                if dt in _LOW:
                    if not rest and set(kwargs) <= {"dtype", "non_blocking", "copy"}:
                        return args[0]
                    kwargs = {k: v for k, v in kwargs.items() if k != "dtype"}
                    return func(args[0], *rest, **kwargs)
        return func(*args, **kwargs)


@contextmanager
def keep_float64() -> Iterator[None]:
    """Within the block, float64 tensors are never cast down (float32 RMSNorms of HF run in float64)."""
    with _Keep64():
        yield
