"""A small end-to-end run directory built from real pieces: planted games partitioned by
HedonicPartition on three layers, MLP-site tracking inputs with planted flow, tables, figures."""

import numpy as np
import pytest

from hedonic_neurons.game import planted_game
from hedonic_neurons.metrics.stats import fmt_ci
from hedonic_neurons.partition import HedonicPartition
from hedonic_neurons.rundir import RunDir

N_PLAYERS, D_MODEL, N_SAMPLES = 48, 16, 64


def _layer_weights(labels, rng, dims_of):
    """W_down writes each coalition into its own residual dims; W_up/W_gate read them (planted flow)."""
    n = labels.size
    W_down = 0.01 * rng.normal(size=(D_MODEL, n))
    W_up = 0.01 * rng.normal(size=(n, D_MODEL))
    for i, c in enumerate(labels):
        W_down[dims_of[c], i] += 1.0
        W_up[i, dims_of[c]] += 1.0
    return W_down, W_up


def build_small_run(root, *, with_tracking_inputs=True):
    rng = np.random.default_rng(0)
    rd = RunDir(root)
    rd.save_config({"experiment": "test", "seed": 0, "layers": [1, 2, 3], "solver": {"k": 3, "m": 4000}})
    labels_by_layer = {}
    for layer in (1, 2, 3):
        phi, _ = planted_game(N_PLAYERS, noise=0.1, random_state=layer)
        hp = HedonicPartition(m=4000, omega=800, random_state=0).fit(phi)
        labels_by_layer[layer] = hp.labels_
        rd.save_partition(str(layer), "hedonic_pas", hp.labels_, stability=hp.stability_, params=hp.params_)
        rd.save_partition(str(layer), "random", rng.permutation(hp.labels_),
                          stability={"rate": 0.2, "upper": 0.25, "n_samples": 500, "epsilon": 0.1})
        tensors = {"phi_pas": phi.astype(np.float32)}
        if with_tracking_inputs:
            # coalition c of this layer writes into dims (c mod D_MODEL); the next layer's coalition c reads
            # the same dims, so most coalitions persist, some split/merge/vanish by the id arithmetic.
            dims_of = {c: [c % D_MODEL] for c in np.unique(hp.labels_)}
            W_down, W_up = _layer_weights(hp.labels_, rng, dims_of)
            tensors.update(track_W_down=W_down, track_W_up=W_up, track_W_gate=0.5 * W_up,
                           track_norm_gain=np.abs(rng.normal(1.0, 0.1, size=D_MODEL)),
                           track_acts=np.abs(rng.normal(size=(N_SAMPLES, N_PLAYERS))))
        rd.save_matrices(str(layer), tensors)
    syn = []
    for layer in (1, 2, 3):
        for method, loc in (("hedonic_pas", 0.4), ("random", 0.05)):
            syn.append({"method": method, "layer": layer, "pair": fmt_ci(rng.normal(loc, 0.05, 8)),
                        "ratio": fmt_ci(rng.normal(2 * loc, 0.05, 8))})
    rd.save_table("synergy", syn, title="Coalition synergy (Pair, Ratio), mean ± 95 % CI over seeds")
    rd.save_table("accuracy", [{"model": "gated_mlp", "accuracy": 0.97}], title="Test accuracy")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(6, 3))
    for ax in axes.ravel():
        ax.imshow(rng.random((8, 8)), cmap="gray")
        ax.axis("off")
    fig.savefig(rd.figure_path("grid_layer2_coalition0"))
    plt.close(fig)
    (rd.root / "summary.md").write_text(
        "# Small run\n\nA **test** run with `3` layers.\n\n- planted games\n- HedonicPartition\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n")
    rd.mark_done("partition")
    return rd, labels_by_layer


@pytest.fixture
def small_run(tmp_path):
    return build_small_run(tmp_path / "run")


# ---- a small real pipeline for the coalition cards: tiny LLaMA, word-level texts, cross-fitted partitions ----

CARD_WORDS = [f"w{i}" for i in range(40)] + ["<b>", '"q"', "a&b", "it's", "</script>", "zebra"]


def tiny_word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(CARD_WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # keeps "<b>" and '"q"' whole: tokens the page must escape
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]")


def build_cards_run(root, n_texts=40, layers=(0, 1, 2)):
    """Valuate a tiny LLaMA (embeddings tied, so the direct effect has an unembedding) on word texts, fit
    HedonicPartition on each half's exact PAS, save partitions and tracking inputs, track, and write the
    cards (effects on the held-out half)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from hedonic_neurons.metrics.crossfit import split_halves
    from hedonic_neurons.models.extract import layer_cache, subset_cache, text_batches
    from hedonic_neurons.report.cards import make_cards, write_cards
    from hedonic_neurons.tracking.run import track_methods
    from hedonic_neurons.valuations.pas import exact_pas

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                      num_key_value_heads=2, pad_token_id=0, num_labels=1, initializer_range=0.2,
                      tie_word_embeddings=True)
    model = LlamaForSequenceClassification(cfg).eval()
    tok = tiny_word_tokenizer()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(CARD_WORDS, rng.integers(4, 12))) for _ in range(n_texts)]
    a, b = split_halves(len(texts), 0, min_half=8)
    rd = RunDir(root)
    rd.save_config({"experiment": "cards-test", "layers": list(layers)})
    labels_a, labels_b, caches_b, stable = {}, {}, {}, {}
    for layer in layers:
        cache = layer_cache(model, text_batches(tok, texts, batch_size=16, max_length=32), layer, progress=False)
        ca, cb = subset_cache(cache, a), subset_cache(cache, b)
        phi = {h: exact_pas(**c.math_kwargs(), progress=False).phi for h, c in (("a", ca), ("b", cb))}
        hp = HedonicPartition(random_state=0).fit(phi["a"])
        labels_a[layer], labels_b[layer] = hp.labels_, HedonicPartition(random_state=0).fit(phi["b"]).labels_
        caches_b[layer] = cb
        stable[layer] = hp.stability_["improving_players"] == 0
        rd.save_partition(str(layer), "hedonic_pas", hp.labels_, stability=hp.stability_)
        mlp = model.model.layers[layer].mlp
        rd.save_matrices(str(layer), {
            "phi_pas_a": phi["a"], "phi_pas_b": phi["b"], "track_W_down": cache.W_down, "track_acts": cb.acts,
            "track_W_up": mlp.up_proj.weight.detach().numpy(), "track_W_gate": mlp.gate_proj.weight.detach().numpy(),
            "track_norm_gain": model.model.layers[layer].post_attention_layernorm.weight.detach().numpy()})
    track_methods(rd.root, ["hedonic_pas"], controls=())
    cards = make_cards(model, tok, texts, labels_a, caches_b, other_labels=labels_b, run_dir=rd.root, stable=stable,
                       target="the score head's logit (tiny test model)", context=4)
    write_cards(rd.root, cards)
    return rd, cards, texts


@pytest.fixture(scope="session")
def cards_run(tmp_path_factory):
    return build_cards_run(tmp_path_factory.mktemp("cards") / "run")
