"""Data-parallel valuations on 2 CPU processes (gloo, forked workers) match one process to 1e-12 (float64).

The workers are forked from the test process (the model and the float64 RMSNorm patch are inherited, and
no interpreter has to import torch again); each joins a gloo group through the same environment
variables `torchrun` sets, and runs the same `distributed_valuations` the CLI runs under torchrun.
"""

from __future__ import annotations

import os
import signal

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


def _worker(out, model, batches, kw):
    """A rank: its shard of the valuations; rank 0 saves the merged result."""
    def run(rank):
        v = distributed_valuations(model, batches, 1, dtype=torch.float64, progress=False, **kw)
        if rank == 0:
            v.save(out)
    return run


@pytest.fixture(scope="module")
def setup():
    return tiny_model("llama"), token_batches(n=8, batch_size=3)


@pytest.mark.parametrize("sizes", [None, [7, 1]], ids=["even", "one-input-shard"])
@pytest.mark.parametrize("ablation", ["auto", "mean"])
def test_two_processes_match_one(setup, sizes, ablation, tmp_path, f64_norms, forked_ranks):
    model, batches = setup
    kw = {"sizes": sizes, "ablation": ablation}
    out = tmp_path / "val"
    codes = forked_ranks.run(_worker(out, model, batches, kw), 2, timeout=120)
    assert codes == [0, 0], forked_ranks.errors()
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


def test_a_killed_rank_fails_the_run_with_one_line(setup, tmp_path, forked_ranks):
    model, batches = setup
    out = tmp_path / "val"
    worker = _worker(out, model, batches, {})

    def rank_fn(rank):
        if rank == 1:  # joins the group like a real rank, then is killed before the statistics are reduced
            import torch.distributed as dist

            dist.init_process_group("gloo", rank=rank, world_size=2)
            os.kill(os.getpid(), signal.SIGKILL)
        worker(rank)

    codes = forked_ranks.run(rank_fn, 2, timeout=150)
    assert codes[1] == -signal.SIGKILL and codes[0] == 1
    last = (tmp_path / "error0.txt").read_text().strip().splitlines()[-1]
    assert "RuntimeError: rank 0/2:" in last and "another rank died" in last, last
    assert not out.exists()
