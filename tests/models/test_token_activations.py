"""Coalition activations per token (against a manual forward of each text alone), top examples, and the direct
effect of a coalition's write (against a hand computation through the final norm and the unembedding)."""

import numpy as np
import pytest
import torch

from hedonic_neurons.models.token_activations import (
    coalition_token_activations,
    direct_effect,
    token_strings,
    top_examples,
)

WORDS = [f"w{i}" for i in range(50)] + ["<b>", '"q"', "a&b", "it's"]


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]")


def tiny_lm(arch="llama", seed=0, **extra):
    """A float64 tiny causal LM (vocab 64 = the tokenizer's ids and spare rows), norms made to matter."""
    torch.manual_seed(seed)
    common = dict(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, pad_token_id=0,
                  initializer_range=0.2, **extra)
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(intermediate_size=48, num_key_value_heads=2, **common))
    else:
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        model = GPTNeoXForCausalLM(GPTNeoXConfig(intermediate_size=56, **common))
    model = model.double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.ndim == 1:
                p.add_(torch.randn(p.shape, dtype=p.dtype) * 0.3)
    return model


def _texts(n=7, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(3, 11))) for _ in range(n)]


COALS = {0: [np.array([1, 5, 7]), np.array([0, 47])], 2: [np.array([3]), np.array([10, 11, 12, 13])]}


def test_token_activations_match_a_manual_forward():
    model, tok = tiny_lm(), tiny_tokenizer()
    texts = _texts()
    acts, tokens = coalition_token_activations(model, tok, texts, [2, 0], COALS, batch_size=3)
    assert sorted(acts) == [0, 2] and len(tokens) == len(texts)
    for t, text in enumerate(texts):
        ids = tok(text, return_tensors="pt")["input_ids"]
        assert tokens[t] == text.split()  # word-level: each token is one word, padding dropped
        x_in = {}
        hooks = [model.model.layers[la].mlp.register_forward_pre_hook(
            lambda m, a, la=la, x_in=x_in: x_in.__setitem__(la, a[0])) for la in COALS]
        with torch.no_grad():
            model(ids)
        for h in hooks:
            h.remove()
        for la, coals in COALS.items():
            mlp = model.model.layers[la].mlp
            g = mlp.act_fn(mlp.gate_proj(x_in[la][0])) * mlp.up_proj(x_in[la][0])  # (T, d_ff)
            want = torch.stack([g[:, torch.as_tensor(c)].mean(1) for c in coals], 1).detach().numpy()
            assert acts[la][t].dtype == np.float32 and acts[la][t].shape == (ids.shape[1], len(coals))
            np.testing.assert_allclose(acts[la][t], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no coalitions given"):
        coalition_token_activations(model, tok, texts, [1], COALS)
    with pytest.raises(ValueError, match="outside"):
        coalition_token_activations(model, tok, texts, [0], {0: [np.array([48])]})


def test_top_examples_windows_and_shading():
    tokens = [["a", "b", "c", "d", "e"], ["f", "g"], ["h", "i", "j"]]
    acts = [np.array([[0.1, -2.0], [0.5, 0.0], [3.0, 0.0], [0.2, 0.0], [0.0, 0.0]]),
            np.array([[1.0, 1.0], [-0.5, 0.5]]), np.array([[0.0, 0.2], [2.0, 0.1], [0.0, 0.3]])]
    ex = top_examples(acts, tokens, k=2, context=1)
    assert len(ex) == 2
    first = ex[0]
    assert [e["text"] for e in first] == [0, 2]  # peaks 3.0 (text 0) and 2.0 (text 2), one per text
    assert first[0]["tokens"] == ["b", "c", "d"] and first[0]["peak_pos"] == 1 and first[0]["peak"] == 3.0
    assert first[0]["acts"] == pytest.approx([0.5 / 3, 1.0, 0.2 / 3], abs=1e-4)  # 4 decimals kept
    assert first[1]["tokens"] == ["h", "i", "j"] and first[1]["acts"][1] == pytest.approx(2 / 3, abs=1e-4)
    second = ex[1]  # text 1 peaks at 1.0 (token f), text 2 at 0.3 (token j): window clipped at the ends
    assert [e["text"] for e in second] == [1, 2] and second[0]["tokens"] == ["f", "g"]
    assert second[0]["peak_pos"] == 0 and all(-1 <= a <= 1 for e in second for a in e["acts"])
    with pytest.raises(ValueError, match="activation rows"):
        top_examples([np.zeros((2, 1))], [["a"]])


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_direct_effect_is_the_hand_computation(arch):
    model, tok = tiny_lm(arch), tiny_tokenizer()
    members, w = np.array([2, 9, 30]), np.array([0.5, 1.5, -0.7])
    if arch == "llama":
        W, g, E = model.model.layers[1].mlp.down_proj.weight, model.model.norm.weight, model.lm_head.weight
    else:
        W = model.gpt_neox.layers[1].mlp.dense_4h_to_h.weight
        g, E = model.gpt_neox.final_layer_norm.weight, model.get_output_embeddings().weight
    v = (W[:, torch.as_tensor(members)] @ torch.as_tensor(w)).detach().numpy()
    if arch == "gpt_neox":
        v = v - v.mean()  # LayerNorm centres before it scales
    planted = 17  # make one token's unembedding row point along the write: it must come first
    with torch.no_grad():
        E[planted] = torch.as_tensor(g.detach().numpy() * v) * 50.0
    scores = E.detach().numpy() @ (g.detach().numpy() * v)
    out = direct_effect(model, 1, members, weights=w, k=5, tokenizer=tok)
    want_top, want_bottom = np.argsort(-scores)[:5], np.argsort(scores)[:5]
    assert [s for _, s in out["promoted"]] == pytest.approx(scores[want_top].tolist(), rel=1e-9)
    assert [s for _, s in out["suppressed"]] == pytest.approx(scores[want_bottom].tolist(), rel=1e-9)
    assert [t for t, _ in out["promoted"]] == token_strings(tok, want_top.tolist())
    assert out["promoted"][0][0] == token_strings(tok, [planted])[0]
    # with weights=None every member counts once
    ones = direct_effect(model, 1, members, k=3)
    v1 = (W[:, torch.as_tensor(members)].sum(1)).detach().numpy()
    v1 = v1 - v1.mean() if arch == "gpt_neox" else v1
    s1 = E.detach().numpy() @ (g.detach().numpy() * v1)
    assert [int(t) for t, _ in ones["promoted"]] == np.argsort(-s1)[:3].tolist()  # no tokenizer: ids
    with pytest.raises(ValueError, match="one per member"):
        direct_effect(model, 1, members, weights=[1.0])


def test_direct_effect_without_an_unembedding():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
               num_key_value_heads=2, pad_token_id=0, num_labels=1)
    torch.manual_seed(0)
    clf = LlamaForSequenceClassification(LlamaConfig(**cfg)).double()
    out = direct_effect(clf, 0, [1, 2])
    assert out["promoted"] == [] and "no unembedding" in out["note"]
    tied = LlamaForSequenceClassification(LlamaConfig(tie_word_embeddings=True, **cfg)).double()
    out = direct_effect(tied, 0, [1, 2], k=4)
    E = tied.model.embed_tokens.weight.detach().numpy()
    v = tied.model.layers[0].mlp.down_proj.weight[:, [1, 2]].sum(1).detach().numpy()
    s = E @ (tied.model.norm.weight.detach().numpy() * v)
    assert [int(t) for t, _ in out["promoted"]] == np.argsort(-s)[:4].tolist() and "input embeddings" in out["note"]


