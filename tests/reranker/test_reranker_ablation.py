"""Coalition ablation through the rest of the model: replay + hooks == editing the LoRA weights by hand."""

import numpy as np
import pytest
import torch

from hedonic_neurons.metrics.partition_metrics import coalition_subset
from hedonic_neurons.models.ablate import ablation_scores
from hedonic_neurons.models.finetune import peft_model

TEXTS = ["query: cat dog passage: the cat sat with a dog", "query: moon passage: river and forest",
         "query: king queen war passage: the king met the queen", "query: sun passage: sun sun star"]


def _randomise_lora(pm, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _reference(pm, tok, layer, coal):
    """Scores with the coalition's LoRA reverted by zeroing weights: up/gate delta rows (lora_B rows)
    and the down delta columns (lora_A columns) of those channels."""
    from hedonic_neurons.models import get_adapter

    ad = get_adapter(pm)
    saved = {}
    with torch.no_grad():
        for role, mod in ad.mlp_modules(layer).items():
            if not hasattr(mod, "lora_A"):
                continue
            for name in mod.lora_A:
                if role == "down":
                    w = mod.lora_A[name].weight
                    saved[(role, "A")] = w.clone()
                    w[:, coal] = 0
                else:
                    w = mod.lora_B[name].weight
                    saved[(role, "B")] = w.clone()
                    w[coal, :] = 0
        enc = tok(TEXTS, padding=True, return_tensors="pt")
        out = pm(**enc).logits[:, 0].double().numpy()
        for (role, which), w in saved.items():
            mod = ad.mlp_modules(layer)[role]
            getattr(mod, f"lora_{which}")["default"].weight.copy_(w)
    return out


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "bert"])
def test_ablation_matches_weight_editing(arch, make_model):
    model, tok = make_model(arch)
    pm = peft_model(model, [1, 2])
    _randomise_lora(pm)
    pm.eval()
    n = 24
    coals = [np.array([0, 3, 5]), np.array([7]), np.arange(12), np.array([], dtype=int)]
    masks = np.zeros((len(coals), n), dtype=bool)
    for r, c in enumerate(coals):
        masks[r, c] = True
    for layer in (1, 2):
        base, abl = ablation_scores(pm, tok, TEXTS, layer, masks, batch_size=3, coalition_batch=3)
        enc = tok(TEXTS, padding=True, return_tensors="pt")
        with torch.no_grad():
            full = pm(**enc).logits[:, 0].double().numpy()
        np.testing.assert_allclose(base, full, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(abl[3], full, rtol=1e-5, atol=1e-6)  # empty coalition: nothing changes
        for r, c in enumerate(coals[:3]):
            np.testing.assert_allclose(abl[r], _reference(pm, tok, layer, c), rtol=1e-4, atol=1e-5)
        assert not np.allclose(abl[2], full)  # ablating half the channels does change the scores


def test_coalition_subset_rule():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5, 5])
    sub = coalition_subset(labels, n_largest=2, n_random=1, seed=0)
    assert [c.tolist() for c in sub[:2]] == [[0, 1, 2, 3], [4, 5, 6]]
    assert len(sub) == 3 and sub[2].size == 2  # singletons are never drawn
    assert [c.tolist() for c in coalition_subset(labels, 2, 1, seed=0)] == [c.tolist() for c in sub]


def _task_data(qids):
    from hedonic_neurons.ir.embedded import PairSet
    from hedonic_neurons.models.finetune import TaskData

    n = len(qids)
    pairs = PairSet(list(qids), ["q"] * n, [f"p{i}" for i in range(n)], ["x"] * n, np.zeros(n, dtype=np.int64),
                    np.zeros(n), np.arange(n), "ood", "derived")
    return TaskData(pairs, [f"t{i}" for i in range(n)], np.arange(n, dtype=float), np.arange(n, dtype=float),
                    np.zeros((n, 3)))


def test_drop_subset_keeps_whole_queries():
    from hedonic_neurons.models.finetune import drop_subset

    d = _task_data(["a"] * 3 + ["b"] * 3 + ["c"] * 3)
    assert drop_subset(d, 7).pairs.qids == ["a"] * 3 + ["b"] * 3  # c would be cut: dropped whole
    assert drop_subset(d, 6).texts == [f"t{i}" for i in range(6)]
    assert drop_subset(d, 2).pairs.qids == ["a"] * 3  # at least one query, even above n
    assert drop_subset(d, 0) is d and drop_subset(d, 100) is d
    np.testing.assert_array_equal(drop_subset(d, 6).y_std, np.arange(6.0))


def test_size_presets_follow_the_parameter_count():
    from hedonic_neurons.experiments.reranker import SIZE_PRESETS, RerankerConfig

    small = RerankerConfig(model="minilm").resolve_sizes(22_700_000)
    large = RerankerConfig(model="smollm2", n_ood_drop=50).resolve_sizes(135_000_000)
    assert small.n_train == SIZE_PRESETS["small"]["n_train"] and small.n_largest == SIZE_PRESETS["small"]["n_largest"]
    assert large.n_probe == SIZE_PRESETS["large"]["n_probe"]
    assert large.n_ood_drop == 50  # a value the user gave is kept
