"""Exact PAS for post-norm blocks (h = r + post(m)): the O(N n^2) closed form vs brute force, every variant."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hedonic_neurons.valuations.pas import brute_force_pas, hessian_pas
from hedonic_neurons.valuations.postnorm import PostNormTail, exact_pas_postnorm
from hedonic_neurons.valuations.tail import NormTail


def _case(rng, post_kind, final_kind, K, N=7, d=10, n=9):
    H = rng.normal(size=(N, d))
    hw = rng.normal(size=d) if K is None else rng.normal(size=(K, d))
    fin = NormTail(final_kind, head_w=hw, head_b=0.3 if K is None else rng.normal(size=K),
                   weight=rng.normal(size=d) + 1, bias=None if final_kind == "rms" else rng.normal(size=d),
                   eps=1e-5)
    tail = PostNormTail(post_kind, rng.normal(size=d) + 1, 1e-6, rng.normal(size=(N, d)), fin,
                        post_bias=None if post_kind == "rms" else rng.normal(size=d),
                        class_targets=None if K is None else rng.integers(0, K, N))
    return H, rng.normal(size=(N, n)) * 0.3, rng.normal(size=(d, n)), tail


@pytest.mark.parametrize("post_kind,final_kind,K,base", list(itertools.product(
    ["rms", "layer"], ["rms", "layer", "none"], [None, 3], [False, True])))
def test_postnorm_exact_pas_equals_brute_force(post_kind, final_kind, K, base):
    rng = np.random.default_rng(0)
    H, coef, C, tail = _case(rng, post_kind, final_kind, K)
    N, n = coef.shape
    kw = dict(C_base=rng.normal(size=C.shape) * 0.2, coef_base=rng.normal(size=coef.shape)) if base else {}
    res = exact_pas_postnorm(H, coef, C, tail, np.arange(N), block=4, progress=False, **kw)
    phi, psi = brute_force_pas(H, coef, C, tail.logit, np.arange(N), **kw)
    assert np.abs(phi).max() > 1e-4  # the post norm makes pairs interact even without a final norm
    np.testing.assert_allclose(res.phi, phi, atol=1e-12 * np.abs(phi).max())
    np.testing.assert_allclose(res.psi, psi, atol=1e-12 * np.abs(psi).max())
    # standard errors from a per-sample computation
    D = np.stack([tail.logit(H, np.arange(N)) - tail.logit(H - np.outer(coef[:, i], C[:, i])
                  + (np.outer(kw["coef_base"][:, i], kw["C_base"][:, i]) if base else 0), np.arange(N))
                  for i in range(n)])
    np.testing.assert_allclose(res.psi_se, D.std(1, ddof=1) / np.sqrt(N), rtol=1e-8)


def test_postnorm_hessian_converges_to_exact():
    rng = np.random.default_rng(1)
    H, coef, C, tail = _case(rng, "rms", "rms", None, N=6)
    N = H.shape[0]
    errs = []
    for t in (0.1, 0.01, 0.001):
        exact = exact_pas_postnorm(H, t * coef, C, tail, progress=False).phi / t**2
        hess = hessian_pas(H, coef, C, tail.logit_torch, np.arange(N), progress=False)
        errs.append(np.linalg.norm(exact - hess) / np.linalg.norm(hess))
    assert errs[1] < 0.2 * errs[0] and errs[2] < 0.2 * errs[1], errs


def test_postnorm_targets_must_be_sample_ids():
    rng = np.random.default_rng(2)
    H, coef, C, tail = _case(rng, "rms", "rms", None)
    with pytest.raises(ValueError, match="sample ids"):
        exact_pas_postnorm(H, coef, C, tail, np.zeros(H.shape[0], dtype=int), progress=False)


@pytest.mark.parametrize("post_kind,final_kind", [("rms", "rms"), ("layer", "layer")])
def test_postnorm_softcapped_exact_pas_equals_brute_force(post_kind, final_kind):
    """Gemma-2: post-MLP norm, final norm, tied head and the final soft-capping cap * tanh(z / cap)."""
    import dataclasses

    rng = np.random.default_rng(3)
    H, coef, C, tail = _case(rng, post_kind, final_kind, 3)
    tail = dataclasses.replace(tail, final=dataclasses.replace(tail.final, softcap=2.0))
    N = coef.shape[0]
    res = exact_pas_postnorm(H, coef, C, tail, np.arange(N), block=4, progress=False)
    phi, psi = brute_force_pas(H, coef, C, tail.logit, np.arange(N))
    np.testing.assert_allclose(res.phi, phi, atol=1e-12 * np.abs(phi).max())
    np.testing.assert_allclose(res.psi, psi, atol=1e-12 * np.abs(psi).max())
    np.testing.assert_allclose(res.logit_mean, tail.logit(H, np.arange(N)).mean(), rtol=1e-12)
