"""Visible notices for results that were computed on less than was asked for.

A fallback that changes a result (NaN seeds dropped from a mean, a threshold rule that cannot apply, a
tracking transition that failed) is never silent: the library emits a `ResultWarning`, and the
experiments record every one in the run directory (``warnings.txt``), from where summary.md and
report.html show them. Pure Python, imported by every layer, so it depends on nothing.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

FILENAME = "warnings.txt"
_HEADING = "\n## Warnings\n"


class ResultWarning(UserWarning):
    """A result was computed on less than was asked for, or with a fallback rule."""


def warn(message: str) -> None:
    """Emit a ResultWarning (one line, says what was dropped or replaced and what the result is over)."""
    warnings.warn(message, ResultWarning, stacklevel=2)


def record(run_dir: str | Path, message: str) -> None:
    """Append `message` to the run's warnings file (once: a resumed stage does not repeat it)."""
    path = Path(run_dir) / FILENAME
    line = " ".join(str(message).split())
    if line in read(run_dir):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:  # O_APPEND: whole short lines from several processes
        f.write(line + "\n")
    # a summary written before this warning came (tracking, report) gets its Warnings section refreshed
    summary = Path(run_dir) / "summary.md"
    if summary.is_file():
        text = summary.read_text(encoding="utf-8")
        head = text.split(_HEADING, 1)[0].rstrip("\n") + "\n"
        tmp = summary.with_suffix(".md.tmp")
        tmp.write_text(head + markdown_section(run_dir), encoding="utf-8")
        tmp.replace(summary)


def read(run_dir: str | Path) -> list[str]:
    """The run's recorded warnings, in the order they came."""
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        return []
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@contextlib.contextmanager
def collect(run_dir: str | Path) -> Iterator[None]:
    """Record every ResultWarning raised inside the block into the run directory as it comes (so a summary
    written inside the block already holds it), and still show it as one line."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ResultWarning):
            record(run_dir, str(message))
        shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", ResultWarning)
        warnings.showwarning = show
        yield


def markdown_section(run_dir: str | Path) -> str:
    """A '## Warnings' section for summary.md ('' when the run recorded none)."""
    lines = read(run_dir)
    if not lines:
        return ""
    return (_HEADING + "\nThese results were computed on less than was asked for, or with a fallback "
            "rule:\n\n" + "".join(f"- {ln}\n" for ln in lines))
