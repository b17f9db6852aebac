"""One layer syntax for every command: '3-6' (a range, both ends included), '1,3,5' (a list), '7' (one layer),
and mixes of them ('2,4-6'). Layers are the model's own 0-based indices (MNIST: the hidden states h1..h5 are 1..5).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["parse_layers", "format_layers", "check_layers"]

SYNTAX = "'3-6' (a range), '1,3,5' (a list) or '7' (one layer)"


def parse_layers(spec: str | int | Sequence[int] | None) -> tuple[int, ...] | None:
    """'7-14' -> (7, ..., 14); '1,3,5' -> (1, 3, 5); 7 or '7' -> (7,); a sequence passes through (sorted, unique);
    None or '' stays None. ValueError naming the syntax for anything else."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    if isinstance(spec, int):
        return (int(spec),)
    if not isinstance(spec, str):
        return tuple(sorted({int(x) for x in spec}))
    out: set[int] = set()
    try:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                raise ValueError
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else ("-" + part[1:].split("-", 1)[0],
                                                                            part[1:].split("-", 1)[1])
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise ValueError(f"bad layer list {spec!r}: write it as {SYNTAX}") from None
    if any(x < 0 for x in out):
        raise ValueError(f"bad layer list {spec!r}: layers are indices >= 0; write them as {SYNTAX}")
    return tuple(sorted(out))


def format_layers(layers: Iterable[int]) -> str:
    """The inverse of `parse_layers`: (3, 4, 5, 7) -> '3-5,7'."""
    xs = sorted(set(int(x) for x in layers))
    parts: list[str] = []
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        parts.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ",".join(parts)


def check_layers(layers: Iterable[int], valid: range, what: str = "this model") -> tuple[int, ...]:
    """`layers` if all lie in `valid`, else a one-line ValueError naming the valid range in the same syntax."""
    layers = tuple(layers)
    bad = [x for x in layers if x not in valid]
    if bad:
        raise ValueError(f"layer(s) {format_layers(bad)} outside {what}: use --layers within "
                         f"{valid.start}-{valid.stop - 1}")
    return layers
