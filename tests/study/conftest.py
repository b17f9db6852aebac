"""Tiny saved models for `study`: the planted positive control, its negative control, and random tiny causal LMs
and a 3-label classifier of every tested architecture, all sharing the planted model's word-level tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hedonic_neurons.models.planted_lm import build_planted_lm, planted_texts


def _save_arch(root: Path, arch: str, tokenizer) -> Path:
    import transformers as tf

    common = dict(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                  pad_token_id=tokenizer.pad_token_id, initializer_range=0.2)
    if arch == "gpt_neox":
        model = tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(intermediate_size=24, **common))
    elif arch == "gemma2":
        model = tf.Gemma2ForCausalLM(tf.Gemma2Config(head_dim=8, intermediate_size=24, num_key_value_heads=1,
                                                     final_logit_softcapping=5.0, **common))
    elif arch == "mistral":
        model = tf.MistralForCausalLM(tf.MistralConfig(intermediate_size=24, num_key_value_heads=1, **common))
    elif arch == "bert":
        model = tf.BertForSequenceClassification(tf.BertConfig(intermediate_size=24, num_labels=3, **common))
    else:
        raise KeyError(arch)
    torch.manual_seed(0)
    with torch.no_grad():  # norms away from their identity, so that they matter
        for name, p in model.named_parameters():
            if "norm" in name and p.ndim == 1:
                p.add_(torch.randn(p.shape, dtype=p.dtype) * 0.3)
    d = root / arch
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def planted(tmp_path_factory) -> dict[str, Path]:
    """The planted positive control (channels 0 and 1 of layer 0 AND-like on the triggers)."""
    return build_planted_lm(tmp_path_factory.mktemp("planted"), n_texts=64)


@pytest.fixture(scope="session")
def unplanted(tmp_path_factory) -> dict[str, Path]:
    """The negative control: the same model and texts with the pair's writes removed."""
    return build_planted_lm(tmp_path_factory.mktemp("unplanted"), n_texts=64, planted=False)


@pytest.fixture(scope="session")
def arch_models(tmp_path_factory, planted) -> dict[str, Path]:
    """{arch: saved model dir} for GPT-NeoX, Gemma-2, Mistral (causal LMs) and BERT (a 3-label classifier), plus
    "texts" (plain lines) and "labelled" (.jsonl with a label per text)."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("archs")
    tok = AutoTokenizer.from_pretrained(planted["model"])
    out = {arch: _save_arch(root, arch, tok) for arch in ("gpt_neox", "gemma2", "mistral", "bert")}
    texts = planted_texts(24, seed=1, min_words=6, max_words=10)
    out["texts"] = root / "texts.txt"
    out["texts"].write_text("\n".join(texts) + "\n")
    out["labelled"] = root / "labelled.jsonl"
    out["labelled"].write_text("".join(json.dumps({"text": t, "label": i % 3}) + "\n" for i, t in enumerate(texts)))
    return out


@pytest.fixture(scope="session")
def planted_run(planted, tmp_path_factory):
    """`study` (Python API) on the planted control, layers 0-1."""
    from hedonic_neurons.experiments.study import study

    out = tmp_path_factory.mktemp("planted_run") / "run"
    return study(str(planted["model"]), str(planted["texts"]), layers="0-1", out=out, quiet=True, max_length=24)


STUDY_ARCHS = ("gpt_neox", "gemma2", "mistral", "bert")


@pytest.fixture(scope="session")
def arch_runs(arch_models, tmp_path_factory) -> dict[str, tuple[int, Path, str]]:
    """{arch: (exit status, run dir, stderr)} of `hedonic-neurons study` on each tiny architecture, layers 1-2."""
    import contextlib
    import io

    from hedonic_neurons.cli import main

    out = {}
    for arch in STUDY_ARCHS:
        texts = arch_models["labelled" if arch == "bert" else "texts"]
        run = tmp_path_factory.mktemp(f"study_{arch}") / "run"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["--quiet", "study", str(arch_models[arch]), "--texts", str(texts), "--layers", "1-2",
                       "--out", str(run), "--max-length", "16", "--max-samples", "160", "--no-baselines"])
        out[arch] = (rc, run, err.getvalue())
    return out
