"""Fixtures for the models tests; helpers live in models_tiny.py / models_brute.py (importable: this
folder is put on sys.path, as pytest runs in importlib mode)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests run offline (the Makefile sets these too)
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def f64_norms(monkeypatch):
    """LLaMA/Mistral RMSNorm upcast to float32 by design (for fp16 weights); in these float64 tests the same
    formula runs in float64 so that 1e-6 comparisons through the real modules are meaningful."""
    from transformers.models.llama import modeling_llama
    from transformers.models.mistral import modeling_mistral

    def forward(self, hidden_states):
        var = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(var + self.variance_epsilon))

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", forward)
    monkeypatch.setattr(modeling_mistral.MistralRMSNorm, "forward", forward)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny float64 models: one thread avoids thread start-up costs that dominate such small products."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
