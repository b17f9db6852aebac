"""The MNIST run resumes through the stage runner: a changed config field recomputes exactly the stages
that read it and everything downstream, the rest is reused untouched; config.json always matches."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from hedonic_neurons.experiments.mnist import MnistConfig, plan_stages, run_mnist
from hedonic_neurons.partition import SolverConfig
from hedonic_neurons.rundir import RunDir

pytestmark = pytest.mark.heavy(40)

ALL = ["model_seed0", "valuations_seed0_h4", "partitions_seed0_h4", "metrics_seed0_h4", "tables"]
FROM_VALUATIONS = ALL[1:]
FROM_PARTITIONS = ALL[2:]


def changes(tiny, data):
    """(field, changed config, stages expected to recompute) for every field of MnistConfig."""
    other = str(data) + ".copy.npz"
    shutil.copyfile(data, other)
    yield from [
        ("seeds", tiny(data, seeds=[0, 1]), ["model_seed1", "valuations_seed1_h4", "partitions_seed1_h4",
                                             "metrics_seed1_h4", "tables"]),
        ("layers", tiny(data, layers=["h3", "h4"]), ["valuations_seed0_h3", "partitions_seed0_h3",
                                                     "metrics_seed0_h3", "tables"]),
        ("data", tiny(data, data=other), ALL),
        ("n_train", tiny(data, n_train=150), ALL),
        ("n_test", tiny(data, n_test=100), ALL),
        ("test_fraction", tiny(data, test_fraction=0.25), ALL),
        ("split_seed", tiny(data, split_seed=1), ALL),
        ("epochs", tiny(data, epochs=2), ALL),
        ("lr", tiny(data, lr=2e-3), ALL),
        ("d_model", tiny(data, d_model=128), ALL),
        ("d_ff", tiny(data, d_ff=512), ALL),
        ("top_k", tiny(data, top_k=16), ["metrics_seed0_h4", "tables"]),
        ("loss_delta_images", tiny(data, loss_delta_images=16), FROM_VALUATIONS),
        ("oca_weight", tiny(data, oca_weight="identity"), FROM_VALUATIONS),
        ("controls", tiny(data, controls=True),
         [f"{s}_{v}0{t}" for v in ("random_init", "shuffled")
          for s, t in (("model", ""), ("valuations", "_h3"), ("partitions", "_h3"), ("metrics", "_h3"))]
         + ["tables"]),
        ("verify", tiny(data, verify=True), FROM_VALUATIONS),
        ("control_layer", tiny(data, control_layer="h4"), ["tables"]),
        ("control_seeds", tiny(data, control_seeds=[0]), []),  # no controls in this run: nothing reads it
        ("n_grids", tiny(data, n_grids=2), ["tables"]),
        ("crossfit", tiny(data, crossfit=False), FROM_VALUATIONS),
        ("crossfit_seed", tiny(data, crossfit_seed=3), FROM_VALUATIONS),
        *[(f"solver.{f.name}", tiny(data, solver=dataclasses.replace(SolverConfig(m=500, omega=50),
                                                                      **{f.name: _other(f.name)})), FROM_PARTITIONS)
          for f in dataclasses.fields(SolverConfig)],
    ]


def _other(name: str):
    return {"k": 2, "preset": "topk", "utility": "additive", "threshold": 0.01, "tau_quantile": 0.8,
            "absorb_quantile": 0.7, "init": "x", "order": "random",
            "n_init": 2, "max_sweeps": 5, "sampler": "uniform", "m": 600, "omega": 60, "min_size": 3,
            "max_size": 8, "epsilon": 0.2, "delta": 0.2, "emit": "one", "alpha": 0.2, "cost": 5.0,
            "cover_all": False, "n_certificate": 10, "random_state": 1}[name]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits_npz, tiny_mnist):
    """A finished tiny run (config: `tiny_mnist`)."""
    out = tmp_path_factory.mktemp("stages") / "run"
    run_mnist(tiny_mnist(digits_npz), out, threads=1)
    return out


def _mtimes(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_every_field_has_exactly_its_dependent_stages(finished, digits_npz, tiny_mnist):
    cases = list(changes(tiny_mnist, digits_npz))
    covered = {name for name, _, _ in cases}
    declared = {f.name for f in dataclasses.fields(MnistConfig) if f.name != "solver"}
    declared |= {f"solver.{f.name}" for f in dataclasses.fields(SolverConfig)}
    assert declared == covered, f"fields without a test case: {sorted(declared - covered)}"
    assert plan_stages(RunDir(finished), tiny_mnist(digits_npz)).stale() == []  # the finished run is fresh
    for name, cfg, expected in cases:
        assert sorted(plan_stages(RunDir(finished), cfg).stale()) == sorted(expected), name


def test_rerun_recomputes_exactly_the_stale_stages(finished, digits_npz, tiny_mnist, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)  # copy2 keeps the modification times
    before = _mtimes(out)
    cfg = tiny_mnist(digits_npz, solver=SolverConfig(m=600, omega=50))
    run_mnist(cfg, out, threads=1)
    after = _mtimes(out)
    changed = {p for p in before if after.get(p) != before[p]}
    for p in before:
        untouched = p.startswith(("models/", "matrices/", "stages/model_", "stages/valuations_"))
        assert (p not in changed) == untouched or p == "config.json" or p.startswith("figures/"), p
    assert any(p.startswith("partitions/seed0_h4/") for p in changed)
    assert {"metrics/seed0_h4.json", "tables/table7_synergy.csv", "stages/tables.done"} <= changed
    assert json.loads((out / "config.json").read_text()) == json.loads(json.dumps(dataclasses.asdict(cfg)))
    marker = json.loads((out / "stages" / "partitions_seed0_h4.done").read_text())
    assert marker["fields"]["solver"]["m"] == 600
    assert plan_stages(RunDir(out), cfg).stale() == []

    # a second seed: its own stages and the tables, nothing of seed 0
    before = _mtimes(out)
    cfg2 = dataclasses.replace(cfg, seeds=[0, 1])
    run_mnist(cfg2, out, threads=1)
    after = _mtimes(out)
    assert all(after[p] == before[p] for p in before if "seed0" in p)
    assert after["tables/table7_synergy.csv"] != before["tables/table7_synergy.csv"]
    seeds = {r["seed"] for r in json.loads((out / "coalitions.json").read_text())}
    assert seeds == {0, 1}
    assert json.loads((out / "config.json").read_text())["seeds"] == [0, 1]

    # back to one seed: the seed-1 stages leave the run, with their files
    run_mnist(cfg, out, threads=1)
    assert not (out / "models" / "seed1.safetensors").exists()
    assert not (out / "partitions" / "seed1_h4").exists()
    assert {r["seed"] for r in json.loads((out / "coalitions.json").read_text())} == {0}


def test_old_and_foreign_config_files(finished, digits_npz, tiny_mnist, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    cfg = json.loads((out / "config.json").read_text())
    flat = {k: v for k, v in cfg.items() if k != "solver"}
    flat.update({k: cfg["solver"][k] for k in ("k", "min_size", "max_size", "m", "omega", "epsilon", "delta")})
    (out / "config.json").write_text(json.dumps(flat))  # an older version's flat keys: loads
    run_mnist(tiny_mnist(digits_npz), out, threads=1)
    assert json.loads((out / "config.json").read_text()) == cfg
    (out / "config.json").write_text(json.dumps({**cfg, "bogus": 1}))
    with pytest.raises(ValueError, match="--out.*--force"):
        run_mnist(tiny_mnist(digits_npz), out, threads=1)
    before = _mtimes(out)
    run_mnist(tiny_mnist(digits_npz), out, threads=1, force=True)  # --force: every stage again
    after = _mtimes(out)
    assert all(after[p] != before[p] for p in before if p.startswith(("models/", "matrices/", "stages/")))
