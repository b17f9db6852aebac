"""A tiny causal LM with a planted coalition: the positive control of `study` (docs/study.md).

Two MLP channels of layer 0 (channels 0 and 1) fire only on the trigger tokens ("zap", "zip") and write, each, a
little of the target token's unembedding direction ("pow") and half of the cancellation of a large constant
component every embedding carries. Through the final RMSNorm the pair is AND-like: one channel alone barely moves
the logit of "pow" (the constant component still dominates the norm), both together remove it and the logit of
"pow" jumps, so their pairwise ablation synergy (paper eq. 7) is large and positive. Every other channel has small
random weights, and layer 1 is random throughout (a layer with nothing planted). In the texts, a trigger is always
followed by "pow", so the next-token target reads the logit of "pow" at the trigger positions.

`build_planted_lm(out)` writes a LLaMA model + word-level tokenizer to OUT/model and the texts to OUT/texts.txt;
`study` on them must put channels 0 and 1 in one coalition, with the triggers as top-activating tokens and "pow"
as the most promoted output token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["build_planted_lm", "PLANTED_PAIR", "TRIGGERS", "TARGET_TOKEN", "planted_texts"]

PLANTED_PAIR = (0, 1)
TRIGGERS = ("zap", "zip")
TARGET_TOKEN = "pow"
_WORDS = ("the a cat dog sat ran on under big small red blue green house tree river stone bird fish song light "
          "dark cold warm old new fast slow and or but then when where it they we you saw took gave found").split()
_SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]
_D, _D_FF, _BIAS = 32, 48, 6.0
# residual dimensions with a fixed meaning
_DIM_CONST, _DIM_TRIG, _DIM_TARGET = 0, 1, 2


def planted_texts(n: int = 96, seed: int = 0, min_words: int = 10, max_words: int = 18) -> list[str]:
    """`n` sentences of random words; about half hold a trigger, always followed by the target token."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = list(rng.choice(_WORDS, size=int(rng.integers(min_words, max_words + 1))))
        if i % 2 == 0:
            at = int(rng.integers(1, len(words) - 2))
            words[at:at + 2] = [TRIGGERS[(i // 2) % len(TRIGGERS)], TARGET_TOKEN]
        out.append(" ".join(words))
    return out


def _tokenizer(vocab: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def build_planted_lm(out: str | Path, *, n_texts: int = 96, seed: int = 0, planted: bool = True) -> dict[str, Path]:
    """Write the planted LLaMA (2 layers, d_model 32, d_ff 48) and its tokenizer to OUT/model, the texts to
    OUT/texts.txt; returns {"model": dir, "texts": file}. ``planted=False`` is the negative control: the same model
    with the pair's writes removed (channels 0 and 1 still fire on the triggers, but change nothing)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    vocab = _SPECIAL + sorted(set(_WORDS) | set(TRIGGERS) | {TARGET_TOKEN})
    tok = _tokenizer(vocab)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=_D, intermediate_size=_D_FF, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64, rms_norm_eps=1e-6,
                      tie_word_embeddings=False, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    rng = np.random.default_rng(seed)
    trig = [vocab.index(t) for t in TRIGGERS]
    target = vocab.index(TARGET_TOKEN)
    with torch.no_grad():
        # embeddings: a large constant component (dominates the norm), a token identity in the free dimensions,
        # and the trigger flag on the triggers
        E = torch.zeros(len(vocab), _D)
        E[:, _DIM_CONST] = _BIAS
        E[:, 3:] = torch.from_numpy(rng.normal(0, 0.3, (len(vocab), _D - 3))).float()
        # a trigger carries only the constant and the flag, so that no other channel of layer 0 is active on it
        E[trig, 3:] = 0.0
        E[trig, _DIM_TRIG] = 2.0
        model.model.embed_tokens.weight.copy_(E)
        for layer in model.model.layers:
            # attention contributes nothing: the planted mechanism is position-local
            layer.self_attn.o_proj.weight.zero_()
            for lin in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                lin.weight.copy_(torch.from_numpy(rng.normal(0, 0.05, tuple(lin.weight.shape))).float())
        mlp = model.model.layers[0].mlp
        for ch in PLANTED_PAIR:
            # the pair reads only the trigger flag: exactly zero activation elsewhere (silu(0) * 0)
            mlp.gate_proj.weight[ch].zero_()
            mlp.up_proj.weight[ch].zero_()
            mlp.gate_proj.weight[ch, _DIM_TRIG] = 3.0
            mlp.up_proj.weight[ch, _DIM_TRIG] = 3.0
            mlp.down_proj.weight[:, ch] = 0.0
        # no other channel reads the trigger flag or the constant (so each is silent on the triggers), and none
        # writes the constant or the target dimension
        others = [i for i in range(_D_FF) if i not in PLANTED_PAIR]
        for dim in (_DIM_TRIG, _DIM_CONST):
            mlp.gate_proj.weight[others, dim] = 0.0
            mlp.up_proj.weight[others, dim] = 0.0
        for layer in model.model.layers:
            layer.mlp.down_proj.weight[_DIM_CONST, :] = 0.0
            layer.mlp.down_proj.weight[_DIM_TARGET, :] = 0.0
        # the activation of a planted channel on a trigger, read from the real module, sets its write: each
        # cancels half of the constant component and adds a little of the target direction
        x = model.model.layers[0].post_attention_layernorm(E[trig[0]][None])
        a = float((torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x))[0, PLANTED_PAIR[0]])
        for ch in PLANTED_PAIR if planted else ():
            mlp.down_proj.weight[_DIM_CONST, ch] = -_BIAS / 2 / a
            mlp.down_proj.weight[_DIM_TARGET, ch] = 1.0 / a
        # the unembedding reads the target token along its own dimension, the others along the identity dims
        U = torch.from_numpy(rng.normal(0, 0.3, (len(vocab), _D))).float()
        U[:, _DIM_CONST] = 0.0
        U[:, _DIM_TARGET] = 0.0
        U[target, :] = 0.0
        U[target, _DIM_TARGET] = 3.0
        model.lm_head.weight.copy_(U)
    mdir = out / "model"
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    texts = out / "texts.txt"
    texts.write_text("\n".join(planted_texts(n_texts, seed)) + "\n", encoding="utf-8")
    return {"model": mdir, "texts": texts}


if __name__ == "__main__":  # python -m hedonic_neurons.models.planted_lm OUT
    import sys

    paths = build_planted_lm(sys.argv[1] if len(sys.argv) > 1 else "planted_lm")
    print(f"model: {paths['model']}\ntexts: {paths['texts']}")
