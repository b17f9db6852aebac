"""Data-parallel valuations on 2 CPU processes (gloo, forked workers) match one process to 1e-12 (float64).

The workers are forked from the test process (the model and the float64 RMSNorm patch are inherited, and
no interpreter has to import torch again); each joins a gloo group through the same environment
variables `torchrun` sets, and runs the same `distributed_valuations` the CLI runs under torchrun.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import traceback

import numpy as np
import pytest
import torch
from models_tiny import tiny_model, token_batches

from hedonic_neurons.distributed import shard_sizes
from hedonic_neurons.models import compute_valuations
from hedonic_neurons.models.distributed import distributed_valuations
from hedonic_neurons.models.valuate import Valuations
from hedonic_neurons.valuations.accumulate import relative_error

TOL = 1e-12


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), HEDONIC_NEURONS_DIST_TIMEOUT="60")


def _worker(rank, world, port, out, model, batches, kw):
    try:
        _env(rank, world, port)
        torch.set_num_threads(1)
        v = distributed_valuations(model, batches, 1, dtype=torch.float64, progress=False, **kw)
        if rank == 0:
            v.save(out)
        os._exit(0)
    except BaseException:  # noqa: BLE001 -- report to the parent, then die with a non-zero status
        (out.parent / f"error{rank}.txt").write_text(traceback.format_exc())
        os._exit(1)


def _dead_worker(rank, world, port):
    """Joins the group like a real rank, then is killed before the statistics are reduced."""
    import torch.distributed as dist

    _env(rank, world, port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    os.kill(os.getpid(), signal.SIGKILL)


def _run(targets, timeout=120):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=t, args=a) for t, a in targets]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
    return [p.exitcode for p in procs]


@pytest.fixture(scope="module")
def setup():
    return tiny_model("llama"), token_batches(n=8, batch_size=3)


@pytest.mark.parametrize("sizes", [None, [7, 1]], ids=["even", "one-input-shard"])
@pytest.mark.parametrize("ablation", ["auto", "mean"])
def test_two_processes_match_one(setup, sizes, ablation, tmp_path, f64_norms):
    model, batches = setup
    kw = {"sizes": sizes, "ablation": ablation}
    port = _port()
    out = tmp_path / "val"
    codes = _run([(_worker, (r, 2, port, out, model, batches, kw)) for r in range(2)])
    errs = [f.read_text() for f in tmp_path.glob("error*.txt")]
    assert codes == [0, 0], errs
    got = Valuations.load(out)
    ref = compute_valuations(model, batches, 1, ablation=ablation, dtype=torch.float64, progress=False)
    assert got.n_samples == ref.n_samples == 8 and got.meta["world_size"] == 2
    assert got.meta["shard_sizes"] == (sizes or [4, 4]) and got.ablation == ref.ablation
    for name in ("phi_oca", "phi_pas", "pas_se", "psi", "psi_se", "phi_hessian"):
        a, b = getattr(got, name), getattr(ref, name)
        assert np.abs(b).max() > 0, name
        assert relative_error(a, b) <= TOL, (name, relative_error(a, b))
    assert abs(got.agreement["pearson"] - ref.agreement["pearson"]) < 1e-9


def test_one_process_same_path(setup, f64_norms):
    """Without torchrun the same function runs on one process and equals compute_valuations."""
    model, batches = setup
    got = distributed_valuations(model, batches, 1, dtype=torch.float64, progress=False)
    ref = compute_valuations(model, batches, 1, dtype=torch.float64, progress=False)
    for name in ("phi_oca", "phi_pas", "pas_se", "psi", "psi_se", "phi_hessian"):
        assert relative_error(getattr(got, name), getattr(ref, name)) <= TOL, name


def test_more_processes_than_inputs(setup, monkeypatch):
    model, _ = setup
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"^2 inputs for 3 processes: .*launch at most 2 processes") as e:
        distributed_valuations(model, token_batches(n=2, batch_size=2), 1, progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="must be 2 positive numbers summing to 8"):
        shard_sizes(8, 2, [8, 0])


def test_a_killed_rank_fails_the_run_with_one_line(setup, tmp_path):
    model, batches = setup
    port = _port()
    out = tmp_path / "val"
    codes = _run([(_worker, (0, 2, port, out, model, batches, {})), (_dead_worker, (1, 2, port))], timeout=150)
    assert codes[1] == -signal.SIGKILL and codes[0] == 1
    last = (tmp_path / "error0.txt").read_text().strip().splitlines()[-1]
    assert "RuntimeError: rank 0/2:" in last and "another rank died" in last, last
    assert not out.exists()
