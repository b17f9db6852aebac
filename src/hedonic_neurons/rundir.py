"""The run directory every experiment writes and every later stage reads (README: "Outputs").

Layout::

    RUN/config.json                      the experiment's dataclass config (loadable again)
    RUN/partitions/<layer>/<method>.json  labels, coalitions, stability certificate, solver params
    RUN/matrices/<layer>.safetensors      phi (OCA, PAS), their standard errors, psi ...
    RUN/tables/<name>.csv|.md             every table shown in the report
    RUN/figures/<name>.png                every static figure shown in the report
    RUN/views/<name>.html                 interactive plotly views (Sankey ...)
    RUN/stages/<stage>.done               markers of finished stages, for resuming
    RUN/summary.md                        plain-words summary
    RUN/report.html                       the self-contained report

This module sits at the package root, below every sub-package (tracking, report and the experiments
all read and write run directories), so that none of them has to import another to do it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


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


# Matrix keys -------------------------------------------------------------------------------------
# Both experiments write ``matrices/<layer>.safetensors`` with these keys, each optionally suffixed by the
# cross-fitting half (``phi_pas_a``, ``psi_b``); readers (the report, tracking) look keys up here instead
# of guessing from prefixes. Tracking inputs (``track_*``) are documented in tracking/run.py.
MATRIX_KEYS: dict[str, str] = {
    "phi_oca": "OCA valuation, (n, n), zero diagonal",
    "oca_se": "standard error of each OCA entry, (n, n)",
    "phi_pas": "PAS valuation (exact, or Hessian where the metadata says so), (n, n), zero diagonal",
    "pas_se": "standard error of each PAS entry over the inputs, (n, n)",
    "psi": "single-player ablation effects psi(i), (n,)",
    "psi_se": "standard errors of psi, (n,)",
    "loss_delta": "per-player change of the loss under ablation (MNIST I.3), (n,)",
    "half_idx": "indices of the inputs of one cross-fitting half",
}
# the valuation each phi key holds, and the partition method fitted on it
PHI_KEYS: dict[str, str] = {"phi_oca": "hedonic_oca", "phi_pas": "hedonic_pas"}
HALVES = ("a", "b")


def matrix_key(kind: str, half: str | None = None) -> str:
    """The stored key of matrix ``kind`` (one of MATRIX_KEYS) for cross-fitting half ``half`` (or none)."""
    if kind not in MATRIX_KEYS:
        raise KeyError(f"unknown matrix kind {kind!r}: declare it in rundir.MATRIX_KEYS ({sorted(MATRIX_KEYS)})")
    if half is None:
        return kind
    if half not in HALVES:
        raise ValueError(f"unknown cross-fitting half {half!r}: use one of {HALVES}")
    return f"half_{half}_idx" if kind == "half_idx" else f"{kind}_{half}"


def parse_matrix_key(key: str) -> tuple[str, str | None] | None:
    """(kind, half) of a stored key, or None for keys outside the schema (tracking inputs ...)."""
    if key in MATRIX_KEYS:
        return key, None
    if key.startswith("half_") and key.endswith("_idx") and key[5:-4] in HALVES:
        return "half_idx", key[5:-4]
    base, _, half = key.rpartition("_")
    if base in MATRIX_KEYS and half in HALVES:
        return base, half
    return None


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (temp file then rename), so an interrupted run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=1))
    tmp.replace(path)
    return path


class RunDir:
    """Helper around one run directory: typed writers and readers, plus stage markers for resuming."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # config -----------------------------------------------------------------------------------
    def save_config(self, config: Any) -> Path:
        return write_json(self.root / "config.json", config)

    def load_config(self, cls: type | None = None) -> Any:
        data = json.loads((self.root / "config.json").read_text())
        return cls(**data) if cls is not None else data

    # partitions -------------------------------------------------------------------------------
    def partition_path(self, layer: str, method: str) -> Path:
        return self.root / "partitions" / str(layer) / f"{method}.json"

    def save_partition(
        self, layer: str, method: str, labels: np.ndarray, *, stability: dict | None = None,
        params: dict | None = None, extra: dict | None = None,
    ) -> Path:
        labels = np.asarray(labels, dtype=np.int64)
        coalitions = [np.flatnonzero(labels == c).tolist() for c in np.unique(labels)]
        coalitions.sort(key=lambda c: (-len(c), c[0]))
        payload = {
            "layer": str(layer), "method": method, "n_players": int(labels.size),
            "n_coalitions": len(coalitions), "labels": labels.tolist(), "coalitions": coalitions,
            "stability": stability or {}, "params": params or {}, **(extra or {}),
        }
        return write_json(self.partition_path(layer, method), payload)

    def load_partition(self, layer: str, method: str) -> dict:
        data = json.loads(self.partition_path(layer, method).read_text())
        data["labels"] = np.asarray(data["labels"], dtype=np.int64)
        return data

    def partitions(self) -> dict[str, dict[str, Path]]:
        """{layer: {method: path}} for every partition on disk."""
        out: dict[str, dict[str, Path]] = {}
        for p in sorted((self.root / "partitions").glob("*/*.json")):
            out.setdefault(p.parent.name, {})[p.stem] = p
        return out

    # matrices ---------------------------------------------------------------------------------
    def matrices_path(self, layer: str) -> Path:
        return self.root / "matrices" / f"{layer}.safetensors"

    def save_matrices(self, layer: str, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> Path:
        from safetensors.numpy import save_file

        path = self.matrices_path(layer)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                  metadata={k: str(v) for k, v in (metadata or {}).items()})
        tmp.replace(path)
        return path

    def load_matrices(self, layer: str) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        return load_file(str(self.matrices_path(layer)))

    # tables, figures, views -------------------------------------------------------------------
    def save_table(self, name: str, rows: Sequence[dict], columns: Sequence[str] | None = None,
                   title: str = "") -> tuple[Path, Path]:
        return write_table(rows, self.root / "tables" / name, columns, title=title)

    def figure_path(self, name: str) -> Path:
        path = self.root / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def view_path(self, name: str) -> Path:
        path = self.root / "views" / f"{name}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # stages (resume) --------------------------------------------------------------------------
    def stage_path(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.done"

    def stage_done(self, stage: str) -> bool:
        return self.stage_path(stage).exists()

    def mark_done(self, stage: str, info: dict | None = None) -> None:
        write_json(self.stage_path(stage), info or {})
