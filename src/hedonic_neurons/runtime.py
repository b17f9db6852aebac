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
    """Torch threads: as asked, else OMP_NUM_THREADS where it is set (the usual way to tell a process how many
    cores it may use, e.g. one per pytest-xdist worker), else every core. The results are the same for any
    count (MKL's strict mode, docs/mnist.md "Threads"), so the count is only about speed; whether a machine is
    too busy for all cores is the user's to judge (--threads), not a load average's."""
    if threads:
        return max(1, int(threads))
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return available_cores()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one, else the core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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


__all__ = ["pick_threads", "available_cores", "record_runtime"]
