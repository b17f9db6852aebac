"""The real CLI under the real launcher: `torchrun --nproc-per-node 2 -m hedonic_neurons.cli valuations`.

Slow (three fresh interpreters import torch and transformers): the exact-merge claim is tested fast in
test_distributed.py; this checks the launch path end to end on a tiny LLaMA + LoRA adapter directory
with a word-level tokenizer, against the same command on one process (float32 model: 1e-5).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from models_tiny import tiny_model

from hedonic_neurons.models.valuate import Valuations

WORDS = [f"w{i}" for i in range(60)]


def _adapter_dir(root: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model = tiny_model("llama")
    base = root / "base"
    model.base_model.model.float().save_pretrained(base)  # the base weights (LoRA layers are merged out below)
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]")
    tok.save_pretrained(base)
    adapter = root / "adapter"
    model.peft_config["default"].base_model_name_or_path = str(base)
    model.save_pretrained(adapter)
    return adapter


@pytest.mark.slow
def test_cli_under_torchrun_matches_one_process(tmp_path):
    adapter = _adapter_dir(tmp_path)
    rng = np.random.default_rng(0)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(" ".join(rng.choice(WORDS, rng.integers(3, 9))) for _ in range(9)) + "\n")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ["--quiet", "valuations", str(adapter), "--layer", "1", "--texts", str(texts), "--batch-size", "4"]
    one = subprocess.run([sys.executable, "-m", "hedonic_neurons.cli", *args, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "hedonic_neurons.cli", *args, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = Valuations.load(tmp_path / "one"), Valuations.load(tmp_path / "two")
    assert b.meta["world_size"] == 2 and b.meta["shard_sizes"] == [5, 4] and b.ablation == a.ablation == "lora"
    for name in ("phi_oca", "phi_pas", "pas_se", "psi", "phi_hessian"):
        x, y = getattr(b, name), getattr(a, name)
        assert np.abs(x - y).max() <= 1e-5 * np.abs(y).max(), name
