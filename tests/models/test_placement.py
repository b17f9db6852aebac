"""Models placed with accelerate's device_map: hooks, cached tail and LoRA ablation with offloaded layers.

On CPU the split that exercises accelerate's machinery is disk offload: the layers after layer 0, the
final norm and the head live on the meta device and are loaded by accelerate's hooks only while they
run (on GPUs the same hooks move activations between devices instead; docs/scale.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models_tiny import tiny_model, token_batches

from hedonic_neurons.models import ablate_channels, compute_valuations, load_model
from hedonic_neurons.models.placement import is_dispatched, parse_device_map, parse_max_memory

OFFLOAD = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
           "model.layers.2": "disk", "model.norm": "disk", "score": "disk"}


def _dispatched(tmp_path):
    from accelerate import dispatch_model

    model = tiny_model("llama")
    dispatch_model(model.base_model.model, device_map=OFFLOAD, offload_dir=str(tmp_path), main_device="cpu")
    return model


def test_offloaded_layers_give_the_same_valuations(tmp_path, f64_norms):
    batches = token_batches()
    ref = compute_valuations(tiny_model("llama"), batches, 1, dtype=torch.float64, progress=False)
    model = _dispatched(tmp_path)
    down = model.base_model.model.model.layers[1].mlp.down_proj.base_layer
    assert is_dispatched(model) and down.weight.device.type == "meta"
    got = compute_valuations(model, batches, 1, dtype=torch.float64, progress=False)
    assert got.ablation == "lora"
    for name in ("phi_oca", "phi_pas", "pas_se", "psi", "phi_hessian"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-12, atol=1e-14)
    assert down.weight.device.type == "meta"  # offloaded again after the weights were read


def test_lora_ablation_through_offloaded_layers(tmp_path, f64_norms):
    batches = token_batches(n=4)
    plain, model = tiny_model("llama"), _dispatched(tmp_path)
    with torch.no_grad():
        for m in (plain, model):
            m.eval()
        with ablate_channels(plain, 1, [0, 5, 9]):
            ref = plain(**batches[0]).logits
        with ablate_channels(model, 1, [0, 5, 9]):
            got = model(**batches[0]).logits
        assert not torch.allclose(ref, plain(**batches[0]).logits)  # the ablation changes the output
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    tiny_model("llama", lora=False).float().save_pretrained(d)
    return d


def test_device_map_that_does_not_fit_is_one_line(saved_model):
    with pytest.raises(ValueError, match=r"^device_map 'auto' .* does not fit this model: .*--offload-folder") as e:
        load_model(saved_model, device_map="auto", max_memory={"cpu": "1KB"})
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"does not fit this model") as e:
        load_model(saved_model, device_map={"model.embed_tokens": "cpu"})
    assert "\n" not in str(e.value)


def test_device_map_load_and_cli_parsing(saved_model):
    model, _ = load_model(saved_model, device_map={"model": "cpu", "score": "cpu"}, dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float64  # loaded in dtype where it sits
    assert parse_device_map("auto") == "auto" and parse_device_map('{"model.layers.0": 0}') == {"model.layers.0": 0}
    assert parse_max_memory("0=70GiB,cpu=10GiB") == {0: "70GiB", "cpu": "10GiB"}
    with pytest.raises(ValueError, match="DEVICE=SIZE"):
        parse_max_memory("70GiB")
    with pytest.raises(ValueError, match="JSON"):
        parse_device_map("{not json")
