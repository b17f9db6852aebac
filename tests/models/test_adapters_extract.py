"""Adapter registry, LoRA configs, hook extraction (early stop, pooling, base activations), OCA, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models_brute import parts
from models_tiny import tiny_model, token_batches

from hedonic_neurons.models import (
    DecoderAdapter,
    Valuations,
    activation_stats,
    compute_valuations,
    extract_activations,
    get_adapter,
    layer_cache,
    lora_config,
    register_adapter,
)
from hedonic_neurons.models.adapters import _REGISTRY


def test_registry_knows_each_architecture_and_unwraps_peft():
    for arch, name, n_ff, norm in [("llama", "llama", 48, "model.norm"), ("mistral", "mistral", 40, "model.norm"),
                                   ("gpt_neox", "gpt_neox", 56, "gpt_neox.final_layer_norm"),
                                   ("bert", "bert", 44, None)]:
        model = tiny_model(arch)
        a = get_adapter(model)  # a PeftModel: unwrapped to the transformers model
        assert a.name == name and a.n_layers == 3 and a.d_model == 32 and a.d_ff(1) == n_ff
        assert a.norm_path == norm and a.has_lora(1)
        assert a.tail_is_norm == (arch != "bert")
        assert set(a.mlp_modules(0)) == ({"gate", "up", "down"} if arch in ("llama", "mistral") else {"up", "down"})


def test_unknown_architecture_names_it_and_the_fix():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=32))
    with pytest.raises(ValueError, match=r"'gpt2'.*register_adapter"):
        get_adapter(model)
    with pytest.raises(ValueError, match="register_adapter"):
        get_adapter(torch.nn.Linear(3, 3))


def test_register_adapter_adds_an_architecture():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    # an architecture the detection refuses (Conv1D MLP): a registered adapter takes precedence
    model = GPT2ForSequenceClassification(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=32))
    model.config.model_type = "my_llama_clone"
    with pytest.raises(ValueError, match="my_llama_clone"):
        get_adapter(model)

    class Clone(DecoderAdapter):
        name = "clone"

    register_adapter("my_llama_clone", Clone)
    try:
        assert get_adapter(model).name == "clone"
    finally:
        del _REGISTRY["my_llama_clone"]
    with pytest.raises(ValueError, match="not a ModelAdapter"):
        register_adapter("x", object)


def test_layer_out_of_range_names_the_range():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=r"layer 3 is out of range.*0\.\.2"):
        layer_cache(model, token_batches(), 3, progress=False)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        lora_config(tiny_model("llama", lora=False), [1, 7])
    with pytest.raises(ValueError, match="site 'residual' is not supported"):
        layer_cache(model, token_batches(), 1, site="residual", progress=False)


def test_lora_config_targets_only_the_mlp_of_the_chosen_layers():
    for arch, expect in [("llama", {"gate_proj", "up_proj", "down_proj"}),
                         ("gpt_neox", {"dense_h_to_4h", "dense_4h_to_h"}),
                         ("bert", {"intermediate.dense", "output.dense"})]:
        model = tiny_model(arch, lora_layers=(1,))
        lora = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
        assert all(".1." in n for n in lora), lora
        assert all("attention" not in n for n in lora), lora  # BERT: attention.output.dense excluded
        assert {n.split(".1.", 1)[1].replace("mlp.", "") for n in lora} == expect


def test_base_activations_equal_the_model_with_adapters_disabled():
    """g_base from the base weights in the same forward pass == g of the model with LoRA switched off."""
    for arch in ("llama", "bert"):
        model = tiny_model(arch, lora_layers=(1,))  # LoRA on layer 1 only: earlier layers identical
        batches = token_batches()
        out = extract_activations(model, batches, 1, dtype=torch.float64, progress=False)[1]
        with model.disable_adapter():
            plain = extract_activations(model, batches, 1, base=False, dtype=torch.float64, progress=False)[1]
        np.testing.assert_allclose(out["acts_base"], plain["acts"], atol=1e-12)
        assert np.abs(out["acts"] - out["acts_base"]).max() > 1e-3  # the adapter does change them


def test_forward_stops_after_the_last_layer_asked_for():
    model = tiny_model("llama")
    p2 = parts(model, "llama", 2)
    calls = []
    h = p2["layer"].register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        extract_activations(model, token_batches(), [0, 1], progress=False)
        assert calls == []
        extract_activations(model, token_batches(), [2], progress=False)
        assert len(calls) == 2  # two batches
    finally:
        h.remove()


def test_several_layers_in_one_pass_equal_single_layer_passes():
    model = tiny_model("gpt_neox")
    both = extract_activations(model, token_batches(), [0, 2], dtype=torch.float64, progress=False)
    for layer in (0, 2):
        one = extract_activations(model, token_batches(), layer, dtype=torch.float64, progress=False)[layer]
        for k in ("H", "acts", "acts_base"):
            np.testing.assert_array_equal(both[layer][k], one[k])


def test_readout_ignores_padding_side():
    model = tiny_model("mistral")
    right = token_batches(batch_size=8)[0]
    ids, mask = right["input_ids"].clone(), right["attention_mask"].clone()
    left_ids, left_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for r in range(ids.shape[0]):
        L = int(mask[r].sum())
        left_ids[r, -L:] = ids[r, :L]
        left_mask[r, -L:] = 1
    a = extract_activations(model, [right], 1, dtype=torch.float64, progress=False)[1]
    # left padding: positions shift, so only the causal content matters; compare one row at a time
    b = extract_activations(model, [{"input_ids": left_ids, "attention_mask": left_mask}], 1,
                            dtype=torch.float64, progress=False)[1]
    single = [extract_activations(model, [{"input_ids": ids[r:r + 1, :int(mask[r].sum())]}], 1,
                                  dtype=torch.float64, progress=False)[1]["H"][0] for r in range(ids.shape[0])]
    np.testing.assert_allclose(a["H"], np.stack(single), atol=1e-10)
    assert b["H"].shape == a["H"].shape
    # values: RoPE attention depends on relative positions only and the pads are masked, so the left-padded
    # readout (last position) equals each text run alone; reading a pad or the wrong position would not
    np.testing.assert_allclose(b["H"], np.stack(single), atol=1e-8)
    assert np.abs(np.stack(single)).max() > 1e-3 and not np.allclose(b["H"][0], b["H"][1])
    adapter = get_adapter(model)
    assert adapter.pool_index({"input_ids": left_ids}, ids.shape[1]).tolist() == [ids.shape[1] - 1] * ids.shape[0]
    assert adapter.pool_index({"input_ids": ids}, ids.shape[1]).tolist() == (mask.sum(1) - 1).tolist()


def test_running_stats_stream_equals_batch_statistics():
    model = tiny_model("llama")
    batches = token_batches(n=12)
    acts = extract_activations(model, batches, 1, dtype=torch.float64, progress=False)[1]["acts"]
    stats = activation_stats(model, batches[:1], 1, progress=False)
    stats = activation_stats(model, batches[1:], 1, stats=stats, progress=False)  # N grows
    assert stats[1].count == 12
    np.testing.assert_allclose(stats[1].mean, acts.mean(0), atol=1e-12)
    np.testing.assert_allclose(stats[1].cov, np.cov(acts, rowvar=False), atol=1e-10)


def test_oca_matches_direct_numpy():
    model = tiny_model("llama")
    v = compute_valuations(model, token_batches(n=12), 1, methods=("oca",), dtype=torch.float64, progress=False)
    p = parts(model, "llama", 1)
    down = p["down"]
    W = (down.base_layer.weight + down.lora_B["default"].weight @ down.lora_A["default"].weight
         * down.scaling["default"]).detach().numpy()
    a = v.cache.acts
    n = a.shape[1]
    ref = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                cos = W[:, i] @ W[:, j] / np.linalg.norm(W[:, i]) / np.linalg.norm(W[:, j])
                ref[i, j] = (1 - abs(cos)) * np.corrcoef(a[:, i], a[:, j])[0, 1]
    np.testing.assert_allclose(v.phi_oca, ref, atol=1e-10)
    np.testing.assert_allclose(v.cache.W_down, W, atol=1e-14)


def test_valuations_save_and_load(tmp_path):
    v = compute_valuations(tiny_model("gpt_neox"), token_batches(), 1, dtype=torch.float64, progress=False)
    assert set(v.timings) >= {"forward", "oca", "pas_exact", "pas_hessian"}
    assert {"pearson", "spearman", "topk_overlap"} <= set(v.agreement)
    v.save(tmp_path)
    w = Valuations.load(tmp_path)
    for k, arr in v.matrices().items():
        np.testing.assert_array_equal(getattr(w, k), arr)
    assert w.layer == 1 and w.ablation == "lora" and w.agreement == v.agreement


def test_nan_inputs_and_bad_arguments_give_clear_errors():
    from hedonic_neurons.models.gated_mlp import GatedMLPClassifier

    torch.manual_seed(0)
    mnist = GatedMLPClassifier(d_in=12, d_model=8, d_ff=16, n_blocks=2, n_classes=3)
    X = torch.randn(6, 12)
    X[2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        compute_valuations(mnist, X, 2, targets=[0, 1, 2, 0, 1, 2], progress=False)
    with pytest.raises(ValueError, match="NaN"):  # batches that bypass the input check: caught in the hook
        layer_cache(mnist, [X], 2, progress=False)
    X[2, 3] = 0.0
    with pytest.raises(ValueError, match="gold label.*one label per input"):  # (no labels: "predicted" is the default)
        compute_valuations(mnist, X, 2, target="label", progress=False)
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="unknown valuation method"):
        compute_valuations(model, token_batches(), 1, methods=("shapley",), progress=False)
    with pytest.raises(ValueError, match="ablation 'nope'|ablation='nope'|'nope' is unknown"):
        layer_cache(model, token_batches(), 1, ablation="nope", progress=False)
    with pytest.raises(ValueError, match="needs LoRA"):
        layer_cache(tiny_model("llama", lora=False), token_batches(), 1, ablation="lora", progress=False)
    with pytest.raises(ValueError, match="tokenizer"):
        compute_valuations(model, ["a text", "another"], 1, progress=False)
