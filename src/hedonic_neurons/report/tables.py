"""Tables as lists of row dicts, written side by side as CSV and Markdown (no pandas needed)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table of `rows` (floats to 4 significant digits)."""
    if not rows:
        raise ValueError("cannot write an empty table: no rows were given")
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_table(
    rows: Sequence[dict[str, Any]], stem: str | Path, columns: Sequence[str] | None = None, title: str = ""
) -> tuple[Path, Path]:
    """Write `stem.csv` and `stem.md`; returns both paths. `title` heads the Markdown file."""
    if not rows:
        raise ValueError(f"cannot write table {stem}: no rows were given")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns or rows[0].keys())
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    md = (f"## {title}\n\n" if title else "") + to_markdown(rows, columns)
    md_path.write_text(md)
    return csv_path, md_path


def read_table(path: str | Path) -> list[dict[str, str]]:
    """Read a CSV written by `write_table` back as row dicts (values stay strings)."""
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))
