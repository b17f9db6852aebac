"""Input texts (and optional labels) from a file: plain lines, JSON lines or a TSV / CSV table.

- ``.jsonl``: one object per line with "text" and, optionally, "label" (an integer class index);
- ``.tsv`` / ``.csv``: a header row naming a "text" column and, optionally, a "label" column (a file
  without such a header: two columns, text then label);
- anything else: one text per non-empty line, no labels.

Labels are all there or all absent: a file where some rows carry one and others do not is refused.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

__all__ = ["read_texts"]

_TEXT_KEYS = ("text", "sentence", "input")
_LABEL_KEYS = ("label", "labels", "class", "target")


def _label(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{where}: label {value!r} is not a class index: use integers 0..K-1")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ValueError(f"{where}: label {value!r} is not a class index: use integers 0..K-1 (map names to ids first)")


def _finish(p: Path, texts: list[str], labels: list[int | None], min_texts: int) -> tuple[list[str], list[int] | None]:
    if len(texts) < min_texts:
        raise ValueError(f"{p} holds {len(texts)} text(s): valuations need at least {min_texts} inputs")
    have = [lab is not None for lab in labels]
    if any(have) and not all(have):
        k = have.index(False)
        raise ValueError(f"{p}: text {k + 1} has no label but others do: give a label on every row or on none")
    return texts, ([int(lab) for lab in labels] if labels and all(have) else None)


def read_texts(path: str | Path, *, min_texts: int = 2) -> tuple[list[str], list[int] | None]:
    """(texts, labels or None) from `path` (see the module docstring for the formats).

    One-line ValueError / FileNotFoundError for a missing or empty file, fewer than `min_texts` texts, a row
    without text, a non-integer label, or labels on some rows only.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"texts file {p} does not exist: give a UTF-8 file with one input per line "
                                "(or a .jsonl with text/label, or a .tsv/.csv with text and label columns)")
    raw = p.read_text(encoding="utf-8")
    texts: list[str] = []
    labels: list[int | None] = []
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{p} line {n} is not JSON ({exc.msg}): one {{\"text\": ..., \"label\": ...}} "
                                 "object per line") from None
            if isinstance(obj, str):
                obj = {"text": obj}
            key = next((k for k in _TEXT_KEYS if isinstance(obj, dict) and isinstance(obj.get(k), str)), None)
            if key is None:
                raise ValueError(f"{p} line {n} has no \"text\" string: one {{\"text\": ..., \"label\": ...}} "
                                 "object per line")
            texts.append(obj[key])
            lk = next((k for k in _LABEL_KEYS if k in obj and obj[k] is not None), None)
            labels.append(None if lk is None else _label(obj[lk], f"{p} line {n}"))
        return _finish(p, texts, labels, min_texts)
    if suffix in (".tsv", ".csv"):
        rows = [r for r in csv.reader(raw.splitlines(), delimiter="\t" if suffix == ".tsv" else ",") if any(
            c.strip() for c in r)]
        if not rows:
            return _finish(p, [], [], min_texts)
        head = [c.strip().lower() for c in rows[0]]
        ti = next((head.index(k) for k in _TEXT_KEYS if k in head), None)
        li = next((head.index(k) for k in _LABEL_KEYS if k in head), None)
        if ti is None:  # no header: text, then label
            ti, li = 0, (1 if all(len(r) >= 2 for r in rows) else None)
        else:
            rows = rows[1:]
        for n, r in enumerate(rows, 1):
            if ti >= len(r) or not r[ti].strip():
                raise ValueError(f"{p} row {n} has no text in column {ti + 1}: fill it or drop the row")
            texts.append(r[ti].strip())
            labels.append(None if li is None or li >= len(r) or not r[li].strip()
                          else _label(r[li], f"{p} row {n}"))
        return _finish(p, texts, labels, min_texts)
    texts = [line.strip() for line in raw.splitlines() if line.strip()]
    if len(texts) < min_texts:
        raise ValueError(f"{p} holds {len(texts)} non-empty line(s): valuations need at least {min_texts} inputs")
    return texts, None
