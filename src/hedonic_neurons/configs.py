"""Config dataclasses <-> command-line flags and JSON, one mechanism for every command.

A field is declared once, in its dataclass (``SolverConfig``, ``FinetuneConfig``, the experiments'
configs); ``add_config_flags`` turns fields into argparse flags (``max_size`` -> ``--max-size``, default
and help from the dataclass), ``config_from_args`` reads them back, and ``config_from_dict`` rebuilds a
nested config from its JSON (mapping the flat keys of older config.json files where declared).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any


def _union_parser(members: list[Any], optional: bool) -> Any:
    """A flag parser for a union type: 'none' -> None (when optional), then each member type in turn
    (threshold: str | float | None reads 'auto', '0.01' or 'none')."""
    order = [t for t in (int, float) if t in members] + ([str] if str in members else [])

    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        for cast in order:
            try:
                return cast(text)
            except ValueError:
                pass
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {[t.__name__ for t in order]}")

    parse.__name__ = " | ".join(t.__name__ for t in order)
    return parse


def _flag_type(tp: Any) -> tuple[Any, bool]:
    """(argparse type, is_bool) of a field's resolved type hint."""
    if tp is bool:
        return None, True
    if tp in (int, float, str):
        return tp, False
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and all(a in (int, float, str) for a in args):
        return _union_parser(args, type(None) in typing.get_args(tp)), False
    raise TypeError(f"no command-line flag for a field of type {tp!r}: declare the flag by hand")


def config_fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """{name: (field, resolved type)} of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def shown_default(value: Any) -> str:
    """A default as the user would type it: None -> 'none', True -> 'on', 800000 -> '800000'."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def _metavar(kind: Any, tp: Any) -> str:
    """What a flag's value looks like in --help: N (an integer), FLOAT, TEXT, or their union ('N|auto')."""
    names = {int: "N", float: "FLOAT", str: "TEXT"}
    if kind in names:
        return names[kind]
    members = [a for a in typing.get_args(tp) if a is not type(None)]
    parts = [names[a] for a in (int, float, str) if a in members]
    return "|".join(parts + (["none"] if type(None) in typing.get_args(tp) else []))


def add_config_flags(parser: argparse.ArgumentParser | Any, config: Any, *, fields: Iterable[str] | None = None,
                     exclude: Iterable[str] = (), dest_prefix: str = "",
                     aliases: Mapping[str, Iterable[str]] | None = None,
                     flags: Mapping[str, str] | None = None, notes: Mapping[str, str] | None = None) -> list[str]:
    """Add one flag per field of the dataclass instance ``config`` (its values are the defaults shown).

    ``fields`` (default: every non-dataclass field, minus ``exclude``) names them; help comes from the
    class's ``HELP`` dict, choices from its ``CHOICES`` dict and value names from its ``METAVAR`` dict (else
    from the type). ``dest_prefix`` keeps several configs apart in one namespace; ``flags`` renames a field's
    flag where two configs share a name (the LoRA ``alpha`` beside the solver's); ``notes`` adds to a flag's
    help, e.g. why a command's default differs from the class's. Returns the field names added, for
    ``config_from_args``.
    """
    cls = type(config)
    helps = getattr(cls, "HELP", {})
    choices = getattr(cls, "CHOICES", {})
    metavars = getattr(cls, "METAVAR", {})
    declared = config_fields(cls)
    names = list(fields) if fields is not None else [
        n for n, (_, tp) in declared.items() if not dataclasses.is_dataclass(tp)]
    names = [n for n in names if n not in set(exclude)]
    for name in names:
        _, tp = declared[name]
        default = getattr(config, name)
        flag = (flags or {}).get(name) or "--" + name.replace("_", "-")
        extra = [*(aliases or {}).get(name, ())]
        kind, is_bool = _flag_type(tp)
        text = helps.get(name, "") or name.replace("_", " ")
        note = (notes or {}).get(name)
        text = f"{text} (default: {shown_default(default)}{'; ' + note if note else ''})".replace("%", "%%")
        if is_bool:
            parser.add_argument(flag, *extra, dest=dest_prefix + name, action=argparse.BooleanOptionalAction,
                                default=default, help=text)
            continue
        options = choices.get(name)
        if options is not None:
            metavar = "{" + ",".join(shown_default(c) for c in options) + "}"
            # choices are checked here, not by argparse, so that --preset none (None) is one of them
            kind = _choice_parser(kind, options, flag)
        else:
            metavar = metavars.get(name) or _metavar(kind, tp)
        parser.add_argument(flag, *extra, dest=dest_prefix + name, type=kind, default=default, help=text,
                            metavar=metavar)
    return names


def _choice_parser(kind: Any, options: list, flag: str) -> Any:
    """`kind`, then a check that the value is one of `options` (None written 'none')."""
    def parse(text: str) -> Any:
        value = kind(text) if kind is not None else text
        if value not in options:
            raise argparse.ArgumentTypeError(
                f"{text!r}: choose from {', '.join(shown_default(c) for c in options)}")
        return value

    parse.__name__ = flag
    return parse


def config_from_args(config: Any, args: argparse.Namespace, names: Iterable[str], dest_prefix: str = "") -> Any:
    """``config`` with the fields ``names`` replaced by what the flags of ``add_config_flags`` parsed."""
    return dataclasses.replace(config, **{n: getattr(args, dest_prefix + n) for n in names})


def config_from_dict(cls: type, data: Mapping[str, Any], moved: Mapping[str, str] | None = None) -> Any:
    """Rebuild a (nested) config dataclass from its JSON dict.

    ``moved`` maps flat keys of older config files to their nested place (``{"solver_m": "solver.m"}``),
    so an older run directory still loads. Unknown keys raise a one-line error.
    """
    data = dict(data)
    declared = config_fields(cls)
    for old, new in (moved or {}).items():
        if old in data and old not in declared:
            head, _, rest = new.partition(".")
            value = data.pop(old)
            if rest:
                sub = data.setdefault(head, {})
                if isinstance(sub, dict):
                    sub.setdefault(rest, value)
            else:
                data.setdefault(head, value)
    unknown = sorted(set(data) - set(declared))
    if unknown:
        raise ValueError(f"config has unknown settings {unknown} for {cls.__name__}: it was written by another "
                         "version; start a new run directory (--out) or overwrite it (--force)")
    kwargs = {}
    for name, value in data.items():
        _, tp = declared[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            value = config_from_dict(tp, value)
        kwargs[name] = value
    return cls(**kwargs)