def test_direct_effects_batched_and_post_ln():
    """Many coalitions in one call equal one call each; a post-LN BERT reads the write through the layer's own
    LayerNorm (centred, its gain) and the tied input embeddings."""
    from transformers import BertConfig, BertForSequenceClassification

    from hedonic_neurons.models.token_activations import direct_effects

    model = tiny_lm()
    coals, ws = [np.array([1, 4]), np.array([0, 7, 9])], [np.array([1.0, -2.0]), None]
    both = direct_effects(model, 2, coals, ws, k=4)
    for got, (c, w) in zip(both, zip(coals, ws, strict=True), strict=True):
        one = direct_effect(model, 2, c, weights=w, k=4)
        for side in ("promoted", "suppressed"):
            assert [t for t, _ in got[side]] == [t for t, _ in one[side]]
            assert [x for _, x in got[side]] == pytest.approx([x for _, x in one[side]], rel=1e-12)
    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=44, num_labels=1))
    bert = bert.double().eval()
    with torch.no_grad():
        bert.bert.encoder.layer[1].output.LayerNorm.weight.add_(torch.randn(32, dtype=torch.float64) * 0.3)
    out = direct_effect(bert, 1, [3, 5], k=5)
    layer = bert.bert.encoder.layer[1].output
    v = layer.dense.weight[:, [3, 5]].sum(1).detach().numpy()
    s = bert.bert.embeddings.word_embeddings.weight.detach().numpy() @ (layer.LayerNorm.weight.detach().numpy()
                                                                         * (v - v.mean()))
    assert [int(t) for t, _ in out["promoted"]] == np.argsort(-s)[:5].tolist() and "post-LN" in out["note"]
