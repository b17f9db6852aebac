"""Lazy re-exports (PEP 562) for the package facades (`hedonic_neurons`, `hedonic_neurons.models`): a name is
imported from its defining module on first access, so importing a facade imports nothing heavy."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, table: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for `package` re-exporting `table` ({public name: defining module});
    the value is cached in `namespace` (the package's ``globals()``), so each name is looked up once."""

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(import_module(table[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
