"""The reranker under `torchrun`: its valuation stage on 2 gloo processes equals one process.

The ranks are forked from the test process (the `forked_ranks` fixture of tests/conftest.py) and join a gloo
group through the environment variables torchrun sets. Float64 models: the sharded statistics are
merged exactly, so the matrices agree to 1e-12 (relative to each matrix's largest entry).
"""

from __future__ import annotations

import os
import shutil
import signal

import numpy as np
import pytest
import torch

from hedonic_neurons.distributed import Dist
from hedonic_neurons.experiments.reranker import RerankerExperiment, run_reranker
from hedonic_neurons.models.distributed import sharded_half_valuations
from hedonic_neurons.models.extract import layer_cache, subset_cache, text_batches
from hedonic_neurons.valuations.accumulate import relative_error

pytestmark = pytest.mark.heavy(30)

TOL = 1e-12
LATER = ("valuations", "partitions", "evaluate", "tables")  # the stages the 2-process runs redo


def _f64_loader(make_model, arch="llama"):
    def load():
        m, tok = make_model(arch)
        return m.double(), tok
    return load


@pytest.fixture(scope="module")
def f64_rmsnorm():
    """HF's RMSNorm upcasts to float32 even in a float64 model (DESIGN trap 9): run it in float64 here."""
    from transformers.models.llama import modeling_llama

    def forward(self, hidden_states):
        var = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(var + self.variance_epsilon))

    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(modeling_llama.LlamaRMSNorm, "forward", forward)
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory, f64_rmsnorm):
    """A whole 1-process run of a tiny float64 LLaMA with LoRA (layer 1, 1 seed): the reference."""
    import importlib.util
    from pathlib import Path

    # the folder's conftest helpers, once per module (pytest runs in importlib mode: no `import conftest`)
    spec = importlib.util.spec_from_file_location("_reranker_conftest", Path(__file__).with_name("conftest.py"))
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    tiny_config, tiny_model, write_pool = conf.tiny_config, conf.tiny_model, conf.write_pool
    root = tmp_path_factory.mktemp("dist_ref")
    pool = write_pool(root / "data")
    cfg = dict(model="llama", seeds=1, layers=(1,))
    run_reranker(tiny_config(pool, **cfg), root / "one", quiet=True, model_loader=_f64_loader(tiny_model))
    return root, pool, cfg


def _resumable_copy(one, dst):
    """The reference run with its valuation stage and everything after it undone (data and adapter kept)."""
    shutil.copytree(one, dst)
    for f in (dst / "stages").glob("*.done"):
        if f.stem.split(":")[0] in LATER:
            f.unlink()
    for d in ("matrices", "activations", "partitions", "eval", "verification"):
        shutil.rmtree(dst / d, ignore_errors=True)
    return dst


def _same_matrices(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        if a[k].dtype.kind == "i":
            assert np.array_equal(a[k], b[k]), k
        else:
            assert np.abs(b[k]).max() > 0, k
            assert relative_error(a[k], b[k]) <= TOL, (k, relative_error(a[k], b[k]))


def test_reranker_on_two_processes_matches_one(reference, tmp_path, make_model, make_config, forked_ranks):
    """The whole command on 2 ranks, resuming after fine-tuning: rank 0 runs the stages of its own while
    the other waits, both run the valuation stage on their shards, rank 0 writes the same matrices."""
    from safetensors.numpy import load_file

    root, pool, cfg = reference
    out = _resumable_copy(root / "one", tmp_path / "two")
    data_stamp = os.stat(out / "data" / "probe.json").st_mtime_ns

    def rank_fn(rank):
        run_reranker(make_config(pool, **cfg), out, quiet=True, model_loader=_f64_loader(make_model))

    assert forked_ranks.run(rank_fn, 2) == [0, 0], forked_ranks.errors()
    _same_matrices(load_file(str(root / "one" / "matrices" / "1.safetensors")),
                   load_file(str(out / "matrices" / "1.safetensors")))
    _same_matrices(load_file(str(root / "one" / "activations" / "1.safetensors")),
                   load_file(str(out / "activations" / "1.safetensors")))
    assert os.stat(out / "data" / "probe.json").st_mtime_ns == data_stamp  # finished stages were not redone
    for stage in ("valuations:1", "partitions:1:0", "evaluate:1:0", "tables"):
        assert (out / "stages" / f"{stage}.done").is_file(), stage
    assert (out / "verification" / "1.json").is_file()  # rank 0 verified its shard of half a
    assert (out / "tables" / "table6_synergy.md").is_file()


def _direct_inputs(arch, pool, make_model):
    from hedonic_neurons.ir.embedded import query_passage_pairs

    model, tok = make_model(arch)
    model = model.double()
    texts = query_passage_pairs(30, "train", data_dir=pool).texts()[:19]
    ood = query_passage_pairs(10, "ood", data_dir=pool).texts()[:7]
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(texts))
    halves = {"a": np.sort(perm[:10]), "b": np.sort(perm[10:])}
    return model, tok, texts, ood, halves


