"""The MNIST valuations take the language models' path (layer_cache at the residual site of GatedMLPAdapter,
valuations_from_cache) and give exactly what the closed forms give when called by hand."""

import numpy as np
import pytest
import torch

from hedonic_neurons.models.extract import layer_cache
from hedonic_neurons.models.gated_mlp import GatedMLPClassifier
from hedonic_neurons.models.valuate import valuations_from_cache
from hedonic_neurons.valuations.oca import oca
from hedonic_neurons.valuations.pas import exact_pas
from hedonic_neurons.valuations.tail import NormTail


def _net():
    torch.manual_seed(0)
    m = GatedMLPClassifier(d_in=12, d_model=8, d_ff=16, n_blocks=2, n_classes=3).eval()
    with torch.no_grad():  # a LayerNorm with a non-trivial gain and bias, so the tail's parameters matter
        m.norm.weight.uniform_(0.5, 1.5)
        m.norm.bias.uniform_(-0.2, 0.2)
    X = torch.randn(40, 12).numpy()
    y = np.arange(40) % 3
    return m, X, y


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_residual_site_equals_the_closed_forms_by_hand(layer):
    m, X, y = _net()
    cache = layer_cache(m, [(X, y)], layer, site="residual", ablation="zero", progress=False)
    v = valuations_from_cache(cache, ("oca", "pas"), pas_dtype=np.float32, oca_dtype=np.float64, progress=False)
    with torch.no_grad():
        H = m.hidden_states(torch.as_tensor(X))[layer - 1].numpy()
    np.testing.assert_array_equal(cache.H, H)
    # OCA weighted by what reads h_l next: the next block's gate and up, or the head with the LayerNorm gain
    if layer <= len(m.blocks):
        b = m.blocks[layer - 1]
        W = np.vstack([b.gate.weight.detach().numpy(), b.up.weight.detach().numpy()]).astype(np.float64)
    else:
        W = (m.head.weight.detach().double() * m.norm.weight.detach().double()).numpy()
    np.testing.assert_array_equal(cache.W_oca, W)
    np.testing.assert_array_equal(v.phi_oca, oca(H, W, dtype=np.float64))
    # exact PAS with the net's own LayerNorm + head as the tail, read at the true class
    norm, head = m.norm, m.head
    tail = NormTail(kind="layer", head_w=head.weight.detach().double().numpy(),
                    head_b=head.bias.detach().double().numpy(), weight=norm.weight.detach().double().numpy(),
                    bias=norm.bias.detach().double().numpy(), eps=float(norm.eps))
    ref = exact_pas(H.astype(np.float64), H.astype(np.float64), None, tail, targets=y, dtype=np.float32,
                    progress=False)
    for name, got in (("phi", v.phi_pas), ("se", v.pas_se), ("psi", v.psi), ("psi_se", v.psi_se)):
        np.testing.assert_array_equal(got, getattr(ref, name), err_msg=name)


def test_other_adapters_keep_no_residual_weight_term(monkeypatch):
    from hedonic_neurons.models.adapters import GatedMLPAdapter, ModelAdapter

    m, X, y = _net()
    # the base adapter names no readers of the residual: OCA is then Pearson alone (1 - |cos| = 1)
    monkeypatch.setattr(GatedMLPAdapter, "residual_readers", ModelAdapter.residual_readers)
    cache = layer_cache(m, [(X, y)], 2, site="residual", ablation="zero", progress=False)
    assert cache.W_oca is None
    v = valuations_from_cache(cache, ("oca",), progress=False)
    np.testing.assert_allclose(v.phi_oca, oca(cache.H, None), atol=1e-7)


def test_one_process_distributed_path_weights_oca_the_same():
    from hedonic_neurons.models.distributed import distributed_valuations
    from hedonic_neurons.models.valuate import compute_valuations

    m, X, y = _net()
    kw = dict(site="residual", ablation="zero", methods=("oca", "pas"), verify=False, progress=False)
    one = compute_valuations(m, X, 2, targets=y, **kw)
    dist = distributed_valuations(m, X, 2, targets=y, **kw)
    np.testing.assert_allclose(dist.phi_oca, one.phi_oca, atol=1e-6)
    np.testing.assert_allclose(dist.phi_pas, one.phi_pas, rtol=1e-5, atol=1e-9)
