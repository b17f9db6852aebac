"""Per-layer parallelism: independent jobs (one per layer's phi) in a process pool, results in order.

The partition and metric stages of different layers are independent given phi, so they can run side
by side. Pure standard library (no torch), so the game layer can use it. Each job runs in its own
process with one BLAS thread (the default here is to oversubscribe nothing: jobs x 1 thread).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["map_jobs"]


def _one_thread() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover -- threadpoolctl comes with scikit-learn
        pass


def map_jobs(fn: Callable[[Any], T], items: Sequence[Any], jobs: int = 1) -> list[T]:
    """[fn(x) for x in items], on `jobs` worker processes when jobs > 1 (fn must be a module-level function).

    A job's exception is raised here unchanged (the first in item order), after the pool is shut down.
    """
    items = list(items)
    jobs = int(jobs)
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: give 1 (serial) or more worker processes")
    if jobs == 1 or len(items) <= 1:
        return [fn(x) for x in items]
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=mp.get_context(method),
                             initializer=_one_thread) as ex:
        futures = [ex.submit(fn, x) for x in items]
        return [f.result() for f in futures]