@pytest.mark.parametrize("arch,limit", [("llama", 20_000_000), ("bert", 20_000_000), ("bert", 0)],
                         ids=["norm-tail-exact", "bert-exact-direct", "bert-hessian"])
def test_sharded_halves_uneven_split(arch, limit, reference, tmp_path, make_model, make_config, forked_ranks):
    """Shards of 9 + 1 and 1 + 8 inputs (one rank holds a single input of each half) give the matrices of
    the reranker's 1-process `_valuate`, on every PAS path (closed form, direct exact, Hessian + agreement)."""
    _, pool, _ = reference
    model, tok, texts, ood, halves = _direct_inputs(arch, pool, make_model)
    cfg = make_config(pool, model=arch, direct_pas_limit=limit, agreement_pairs=50, max_length=40)
    exp = RerankerExperiment(cfg, tmp_path / "ref", quiet=True)
    full = layer_cache(model, text_batches(tok, texts, batch_size=16, max_length=40), 1, progress=False)
    ref = {h: exp._valuate(subset_cache(full, ix), False) for h, ix in halves.items()}
    # PAS and psi are differences of logits. Through BERT's tail modules (no closed form) they are evaluated
    # directly, and the float64 rounding of a tail call depends on how many rows it holds (a shard's calls
    # hold fewer); a random tiny BERT's pair synergies are ~1e-8 of its logits, so there the bound is 1e-12
    # of the logit scale (measured: se within 1e-8 of its own size). The closed form (LLaMA): 1e-12 relative.
    scale = {k: np.abs(full.local_logit()).max() if arch == "bert" and k != "phi_oca" and k != "oca_se" else None
             for k in ("phi_oca", "oca_se", "phi_pas", "pas_se", "psi", "psi_se")}
    ref_ood = layer_cache(model, text_batches(tok, ood, batch_size=16, max_length=40), 1, progress=False).acts
    sizes = {"a": [9, 1], "b": [1, 8]}
    kw = dict(other_texts=[ood], max_length=40, direct_pas_limit=limit, agreement_pairs=50, sizes=sizes)
    res_file = tmp_path / "res.npz"

    def rank_fn(rank):
        with Dist("cpu") as d:
            got = sharded_half_valuations(model, tok, texts, halves, 1, dist=d, **kw)
        if rank == 0:
            np.savez(res_file, acts=got.acts, ood=got.other_acts[0],
                     **{f"{k}_{h}": v for h, m in got.mats.items() for k, v in m.items()},
                     **{f"corr_{h}": got.info[h].get("agreement_pearson", np.nan) for h in halves})
        else:
            assert got is None

    assert forked_ranks.run(rank_fn, 2) == [0, 0], forked_ranks.errors()
    got = dict(np.load(res_file))
    # the ranks batch their shards differently: float64 forward passes agree to rounding, not bit for bit
    assert relative_error(got.pop("acts"), full.acts) <= TOL and relative_error(got.pop("ood"), ref_ood) <= TOL
    for h, (m, info) in ref.items():
        corr = got.pop(f"corr_{h}")
        if limit == 0:
            assert info["pas"].startswith("hessian") and abs(corr - info["agreement_pearson"]) < 1e-9
        assert set(m) == {k[:-2] for k in got if k.endswith(f"_{h}")}
        for k, v in m.items():
            assert np.abs(v).max() > 0, (k, h)
            if scale[k] is None:
                assert relative_error(got[f"{k}_{h}"], v) <= TOL, (k, h, relative_error(got[f"{k}_{h}"], v))
            else:
                assert np.abs(got[f"{k}_{h}"] - v).max() <= TOL * scale[k], (k, h, np.abs(got[f"{k}_{h}"] - v).max())


def test_one_process_is_the_same_path(reference, tmp_path, make_model, make_config):
    """Without torchrun `sharded_half_valuations` is a 1-process world and equals the reranker's `_valuate`."""
    _, pool, _ = reference
    model, tok, texts, ood, halves = _direct_inputs("llama", pool, make_model)
    exp = RerankerExperiment(make_config(pool, model="llama", max_length=40), tmp_path / "ref", quiet=True)
    full = layer_cache(model, text_batches(tok, texts, batch_size=16, max_length=40), 1, progress=False)
    got = sharded_half_valuations(model, tok, texts, halves, 1, dist=Dist("cpu"), max_length=40)
    for h, ix in halves.items():
        m, _ = exp._valuate(subset_cache(full, ix), False)
        for k, v in m.items():
            assert relative_error(got.mats[h][k], v) <= TOL, (k, h)


