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
