"""The reranker resumes through the stage runner: each config field recomputes exactly the stages that
read it (and everything downstream); a real re-run leaves the other stages' files untouched."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest

from hedonic_neurons.experiments.reranker import RerankerConfig, RerankerExperiment, run_reranker
from hedonic_neurons.models.finetune import FinetuneConfig
from hedonic_neurons.partition import SolverConfig

ALL = ["data", "finetune", "valuations:1", "partitions:1:0", "evaluate:1:0", "tables"]
FT, VAL, PART, EVAL = ALL[1:], ALL[2:], ALL[3:], ALL[4:]
# the fine-tuning fields RerankerConfig owns itself (task, layers, seed, device, max_length are synced)
FT_OWN = ("rank", "alpha", "lr", "head_lr", "epochs", "batch_size", "warmup", "max_grad_norm", "head_init",
          "head_init_pairs", "rank_loss")
OTHER_FT = {"rank": 4, "alpha": 8.0, "lr": 1e-3, "head_lr": 1e-3, "epochs": 2, "batch_size": 4, "warmup": 0.2,
            "max_grad_norm": 0.5, "head_init": "random", "head_init_pairs": 50, "rank_loss": "listnet"}
OTHER_SOLVER = {"k": 2, "preset": "topk", "utility": "additive", "threshold": 0.01, "tau_quantile": 0.8,
                "absorb_quantile": 0.8, "order": "random",
                "init": "x", "n_init": 2, "max_sweeps": 5, "sampler": "uniform", "m": 600, "omega": 60,
                "min_size": 3, "max_size": 8, "epsilon": 0.2, "delta": 0.2, "emit": "one", "alpha": 0.2,
                "cost": 5.0, "cover_all": False, "n_certificate": 10, "random_state": 1}


def cases(base: RerankerConfig, pool):
    other = str(pool) + "-copy"
    shutil.copytree(pool, other, dirs_exist_ok=True)
    top = {
        "model": ("minilm", FT), "task": ("mtfl", ALL), "layers": ((1, 2), [*FT, "valuations:2", "partitions:2:0",
                                                                          "evaluate:2:0"]),
        "device": ("cuda", FT), "seeds": (2, ["partitions:1:1", "evaluate:1:1", "tables"]), "seed0": (1, ALL),
        "n_train": (20, ALL), "n_probe": (30, ALL), "n_ood": (10, ALL), "n_ood_drop": (5, EVAL),
        "per_query": (5, ALL), "max_words": (30, ALL), "max_length": (32, FT), "crossfit": (False, VAL),
        "n_largest": (1, EVAL), "n_random": (2, EVAL), "coalition_batch": (2, EVAL), "eval_batch": (3, EVAL),
        "direct_pas_limit": (10, VAL), "agreement_pairs": (10, VAL), "synergy_pairs": (10, EVAL),
        "data_dir": (other, ALL), "track": (True, ["tracking"]), "report": (True, ["report"]),
        "verify": (False, VAL),
    }
    for name, (value, expected) in top.items():
        yield name, dataclasses.replace(base, **{name: value}), expected
    for f in FT_OWN:
        yield f"finetune.{f}", dataclasses.replace(base, finetune=dataclasses.replace(base.finetune,
                                                                                       **{f: OTHER_FT[f]})), FT
    for f in dataclasses.fields(SolverConfig):
        yield f"solver.{f.name}", dataclasses.replace(base, solver=dataclasses.replace(
            base.solver, **{f.name: OTHER_SOLVER[f.name]})), PART


@pytest.fixture
def finished(pool, tmp_path, make_model, make_config):
    cfg = make_config(pool, model="llama", seeds=1, layers=(1,))
    out = tmp_path / "run"
    run_reranker(cfg, out, quiet=True, model_loader=lambda: make_model("llama"))
    return cfg, out


def _stale(cfg, out, make_model):
    exp = RerankerExperiment(dataclasses.replace(cfg), out, quiet=True, model_loader=lambda: make_model("llama"))
    exp.resolve()
    return exp.plan().stale()


def test_every_field_recomputes_exactly_its_stages(finished, pool, make_model):
    cfg, out = finished
    all_cases = list(cases(cfg, pool))
    covered = {n for n, _, _ in all_cases}
    declared = {f.name for f in dataclasses.fields(RerankerConfig) if f.name not in ("solver", "finetune")}
    declared |= {f"solver.{f.name}" for f in dataclasses.fields(SolverConfig)}
    declared |= {f"finetune.{f}" for f in FT_OWN}
    assert {f.name for f in dataclasses.fields(FinetuneConfig)} - set(FT_OWN) == {
        "task", "layers", "seed", "device", "max_length"}  # the synced ones
    assert declared == covered, sorted(declared ^ covered)
    assert _stale(cfg, out, make_model) == []
    for name, changed, expected in all_cases:
        assert sorted(_stale(changed, out, make_model)) == sorted(expected), name


def test_rerun_touches_only_the_stale_stages(finished, make_model):
    cfg, out = finished
    stamp = {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    changed = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, m=3000), seeds=2)
    rd = run_reranker(changed, out, quiet=True, model_loader=lambda: make_model("llama"))
    now = {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    for rel in ("data/ood.json", "adapter/adapter_model.safetensors", "matrices/1.safetensors",
                "stages/finetune.done", "stages/valuations:1.done"):
        assert now[rel] == stamp[rel], rel
    for rel in ("partitions/1/hedonic_pas.json", "eval/1_s0.json", "stages/tables.done",
                "tables/table1_extrinsic.csv"):
        assert now[rel] != stamp[rel], rel
    assert (rd.root / "eval" / "1_s1.json").is_file()  # the added seed, and the tables rebuilt with it
    saved = json.loads((rd.root / "config.json").read_text())
    assert saved["solver"]["m"] == 3000 and saved["seeds"] == 2
    assert json.loads((rd.root / "stages" / "partitions:1:0.done").read_text())["fields"]["solver"]["m"] == 3000
    assert os.path.getmtime(rd.root / "config.json") >= os.path.getmtime(rd.root / "stages" / "data.done")