def test_killed_rank_fails_the_run_with_one_line_and_resume_completes(reference, tmp_path, make_model,
                                                                       make_config, forked_ranks):
    """Rank 1 is killed inside the valuation stage: rank 0 fails with one line, no valuation marker or matrix
    is written, and the same command on one process resumes the run to the reference matrices."""
    from safetensors.numpy import load_file

    import hedonic_neurons.models.distributed as md

    root, pool, cfg = reference
    out = _resumable_copy(root / "one", tmp_path / "two")

    def rank_fn(rank):
        if rank == 1:  # forked: the patch lives in this rank only
            md.reduce_stats = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        run_reranker(make_config(pool, **cfg), out, quiet=True, model_loader=_f64_loader(make_model))

    codes = forked_ranks.run(rank_fn, 2)
    assert codes == [1, -signal.SIGKILL], (codes, forked_ranks.errors())
    last = (tmp_path / "error0.txt").read_text().strip().splitlines()[-1]
    assert last.startswith("RuntimeError: rank 0/2:") and "another rank died" in last, last
    assert not (out / "stages" / "valuations:1.done").exists() and not (out / "matrices").exists()
    run_reranker(make_config(pool, **cfg), out, quiet=True, model_loader=_f64_loader(make_model))
    _same_matrices(load_file(str(root / "one" / "matrices" / "1.safetensors")),
                   load_file(str(out / "matrices" / "1.safetensors")))


def test_rank_0_dying_in_its_own_stage_fails_the_waiting_rank_with_one_line(reference, tmp_path, make_model,
                                                                           make_config, forked_ranks):
    root, pool, cfg = reference
    out = _resumable_copy(root / "one", tmp_path / "two")

    def rank_fn(rank):
        if rank == 0:
            RerankerExperiment.stage_partitions = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        run_reranker(make_config(pool, **cfg), out, quiet=True, model_loader=_f64_loader(make_model))

    codes = forked_ranks.run(rank_fn, 2)
    assert codes == [-signal.SIGKILL, 1], (codes, forked_ranks.errors())
    last = (tmp_path / "error1.txt").read_text().strip().splitlines()[-1]
    assert last.startswith("RuntimeError: rank 1/2: waiting for rank 0") and "another rank died" in last, last


@pytest.mark.slow
def test_cli_under_torchrun_from_scratch(tmp_path):
    """The real launcher: `torchrun --nproc-per-node 2 -m hedonic_neurons.cli reranker` on a tiny float32 LLaMA
    saved to disk, from scratch (rank 1 waits through data and fine-tuning), against the same command on one
    process: the same fine-tune, every stage done, matrices equal to float32 rounding of the forward passes."""
    import importlib.util
    import json
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.numpy import load_file

    spec = importlib.util.spec_from_file_location("_reranker_conftest", Path(__file__).with_name("conftest.py"))
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    conf.write_pool(tmp_path / "data")
    model, tok = conf.tiny_model("llama")
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ["--quiet", "reranker", "--model", str(tmp_path / "model"), "--task", "cqtr", "--layers", "1", "--seeds",
            "1", "--n-train", "30", "--n-probe", "20", "--n-ood", "20", "--solver-m", "2000", "--solver-omega", "200",
            "--n-largest", "2", "--n-random", "1", "--max-length", "40", "--data-dir", str(tmp_path / "data"),
            "--no-report"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                          "hedonic_neurons.cli", *args, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True, timeout=1200)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "hedonic_neurons.cli", *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=1200)
    assert one.returncode == 0, one.stderr[-2000:]
    for stage in ("data", "finetune", "valuations:1", "partitions:1:0", "evaluate:1:0", "tables"):
        assert (tmp_path / "two" / "stages" / f"{stage}.done").is_file(), stage
    ft = [json.loads((tmp_path / r / "finetune.json").read_text())["ood_after"] for r in ("one", "two")]
    assert ft[0] == ft[1]
    a = load_file(str(tmp_path / "one" / "matrices" / "1.safetensors"))
    b = load_file(str(tmp_path / "two" / "matrices" / "1.safetensors"))
    assert set(a) == set(b)
    for k in a:
        assert relative_error(b[k], a[k]) <= 1e-5, (k, relative_error(b[k], a[k]))
