"""Helpers for the reproducibility and fault-injection tests: run `hedonic-neurons` in child processes that
are SIGKILLed at seeded points, and compare two run directories result by result.

The children are forked from a multiprocessing forkserver that has imported torch and the package once, so
an attempt does not pay the imports again (and, unlike a plain fork of the pytest process, inherits no
OpenMP thread pool); the kill itself is a real SIGKILL of a real process, so whatever it had half-written
stays on disk.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# Fields that measure how long something took, or how it was run, not what it computed.
TIMING_KEYS = {"seconds", "train_seconds", "wall_seconds", "threads", "loss_delta_s", "oca_s", "pas_s"}


def _walk(root: Path) -> list[Path]:
    out = []
    for dirpath, _, files in os.walk(root):
        out += [Path(dirpath) / f for f in files]
    return out


def n_files(root: Path) -> int:
    """Every file under root, half-written temporaries included (they count as progress too)."""
    return len(_walk(root)) if root.exists() else 0


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS and not k.endswith("_seconds")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with path.open(newline="") as fh:
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS and not k.endswith("seconds")}
                for r in csv.DictReader(fh)]


def result_files(root: Path) -> list[str]:
    """The files that carry results: matrices, models, partitions, metrics, tables, coalitions, summaries."""
    keep = []
    for p in _walk(root):
        rel = p.relative_to(root).as_posix()
        if (rel.startswith(("stages/", "verification/"))
                or rel in ("runtime.json", "timings.json", "tables/timings.csv")
                or p.suffix in (".tmp", ".html", ".log") or ".tmp" in p.name):
            # markers, how-it-ran records, temporaries, interactive views (random element ids), and the
            # self-verification records: they report the float rounding error of the model's own forward
            # pass against the readout (~1e-7), which is itself rounding and varies with the thread count
            continue
        if p.suffix == ".md" and p.with_suffix(".csv").exists():
            continue  # a table's Markdown twin: its CSV is compared (without timing columns)
        keep.append(rel)
    return sorted(keep)


def differences(a: Path, b: Path) -> list[str]:
    """Every result file that differs between run directories a and b (timings excepted); [] when identical.

    safetensors are compared tensor by tensor, bitwise; JSON after dropping timing fields; CSV row by row
    without timing columns; Markdown line by line without wall-time lines.
    """
    fa, fb = result_files(a), result_files(b)
    diffs = [f"only in {a.name}: {x}" for x in sorted(set(fa) - set(fb))]
    diffs += [f"only in {b.name}: {x}" for x in sorted(set(fb) - set(fa))]
    for rel in sorted(set(fa) & set(fb)):
        pa, pb = a / rel, b / rel
        if pa.suffix == ".safetensors":
            from safetensors.numpy import load_file

            ta, tb = load_file(str(pa)), load_file(str(pb))
            bad = [k for k in ta if k not in tb or ta[k].dtype != tb[k].dtype or ta[k].shape != tb[k].shape
                   or not np.array_equal(ta[k], tb[k], equal_nan=True)]
            if bad or set(ta) != set(tb):
                diffs.append(f"{rel}: tensors {bad or sorted(set(ta) ^ set(tb))}")
        elif pa.suffix == ".json":
            if _strip(json.loads(pa.read_text())) != _strip(json.loads(pb.read_text())):
                diffs.append(rel)
        elif pa.suffix == ".csv":
            if _csv_rows(pa) != _csv_rows(pb):
                diffs.append(rel)
        elif pa.suffix == ".md":
            def lines(p):
                return [ln for ln in p.read_text().splitlines() if "time of this invocation" not in ln]
            if lines(pa) != lines(pb):
                diffs.append(rel)
        elif pa.read_bytes() != pb.read_bytes():
            diffs.append(rel)
    return diffs


_CTX = None


def _context():
    """One forkserver for the session, with torch, transformers, peft and the package already imported."""
    global _CTX
    if _CTX is None:
        sys.path.insert(0, str(Path(__file__).parent))  # so that the server can import _runner
        # OpenMP threads that sleep instead of spinning while they wait: the 2-thread run shares the cores with
        # the other xdist worker, and spinning threads made a 2-thread training loop 20-40x slower than with 1
        # thread on the loaded 2-core machine (PASSIVE: 2x). Scheduling only: the results are the same. Read
        # once, when the server imports torch, so it is set before the server starts.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        _CTX = multiprocessing.get_context("forkserver")
        # each attempt is a fresh child, so whatever it imports beyond these it imports again: peft (LoRA, the
        # reranker's fine-tuning and every later stage), torch._dynamo (imported by the first AdamW, i.e. by
        # every training) and leidenalg took 10 s, 9 s and 3 s per attempt on the loaded machine
        _CTX.set_forkserver_preload(["hedonic_neurons", "torch", "torch._dynamo", "transformers", "sklearn.cluster",
                                     "peft", "leidenalg", "hedonic_neurons.cli", "hedonic_neurons.experiments.mnist",
                                     "hedonic_neurons.experiments.reranker", "_runner"])
    return _CTX


def run_cli(argv: list[str], timeout: float = 600.0) -> int:
    """`hedonic-neurons argv` in a child of the forkserver, to completion; returns its exit status."""
    ctx = _context()
    import _runner

    p = ctx.Process(target=_runner.cli, args=(list(argv),))
    p.start()
    p.join(timeout)
    if p.is_alive():  # timed out: do not leave it running
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        return None
    return p.exitcode


def kill_and_resume(argv: list[str], out: Path, *, n_kills: int, seed: int, total_files: int,
                    poll: float = 0.002, timeout: float = 600.0) -> list[dict]:
    """Run `hedonic-neurons argv` (which runs or resumes the experiment into `out`) in child processes;
    SIGKILL each as soon as `out` holds a seeded random number of files (one drawn in each of n_kills equal
    bins of 1..total_files-1, so the kills spread over the stages), then resume; finally run once more to completion.

    Returns one record per attempt: the file-count goal, whether it was killed (or had finished first), the
    files and stage markers on disk then and whether a half-written temporary was among them.
    """
    ctx = _context()
    import _runner

    rng = np.random.default_rng(seed)
    # one seeded point in each of n_kills equal bins of 1..total_files-1: few kills still spread over the stages
    edges = np.linspace(1, total_files, min(n_kills, total_files - 1) + 1).astype(int)
    goals = np.array([rng.integers(lo, max(lo + 1, hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
    log = []
    for goal in goals:
        goal = max(int(goal), n_files(out) + 1)  # every attempt must make progress before it is killed
        p = ctx.Process(target=_runner.cli, args=(list(argv),))
        p.start()
        t0 = time.time()
        while p.is_alive() and n_files(out) < goal and time.time() - t0 < timeout:
            time.sleep(poll)
        if not p.is_alive():
            p.join()
            log.append({"goal": goal, "killed": False, "exitcode": p.exitcode})
            continue
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        files = _walk(out)
        log.append({"goal": goal, "killed": p.exitcode == -signal.SIGKILL, "files": len(files),
                    "stages": sum(1 for f in files if f.suffix == ".done"),
                    "tmp_on_disk": any(".tmp" in f.name for f in files)})
    code = run_cli(argv, timeout)
    assert code == 0, f"the final resume exited with {code}"
    return log


@pytest.fixture(scope="session")
def compare_runs():
    return differences


@pytest.fixture(scope="session")
def run_with_kills():
    return kill_and_resume


@pytest.fixture(scope="session")
def cli_child():
    return run_cli


@pytest.fixture(scope="session")
def count_files():
    return n_files
