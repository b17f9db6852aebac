"""Resuming after a stage is deleted, and bad input (one-line errors that name the fix)."""

import json
import os

import pytest

from hedonic_neurons.cli import main
from hedonic_neurons.experiments.reranker import RerankerExperiment, run_reranker
from hedonic_neurons.layers import parse_layers


def test_resume_recomputes_only_the_deleted_stage(pool, tmp_path, make_model, make_config):
    cfg = make_config(pool, model="llama", seeds=1, layers=(1,))
    out = tmp_path / "run"
    calls = []
    rd = run_reranker(cfg, out, quiet=True, model_loader=lambda: calls.append(1) or make_model("llama"))
    part = rd.partition_path("1", "hedonic_pas")
    adapter = out / "adapter" / "adapter_model.safetensors"
    stamp = {p: os.stat(p).st_mtime_ns for p in (part, adapter, out / "data" / "ood.json")}
    before = json.loads((out / "eval" / "1_s0.json").read_text())
    (out / "stages" / "evaluate:1:0.done").unlink()
    (out / "eval" / "1_s0.json").unlink()
    exp = RerankerExperiment(make_config(pool, model="llama", seeds=1, layers=(1,)), out, quiet=True,
                             model_loader=lambda: make_model("llama"))
    done = []
    orig = exp._stage
    exp._stage = lambda name, fn: (done.append(name) if not exp.rd.stage_done(name) else None, orig(name, fn))
    exp.run()
    assert done == ["evaluate:1:0"]
    assert {p: os.stat(p).st_mtime_ns for p in stamp} == stamp  # nothing else was rewritten
    after = json.loads((out / "eval" / "1_s0.json").read_text())
    for m, vals in before["per_method"].items():  # deterministic recomputation
        nums = {k: v for k, v in vals.items() if not isinstance(v, str)}
        assert {k: after["per_method"][m][k] for k in nums} == pytest.approx(nums, rel=1e-6, abs=1e-12, nan_ok=True)


def test_changed_settings_recompute_instead_of_reusing(pool, tmp_path, make_model, make_config):
    run_reranker(make_config(pool, model="llama", seeds=1, layers=(1,)), tmp_path / "r", quiet=True,
                 model_loader=lambda: make_model("llama"))
    cfg = make_config(pool, model="llama", seeds=1, layers=(2,))
    rd = run_reranker(cfg, tmp_path / "r", quiet=True, model_loader=lambda: make_model("llama"))
    # layer 1's stages left the run with their files; config.json says what produced the files
    assert not list((rd.root / "partitions" / "1").glob("*.json")) and (rd.root / "partitions" / "2").is_dir()
    assert not (rd.root / "stages" / "valuations:1.done").exists()
    assert json.loads((rd.root / "config.json").read_text())["layers"] == [2]


def test_too_few_probe_pairs_to_split(pool, tmp_path, make_model, make_config):
    # one query of 10 probe pairs cannot be split into two halves of whole queries
    with pytest.raises(ValueError, match=r"each half needs >= 8") as exc:
        run_reranker(make_config(pool, model="llama", seeds=1, layers=(1,), n_probe=10), tmp_path / "r",
                     quiet=True, model_loader=lambda: make_model("llama"))
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "r" / "data" / "probe.json").exists()


def _cli_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_bad_input_one_line_errors(pool, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    out = str(tmp_path / "x")
    err = _cli_error(capsys, ["reranker", "--task", "cqrt", "--model", "minilm", "--out", out])
    assert "unknown task 'cqrt'" in err and "cqtr" in err
    err = _cli_error(capsys, ["reranker", "--model", "no-such-org/no-such-model", "--out", out,
                              "--data-dir", str(pool), "--quiet"])
    assert "not in the Hugging Face cache" in err or "offline" in err
    err = _cli_error(capsys, ["reranker", "--model", "minilm", "--layers", "3-9", "--out", out,
                              "--data-dir", str(pool), "--quiet"])
    assert "outside" in err and "--layers" in err
    assert "within 0-5" in err  # from MiniLM's config, before its weights load
    err = _cli_error(capsys, ["reranker", "--model", "minilm", "--layers", "7-x", "--out", out])
    assert "'3-6'" in err
    (pool / "ir" / "candidates.train.jsonl").write_text("")
    err = _cli_error(capsys, ["reranker", "--model", "minilm", "--layers", "1-2", "--out", str(tmp_path / "y"),
                              "--data-dir", str(pool), "--quiet"])
    assert "empty" in err and "hedonic-neurons fetch ir" in err


def test_parse_layers():
    assert parse_layers("7-14") == tuple(range(7, 15))
    assert parse_layers("1,3,5") == (1, 3, 5)
    assert parse_layers(None) is None
    with pytest.raises(ValueError, match="'3-6'"):
        parse_layers("14-7")


def test_identical_coalitions_are_ablated_once_across_seeds(pool, tmp_path, make_model, make_config):
    # Ward is deterministic: its coalitions under seed 1 are those of seed 0, and their drops are reused.
    cfg = make_config(pool, model="llama", task="cqtr", layers=(1,))
    rd = run_reranker(cfg, tmp_path / "run", quiet=True, model_loader=lambda: make_model("llama"))
    e0 = json.loads((rd.root / "eval" / "1_s0.json").read_text())
    e1 = json.loads((rd.root / "eval" / "1_s1.json").read_text())
    d0 = {tuple(r["members"]): r["ood_drop"] for r in e0["coalitions"]}
    shared = [r for r in e1["coalitions"] if tuple(r["members"]) in d0]
    assert shared and all(r["ood_drop"] == d0[tuple(r["members"])] for r in shared)
    assert e1["n_ablated"] == len(e1["coalitions"]) - len(shared) and e1["M_full"] == e0["M_full"]
