"""torch.distributed plumbing for data-parallel valuations (launched by `torchrun`; see docs/scale.md).

`Dist` joins the process group that `torchrun` describes in the environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT): gloo on CPU, NCCL on CUDA, one device per rank
(``cuda:LOCAL_RANK``). Without those variables (a plain `python` / `hedonic-neurons` call) it is a
1-process world and every collective is the identity, so the same code runs on 1 process or N.

Collectives are sums of float64 numpy arrays (the sufficient statistics of `valuations.accumulate`),
reduced in chunks so that an n x n statistic never needs a second full copy on the GPU. A failed
collective (a rank died or was killed, or the timeout passed) raises a one-line `RuntimeError`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["Dist", "launched", "env_world", "shard_sizes", "DEFAULT_TIMEOUT_S", "DEFAULT_WAIT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 1800.0  # a collective waits at most this long for a slow or dead rank
# How long the other ranks wait while rank 0 runs a stage of its own (a fine-tune can take hours). A rank
# that dies is seen at once (its connections close); this only bounds a rank that hangs.
DEFAULT_WAIT_TIMEOUT_S = 72 * 3600.0
_CHUNK = 1 << 24  # elements per all-reduce call (128 MB of float64)


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the environment `torchrun` sets; (0, 1, 0) without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({exc}): launch with torchrun") from exc
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} WORLD_SIZE={world} is not a valid world: launch with torchrun")
    return rank, world, local


def launched() -> bool:
    """True inside a multi-process `torchrun` launch (WORLD_SIZE > 1)."""
    return env_world()[1] > 1


def shard_sizes(n_items: int, world: int, sizes: list[int] | None = None) -> list[int]:
    """Contiguous shard sizes: as even as possible (the first ranks take the remainder), or `sizes`."""
    if sizes is not None:
        sizes = [int(s) for s in sizes]
        if len(sizes) != world or sum(sizes) != n_items or min(sizes) < 1:
            raise ValueError(f"shard sizes {sizes} must be {world} positive numbers summing to {n_items} inputs")
        return sizes
    if n_items < world:
        raise ValueError(f"{n_items} inputs for {world} processes: every rank needs at least one input; "
                         f"launch at most {n_items} processes (torchrun --nproc-per-node) or give more inputs")
    q, r = divmod(n_items, world)
    return [q + (1 if k < r else 0) for k in range(world)]


def _one_line(exc: BaseException) -> str:
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


class Dist:
    """The process group of this run (context manager); a 1-process world when not launched.

    ``device``: "cpu" or "cuda" (each rank then uses ``cuda:LOCAL_RANK``); the backend follows it
    (gloo for CPU, NCCL for CUDA) unless ``backend`` is given. ``timeout_s`` bounds every collective
    (default: $HEDONIC_NEURONS_DIST_TIMEOUT or 1800 s).
    """

    def __init__(self, device: str | torch.device = "cpu", *, backend: str | None = None,
                 timeout_s: float | None = None) -> None:
        self.rank, self.world, self.local_rank = env_world()
        dev = torch.device(device)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("device cuda asked for, but torch sees no CUDA device: use --device cpu")
            if self.world > 1 or dev.index is None:
                n_gpu = torch.cuda.device_count()
                if self.local_rank >= n_gpu:
                    raise RuntimeError(f"local rank {self.local_rank} has no GPU ({n_gpu} visible): launch at most "
                                       f"{n_gpu} processes per node (torchrun --nproc-per-node {n_gpu})")
                dev = torch.device("cuda", self.local_rank)
        self.device = dev
        self.backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        if timeout_s is None:
            timeout_s = float(os.environ.get("HEDONIC_NEURONS_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
        self.timeout_s = float(timeout_s)
        self._owner = False
        self._wait_group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __enter__(self) -> Dist:
        import torch.distributed as dist

        if self.world > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            try:
                dist.init_process_group(self.backend, timeout=datetime.timedelta(seconds=self.timeout_s),
                                        rank=self.rank, world_size=self.world)
            except Exception as exc:  # rendezvous failures come as many exception types
                raise RuntimeError(f"rank {self.rank}/{self.world}: could not join the process group "
                                   f"({self.backend}): {_one_line(exc)}; launch with torchrun and check "
                                   "MASTER_ADDR/MASTER_PORT") from exc
            self._owner = True
        elif self.world > 1:
            got = dist.get_world_size()
            if got != self.world:
                raise RuntimeError(f"the process group has {got} ranks but WORLD_SIZE={self.world}")
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch.distributed as dist

        if self._owner and dist.is_initialized():
            try:
                dist.destroy_process_group()  # every group, the waiting group included
            except Exception:  # noqa: BLE001 -- tearing down after a failure must not mask it
                pass
            self._owner = False
        self._wait_group = None

    # ---- collectives ------------------------------------------------------------------------------

    def _fail(self, what: str, exc: BaseException) -> RuntimeError:
        return RuntimeError(
            f"rank {self.rank}/{self.world}: {what} failed: another rank died, was killed or did not answer "
            f"within {self.timeout_s:.0f} s ({_one_line(exc)}); see torchrun's failure summary for which rank")

    def allreduce_sum(self, arr: np.ndarray) -> np.ndarray:
        """Element-wise sum over ranks of a float64 array (a new array; the input is left as it was)."""
        out = np.array(arr, dtype=np.float64, copy=True, order="C")
        if self.world == 1:
            return out
        import torch.distributed as dist

        flat = torch.from_numpy(out.reshape(-1))
        try:
            for s in range(0, flat.numel(), _CHUNK):
                part = flat[s:s + _CHUNK]
                if self.backend == "nccl":
                    g = part.to(self.device)
                    dist.all_reduce(g)
                    part.copy_(g.cpu())
                else:
                    dist.all_reduce(part)
        except Exception as exc:  # noqa: BLE001 -- DistBackendError, RuntimeError, timeouts: one line
            raise self._fail("all-reduce of the valuation statistics", exc) from exc
        return out

    def allreduce_int(self, value: int) -> int:
        """Sum of an integer over ranks."""
        return int(round(float(self.allreduce_sum(np.array([float(value)]))[0])))

    def barrier(self) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        try:
            # a tiny all-reduce instead of dist.barrier(): it honours the group timeout on gloo and NCCL alike
            t = torch.zeros(1, device=self.device if self.backend == "nccl" else "cpu")
            dist.all_reduce(t)
        except Exception as exc:  # noqa: BLE001
            raise self._fail("barrier", exc) from exc

    def gather_rows(self, rows: np.ndarray, index: np.ndarray, n_total: int) -> np.ndarray:
        """The (n_total, ...) array whose rows `index` this rank holds (`rows`), assembled on every rank.

        One all-reduce of a zero-filled float64 array: x + 0 is exact, so float32 / float64 rows come back
        bit for bit (in their dtype). Every row must be held by exactly one rank.
        """
        rows = np.asarray(rows)
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if rows.shape[0] != index.size:
            raise ValueError(f"{rows.shape[0]} rows for {index.size} indices")
        full = np.zeros((n_total, *rows.shape[1:]), dtype=np.float64)
        full[index] = rows
        held = np.zeros(n_total)
        np.add.at(held, index, 1.0)
        if self.world > 1:
            held = self.allreduce_sum(held)
            full = self.allreduce_sum(full)
        if not np.all(held == 1):
            raise RuntimeError(f"rank {self.rank}/{self.world}: rows {np.flatnonzero(held != 1)[:5].tolist()} are "
                               "held by no rank or by several: the shards must partition the inputs")
        return full.astype(rows.dtype, copy=False)

    # ---- stages of an experiment (rank 0 runs them; the others wait or join) -----------------------

    def _waiting_group(self) -> Any:
        """A gloo group with a long timeout for waiting on rank 0 (also beside an NCCL world: CPU only)."""
        if self._wait_group is None:
            import torch.distributed as dist

            wait_s = float(os.environ.get("HEDONIC_NEURONS_DIST_WAIT_TIMEOUT", DEFAULT_WAIT_TIMEOUT_S))
            try:
                self._wait_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=wait_s))
            except Exception as exc:  # noqa: BLE001
                raise self._fail("creating the waiting group", exc) from exc
            self._wait_s = wait_s
        return self._wait_group

    def _wait_allreduce(self, value: float, what: str) -> float:
        import torch.distributed as dist

        group = self._waiting_group()
        t = torch.tensor([float(value)], dtype=torch.float64)
        try:
            dist.all_reduce(t, group=group)
        except Exception as exc:  # noqa: BLE001 -- a dead rank 0 closes its connections: one line
            raise RuntimeError(
                f"rank {self.rank}/{self.world}: {what} failed: another rank died, was killed or did not answer "
                f"within {self._wait_s:.0f} s ({_one_line(exc)}); see torchrun's failure summary for which "
                "rank") from exc
        return float(t[0])

    @contextlib.contextmanager
    def stage(self, done: Callable[[], bool], parallel: bool = False) -> Iterator[bool]:
        """One resumable stage on every rank; yields whether this rank runs its body.

        Rank 0 reads the stage's resume marker (`done`: the run directory is rank 0's to read and write)
        and tells the others, so every rank takes the same branch. A finished stage runs nowhere. A
        ``parallel`` stage runs on every rank (its own collectives inside, e.g. the sharded valuations);
        any other runs on rank 0 alone while the others wait at a barrier ($HEDONIC_NEURONS_DIST_WAIT_TIMEOUT
        s, default 72 h). One process: yields ``not done()``, no collectives.
        """
        if self.world == 1:
            yield not done()
            return
        todo = self._wait_allreduce(float(not done()) if self.is_main else 0.0,
                                    "agreeing with rank 0 on the next stage") > 0
        yield todo and (parallel or self.is_main)
        if todo:
            self._wait_allreduce(0.0, "waiting for rank 0 to finish a stage" if not parallel else
                                 "the barrier after a parallel stage")
