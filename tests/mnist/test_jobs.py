"""Per-layer parallelism (docs/scale.md): `jobs=2` runs the partition and metric stages of different layers
in worker processes and writes the same files and markers as `jobs=1`, apart from timing fields."""

from __future__ import annotations

import csv
import json

import pytest
from safetensors import safe_open

from hedonic_neurons.experiments.mnist import MnistConfig, plan_stages, run_mnist
from hedonic_neurons.partition import SolverConfig
from hedonic_neurons.rundir import RunDir

TIMING = ("seconds", "train_seconds", "oca_s", "pas_s", "loss_delta_s")


@pytest.fixture
def tiny(tiny_mnist):
    """The tiny run on two layers (so jobs=2 has two to run side by side), smaller still: 100 digits, m=200."""
    def make(path, **kw) -> MnistConfig:
        base = dict(layers=["h3", "h4"], n_train=100, n_test=64, loss_delta_images=16,
                    solver=SolverConfig(m=200, omega=20))
        return tiny_mnist(path, **{**base, **kw})
    return make


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _content(p):
    if p.suffix in (".json", ".done"):
        return _untimed(json.loads(p.read_text()))
    if p.suffix == ".csv":  # without the timing columns
        rows = list(csv.DictReader(p.open()))
        return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    if p.suffix == ".safetensors":  # tensors and metadata (safetensors orders the header keys as it likes)
        with safe_open(str(p), "np") as f:
            return {k: f.get_tensor(k).tobytes() for k in sorted(f.keys())}, f.metadata()
    return p.read_bytes()


def _files(root):
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        # runtime.json holds jobs itself, summary.md the wall time; the .md twins of the timed tables are
        # compared through their CSV
        if not p.is_file() or rel in ("runtime.json", "summary.md", "tables/accuracy.md", "tables/stability.md"):
            continue
        out[rel] = _content(p)
    return out


def test_jobs_2_writes_what_jobs_1_writes(tmp_path, digits_npz, tiny):
    one, two = tmp_path / "one", tmp_path / "two"
    run_mnist(tiny(digits_npz), one, threads=1, jobs=1)
    run_mnist(tiny(digits_npz), two, threads=1, jobs=2)
    a, b = _files(one), _files(two)
    assert sorted(a) == sorted(b)
    assert any(k.startswith("partitions/seed0_h3/") for k in a) and "stages/metrics_seed0_h4.done" in a
    assert [k for k in a if a[k] != b[k]] == []
    assert json.loads((two / "runtime.json").read_text())[-1]["jobs"] == 2
    assert "jobs" not in json.loads((two / "config.json").read_text())  # not in the fingerprint
    assert plan_stages(RunDir(two), tiny(digits_npz)).stale() == []

    # resume: a layer whose partition and metric stages were lost is recomputed in the pool, the rest reused
    (two / "stages" / "partitions_seed0_h3.done").unlink()
    before = (two / "partitions" / "seed0_h4" / "hedonic_pas.json").stat().st_mtime_ns
    run_mnist(tiny(digits_npz), two, threads=1, jobs=2)
    assert (two / "partitions" / "seed0_h4" / "hedonic_pas.json").stat().st_mtime_ns == before
    assert [k for k, v in _files(two).items() if v != a[k]] == []


def test_a_failing_job_fails_as_serial(tmp_path, digits_npz, tiny):
    # a solver setting the estimator refuses: the same one-line error from the worker as from the serial path
    bad = tiny(digits_npz, solver=SolverConfig(m=200, omega=20, sampler="bogus"))
    errors = []
    for jobs in (1, 2):
        with pytest.raises(Exception) as exc:
            run_mnist(bad, tmp_path / f"j{jobs}", threads=1, jobs=jobs)
        errors.append((type(exc.value), str(exc.value)))
        assert not (tmp_path / f"j{jobs}" / "stages" / "partitions_seed0_h3.done").exists()
    assert errors[0] == errors[1] and "\n" not in errors[0][1]
    with pytest.raises(ValueError, match="--jobs 0"):
        run_mnist(tiny(digits_npz), tmp_path / "j0", jobs=0)
