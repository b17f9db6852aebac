"""NormTail: numpy logit against torch's own LayerNorm / a hand RMSNorm, and input validation."""

import numpy as np
import pytest
import torch

from hedonic_neurons.valuations.tail import NormTail


def test_layer_tail_matches_torch_modules():
    torch.manual_seed(0)
    d, K, N = 8, 4, 5
    norm = torch.nn.LayerNorm(d, eps=1e-5).double()
    head = torch.nn.Linear(d, K).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    tail = NormTail.from_modules(norm, head)
    assert tail.kind == "layer"
    H = torch.randn(N, d, dtype=torch.float64)
    t = np.array([0, 3, 1, 2, 3])
    ref = head(norm(H))[torch.arange(N), torch.as_tensor(t)].detach().numpy()
    np.testing.assert_allclose(tail.logit(H.numpy(), t), ref, atol=1e-12)
    np.testing.assert_allclose(tail.logit_torch(H, torch.as_tensor(t)).detach().numpy(), ref, atol=1e-12)


def test_rms_tail_formula_and_vector_head():
    rng = np.random.default_rng(1)
    d = 6
    w, hw = rng.normal(size=d), rng.normal(size=d)
    tail = NormTail("rms", head_w=hw, head_b=0.5, weight=w, eps=1e-6)
    H = rng.normal(size=(3, d))
    ref = (H / np.sqrt((H**2).mean(1, keepdims=True) + 1e-6) * w) @ hw + 0.5
    np.testing.assert_allclose(tail.logit(H), ref, atol=1e-12)
    assert tail.logit(H.astype(np.float16)).dtype == np.float32  # never computed below float32


def test_tail_bad_input_messages():
    with pytest.raises(ValueError, match="unknown"):
        NormTail("batch", head_w=np.ones(3))
    with pytest.raises(ValueError, match="targets"):
        NormTail("rms", head_w=np.ones((2, 3))).logit(np.ones((4, 3)))
    with pytest.raises(ValueError, match="no bias"):
        NormTail("rms", head_w=np.ones(3), bias=np.ones(3))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        NormTail("layer", head_w=np.ones(3)).logit(np.ones((4, 5)))


def test_rms_tail_from_transformers_llama_norm():
    """kind and eps are read from a real LlamaRMSNorm (variance_epsilon), and the logits agree."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(2)
    d = 16
    norm = LlamaRMSNorm(d, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.normal_()
    head = torch.nn.Linear(d, 2, bias=False).double()
    tail = NormTail.from_modules(norm, head, row=1)
    assert tail.kind == "rms" and tail.eps == 1e-6 and tail.head_w.shape == (d,)
    H = torch.randn(4, d, dtype=torch.float64)
    # LlamaRMSNorm normalises in float32 internally, hence the float32-level tolerance
    np.testing.assert_allclose(tail.logit(H.numpy()), head(norm(H))[:, 1].detach().numpy(), rtol=1e-5, atol=1e-5)
