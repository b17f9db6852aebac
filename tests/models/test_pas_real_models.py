"""Exact PAS from the cached tail vs brute-force ablation through the real modules (float64, LoRA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models_brute import local_logits, model_logits, parts
from models_tiny import ARCHS, tiny_model, token_batches

from hedonic_neurons.models import compute_valuations, layer_cache, valuations_from_cache
from hedonic_neurons.models.precision import keep_float64
from hedonic_neurons.valuations.pas import exact_pas
from hedonic_neurons.valuations.tail import NormTail

PAIRS = [(0, 1), (3, 7), (5, 11), (2, 30)]


def _brute_pas(model, arch, batches, layer, i, j):
    l0 = local_logits(model, arch, batches, layer)
    li = local_logits(model, arch, batches, layer, [i])
    lj = local_logits(model, arch, batches, layer, [j])
    lij = local_logits(model, arch, batches, layer, [i, j])
    return (l0 - li - lj + lij).numpy(), (l0 - li).numpy()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layer", [1, 2])  # a middle layer and the last one
def test_exact_pas_equals_brute_force(arch, layer, f64_norms):
    model = tiny_model(arch)
    batches = token_batches()
    v = compute_valuations(model, batches, layer, methods=("pas",), dtype=torch.float64, progress=False)
    cache = v.cache
    assert cache.ablation == "lora" and cache.C_base is not None  # LoRA on down_proj too: the base term
    # the cached local logit is the modules' head(final_norm(h_l)); at the last layer it is the model output
    l0 = local_logits(model, arch, batches, layer).numpy()
    np.testing.assert_allclose(cache.local_logit(), l0, rtol=1e-12, atol=1e-12)
    if layer == 2:
        np.testing.assert_allclose(model_logits(model, batches).numpy(), l0, rtol=1e-12, atol=1e-12)
    for i, j in PAIRS:
        delta, single = _brute_pas(model, arch, batches, layer, i, j)
        assert abs(delta.mean()) > 1e-8  # a real synergy to compare, not rounding noise
        np.testing.assert_allclose(v.phi_pas[i, j], delta.mean(), rtol=1e-6)
        np.testing.assert_allclose(v.phi_pas[j, i], delta.mean(), rtol=1e-6)
        np.testing.assert_allclose(v.pas_se[i, j], delta.std(ddof=1) / np.sqrt(delta.size), rtol=1e-5)
        np.testing.assert_allclose(v.psi[i], single.mean(), rtol=1e-6)
    assert np.all(np.diag(v.phi_pas) == 0)


def test_zero_ablation_plain_model_equals_brute_force(f64_norms):
    model = tiny_model("llama", lora=False)
    batches = token_batches()
    cache = layer_cache(model, batches, 1, dtype=torch.float64, progress=False)
    assert cache.ablation == "zero" and cache.C_base is None and cache.acts_base is None
    res = exact_pas(**cache.math_kwargs(), progress=False)
    l0 = local_logits(model, "llama", batches, 1, revert="zero")
    for i, j in PAIRS[:2]:
        li = local_logits(model, "llama", batches, 1, [i], revert="zero")
        lj = local_logits(model, "llama", batches, 1, [j], revert="zero")
        lij = local_logits(model, "llama", batches, 1, [i, j], revert="zero")
        np.testing.assert_allclose(res.phi[i, j], (l0 - li - lj + lij).mean().item(), rtol=1e-6)


def test_mean_ablation_is_zero_ablation_of_centred_activations(f64_norms):
    model = tiny_model("gpt_neox", lora=False)
    batches = token_batches()
    zero = layer_cache(model, batches, 1, ablation="zero", dtype=torch.float64, progress=False)
    mean = layer_cache(model, batches, 1, ablation="mean", dtype=torch.float64, progress=False)
    np.testing.assert_allclose(mean.coef, zero.acts - zero.acts.mean(0), atol=1e-12)
    # ablating to the mean moves h to h - W_down (g - mean g): check one player through the delta
    np.testing.assert_allclose(mean.delta([4]), np.outer(mean.coef[:, 4], mean.C[:, 4]), atol=1e-14)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "bert"])
def test_without_final_norm_pas_vanishes(arch, f64_norms):
    """DESIGN trap 1: an affine readout gives PAS == 0 to float precision; the real norm does not."""
    model = tiny_model(arch)
    batches = token_batches()
    cache = layer_cache(model, batches, 1, dtype=torch.float64, progress=False)
    p = parts(model, arch, 1)
    if arch == "bert":
        # post-LN: drop the layer's LayerNorm and the pooler's tanh -> the readout is affine in r
        base = model.get_base_model()
        W = base.classifier.weight.detach() @ base.bert.pooler.dense.weight.detach()
        head_w = W[0].numpy()
        head_b = float(base.classifier.weight.detach()[0] @ base.bert.pooler.dense.bias.detach()
                       + base.classifier.bias.detach()[0])
        affine = NormTail(kind="none", head_w=head_w, head_b=head_b)
    else:
        owner, attr = p["norm_owner"]
        norm = getattr(owner, attr)
        head = model.get_base_model().score
        affine = NormTail.from_modules(None, head, row=0)
        # brute force through the modules with the final norm swapped out for the identity
        setattr(owner, attr, torch.nn.Identity())
        try:
            l0 = local_logits(model, arch, batches, 1)
            li = local_logits(model, arch, batches, 1, [0])
            lj = local_logits(model, arch, batches, 1, [1])
            lij = local_logits(model, arch, batches, 1, [0, 1])
        finally:
            setattr(owner, attr, norm)
        assert abs((l0 - li - lj + lij).mean().item()) < 1e-12 * l0.abs().max().item()
    kw = cache.math_kwargs()
    kw["tail"] = affine
    flat = exact_pas(**kw, progress=False).phi
    assert np.abs(flat).max() < 1e-12
    withnorm = valuations_from_cache(cache, ("pas",), progress=False).phi_pas
    assert np.abs(withnorm).max() > 1e-6


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "bert"])
def test_hessian_pas_converges_to_exact_as_lora_shrinks(arch, f64_norms):
    batches = token_batches()
    errs = []
    for scale in (0.2, 0.1, 0.05):
        model = tiny_model(arch, b_std=scale)
        v = compute_valuations(model, batches, 1, methods=("pas", "hessian"), dtype=torch.float64,
                               progress=False)
        errs.append(np.linalg.norm(v.phi_hessian - v.phi_pas) / np.linalg.norm(v.phi_pas))
        assert v.agreement is not None and v.agreement["pearson"] > 0.5
    # third-order remainder over a second-order signal: relative error shrinks at least linearly
    assert errs[1] <= 0.6 * errs[0] and errs[2] <= 0.6 * errs[1], errs


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "bert"])
def test_ablate_channels_in_a_full_forward_pass(arch, f64_norms):
    from hedonic_neurons.models.ablate import ablate_channels

    model = tiny_model(arch)
    batches = token_batches()
    S = [3, 7, 20]
    # last layer: the model's own output with S ablated == brute force through the modules
    with ablate_channels(model, 2, S):
        out = model_logits(model, batches).numpy()
    np.testing.assert_allclose(out, local_logits(model, arch, batches, 2, S).numpy(), rtol=1e-10, atol=1e-12)
    # middle layer: what the next layers see is H - sum delta_i, as the cache says
    cache = layer_cache(model, batches, 1, dtype=torch.float64, progress=False)
    with ablate_channels(model, 1, S):
        ablated = layer_cache(model, batches, 1, dtype=torch.float64, progress=False)
    np.testing.assert_allclose(ablated.H, cache.H - cache.delta(S), atol=1e-10)
    # one coalition per row of a (B, n) mask, several coalitions in one pass
    b = batches[0]
    n = cache.n_players
    mask = torch.zeros(b["input_ids"].shape[0], n, dtype=torch.bool)
    mask[0, S] = True
    mask[1, [5]] = True
    with ablate_channels(model, 2, mask), torch.no_grad(), keep_float64():
        rows = model(**b).logits[:, 0].numpy()
    np.testing.assert_allclose(rows[0], out[0], rtol=1e-10)
    np.testing.assert_allclose(rows[1], local_logits(model, arch, [b], 2, [5]).numpy()[1], rtol=1e-10)
    np.testing.assert_allclose(rows[2:], model_logits(model, [b]).numpy()[2:], rtol=1e-12)


def test_non_norm_tail_subset_agreement_uses_exact_pairs(f64_norms):
    """Above the direct-evaluation budget (BERT at full size), exact PAS is taken on a pair subset only."""
    model = tiny_model("bert", b_std=0.1)
    cache = layer_cache(model, token_batches(), 1, dtype=torch.float64, progress=False)
    full = valuations_from_cache(cache, ("pas", "hessian"), progress=False)
    sub = valuations_from_cache(cache, ("pas", "hessian"), max_direct_cost=0, agreement_pairs=300, progress=False)
    assert sub.phi_pas is None and "subset" in sub.agreement and 200 < sub.agreement["n_pairs"] <= 300
    np.testing.assert_allclose(sub.psi, full.psi, rtol=1e-10)
    np.testing.assert_allclose(sub.phi_hessian, full.phi_hessian, rtol=1e-10)
    assert sub.agreement["pearson"] > 0.9
