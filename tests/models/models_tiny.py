"""Tiny random transformers sequence classifiers (built in code, float64) wrapped with PEFT LoRA."""

from __future__ import annotations

import torch

ARCHS = ("llama", "mistral", "gpt_neox", "gpt_neox_seq", "bert")
# every architecture the project is tested on (tests/models/test_architectures.py); all but BERT are found
# from the module tree by models.detect, BERT has its registered adapter
ALL_ARCHS = ("llama", "mistral", "gpt_neox", "gpt_neox_seq", "bert", "qwen2", "qwen3", "phi3", "olmo2", "gemma2")


def _config(arch: str):
    common = dict(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_labels=1,
                  pad_token_id=0, initializer_range=0.2)
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForSequenceClassification

        return LlamaForSequenceClassification, LlamaConfig(intermediate_size=48, num_key_value_heads=2, **common)
    if arch == "mistral":
        from transformers import MistralConfig, MistralForSequenceClassification

        return MistralForSequenceClassification, MistralConfig(intermediate_size=40, num_key_value_heads=2,
                                                                **common)
    if arch in ("gpt_neox", "gpt_neox_seq"):
        from transformers import GPTNeoXConfig, GPTNeoXForSequenceClassification

        return GPTNeoXForSequenceClassification, GPTNeoXConfig(
            intermediate_size=56, use_parallel_residual=(arch == "gpt_neox"), **common)
    if arch == "bert":
        from transformers import BertConfig, BertForSequenceClassification

        return BertForSequenceClassification, BertConfig(intermediate_size=44, **common)
    ff = dict(intermediate_size=24, num_key_value_heads=2)
    if arch == "qwen2":
        from transformers import Qwen2Config, Qwen2ForSequenceClassification

        return Qwen2ForSequenceClassification, Qwen2Config(**ff, **common)
    if arch == "qwen3":  # q/k norms in the attention, head_dim set explicitly
        from transformers import Qwen3Config, Qwen3ForSequenceClassification

        return Qwen3ForSequenceClassification, Qwen3Config(head_dim=8, **ff, **common)
    if arch == "phi3":  # fused gate_up_proj
        from transformers import Phi3Config, Phi3ForSequenceClassification

        return Phi3ForSequenceClassification, Phi3Config(**ff, **common, bos_token_id=None, eos_token_id=None)
    if arch == "olmo2":  # no pre-norms; post-attention and post-feedforward RMSNorms (w)
        from transformers import Olmo2Config, Olmo2ForSequenceClassification

        return Olmo2ForSequenceClassification, Olmo2Config(**ff, **common, bos_token_id=None, eos_token_id=None)
    if arch == "gemma2":  # pre- and post-MLP RMSNorms parametrised as (1 + w), GeGLU, scaled embeddings
        from transformers import Gemma2Config, Gemma2ForSequenceClassification

        return Gemma2ForSequenceClassification, Gemma2Config(head_dim=8, **ff, **common)
    raise KeyError(arch)


def tiny_model(arch: str, seed: int = 0, lora: bool = True, b_std: float = 0.3, lora_layers=(0, 1, 2)):
    """A float64 tiny classifier; with `lora`, PEFT LoRA (rank 4) on its MLP modules with NON-ZERO lora_B."""
    from peft import get_peft_model

    from hedonic_neurons.models import lora_config

    cls, cfg = _config(arch)
    torch.manual_seed(seed)
    model = cls(cfg).double().eval()
    if arch not in ARCHS:  # (the original five keep the models their tests were written for)
        with torch.no_grad():  # norms start at their identity (w = 1, or w = 0 for (1 + w)): make them matter
            for name, p in model.named_parameters():
                if "norm" in name and p.ndim == 1:
                    p.add_(torch.randn(p.shape, dtype=p.dtype) * 0.3)
    if not lora:
        return model
    model = get_peft_model(model, lora_config(model, lora_layers, r=4, alpha=8.0, train_head=False))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * b_std)
    return model.double().eval()


def token_batches(n: int = 8, T: int = 7, batch_size: int = 4, seed: int = 0):
    """Right-padded random token batches (some rows shorter) with attention masks."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (n, T), generator=g)
    mask = torch.ones_like(ids)
    lengths = torch.randint(3, T + 1, (n,), generator=g)
    for r in range(n):
        ids[r, lengths[r]:] = 0
        mask[r, lengths[r]:] = 0
    return [{"input_ids": ids[s:s + batch_size], "attention_mask": mask[s:s + batch_size]}
            for s in range(0, n, batch_size)]


