"""How an experiment invocation runs, as opposed to what it computes: the torch thread count it picks and
the record of it in RUN/runtime.json (shared by the MNIST and reranker experiments).

Recorded, not configured: the results are the same for any thread count or number of worker processes
(README "Reproducibility"), so a run may be resumed with other ones, and config.json does not hold them.
"""

from __future__ import annotations

import json
import os
import time

from hedonic_neurons.rundir import RunDir, write_json


def pick_threads(threads: int | None) -> int:
    """Torch threads: as asked, else the core count, or 1 when the cores are already busy.

    On an oversubscribed machine torch's intra-op thread barriers make 2 threads several times slower
    than 1 (measured here: one training epoch 8x slower), so the automatic choice backs off.
    """
    cores = os.cpu_count() or 1
    if threads:
        return max(1, int(threads))
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return 1 if load >= cores - 0.5 else cores


def record_runtime(rd: RunDir, threads: int, jobs: int = 1, **extra: int) -> None:
    """Append how this invocation ran (threads, worker processes, MKL reproducibility mode, torch, and
    `extra`, e.g. the torchrun world size) to RUN/runtime.json, one entry per invocation."""
    import torch

    path = rd.root / "runtime.json"
    runs = json.loads(path.read_text()) if path.is_file() else []
    if isinstance(runs, dict):  # written by an older version: one invocation, kept as the first entry
        runs = [runs]
    runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "threads": int(threads), "jobs": int(jobs),
                 "MKL_CBWR": os.environ.get("MKL_CBWR", ""), "torch": torch.__version__, **extra})
    write_json(path, runs)


__all__ = ["pick_threads", "record_runtime"]
