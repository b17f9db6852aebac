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
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hedonic_neurons.report.tables import write_table


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
    def stage_done(self, stage: str) -> bool:
        return (self.root / "stages" / f"{stage}.done").exists()

    def mark_done(self, stage: str, info: dict | None = None) -> None:
        write_json(self.root / "stages" / f"{stage}.done", info or {})
