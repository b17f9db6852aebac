"""Exact PAS against brute-force pair ablations; trap 1 (no norm -> zero synergy); Hessian form."""

import numpy as np
import pytest

from hedonic_neurons.valuations.pas import brute_force_pas, exact_pas, hessian_pas
from hedonic_neurons.valuations.tail import NormTail


def _case(kind, head, seed=0, N=9, d=7, n=6, K=3):
    rng = np.random.default_rng(seed)
    H = rng.normal(size=(N, d)) + rng.normal(size=d)
    coef = rng.normal(size=(N, n))
    C = rng.normal(size=(d, n)) * 0.6
    hw = rng.normal(size=(K, d)) if head == "mat" else rng.normal(size=d)
    hb = rng.normal(size=K) if head == "mat" else 0.3
    tail = NormTail(kind, head_w=hw, head_b=hb, weight=1 + 0.3 * rng.normal(size=d),
                    bias=None if kind == "rms" else rng.normal(size=d), eps=1e-3)
    targets = rng.integers(0, K, N) if head == "mat" else None
    base = dict(C_base=rng.normal(size=(d, n)) * 0.5, coef_base=rng.normal(size=(N, n)))
    return H, coef, C, tail, targets, base


@pytest.mark.parametrize("kind", ["rms", "layer", "none"])
@pytest.mark.parametrize("head", ["vec", "mat"])
@pytest.mark.parametrize("with_base", [False, True])
def test_exact_pas_matches_brute_force(kind, head, with_base):
    H, coef, C, tail, targets, base = _case(kind, head, seed=hash((kind, head, with_base)) % 1000)
    kw = base if with_base else {}
    res = exact_pas(H, coef, C, tail, targets, block=4, batch_size=4, progress=False, **kw)
    phi_ref, psi_ref = brute_force_pas(H, coef, C, tail, targets, **kw)
    np.testing.assert_allclose(res.phi, phi_ref, atol=1e-10, rtol=0)
    np.testing.assert_allclose(res.psi, psi_ref, atol=1e-10, rtol=0)
    assert res.phi.shape == (6, 6) and res.n_samples == 9
    np.testing.assert_array_equal(np.diag(res.phi), 0.0)
    np.testing.assert_allclose(res.phi, res.phi.T, atol=0)
    if kind == "none":
        # DESIGN trap 1: an affine tail has no pairwise effects; brute force agrees to rounding
        assert np.abs(phi_ref).max() < 1e-12
        assert np.abs(res.phi).max() == 0.0
    else:
        assert np.abs(res.phi).max() > 1e-3


def test_identity_players_and_standard_errors():
    """C = None (residual coordinates, MNIST) and the se equals sd/sqrt(N) of the per-sample Delta."""
    H, _, _, tail, targets, _ = _case("layer", "mat", seed=3, N=11, d=5, n=5)
    coef = H - H.mean(0)  # mean ablation
    res = exact_pas(H, coef, None, tail, targets, progress=False)
    D = np.eye(5)[None] * coef[:, :, None]
    l0 = tail.logit(H, targets)
    i, j = 1, 3
    per = l0 - tail.logit(H - D[:, i], targets) - tail.logit(H - D[:, j], targets) \
        + tail.logit(H - D[:, i] - D[:, j], targets)
    assert res.phi[i, j] == pytest.approx(per.mean(), abs=1e-12)
    assert res.se[i, j] == pytest.approx(per.std(ddof=1) / np.sqrt(11), rel=1e-8)
    assert res.logit_mean == pytest.approx(l0.mean(), abs=1e-12)


def test_single_sample_gives_nan_se():
    H, coef, C, tail, _, _ = _case("rms", "vec", N=1)
    res = exact_pas(H, coef, C, tail, progress=False)
    off = ~np.eye(6, dtype=bool)
    assert np.isnan(res.se[off]).all() and np.isfinite(res.phi).all()


def test_float32_close_to_float64():
    H, coef, C, tail, targets, _ = _case("rms", "vec", seed=5, N=20, d=16, n=12)
    r64 = exact_pas(H, coef, C, tail, progress=False)
    r32 = exact_pas(H, coef, C, tail, dtype=np.float32, progress=False)
    assert np.abs(r32.phi - r64.phi).max() < 1e-4 * np.abs(r64.phi).max()


def test_exact_pas_errors():
    H, coef, C, tail, targets, _ = _case("rms", "mat")
    with pytest.raises(ValueError, match="targets"):
        exact_pas(H, coef, C, tail)
    with pytest.raises(ValueError, match="C has shape"):
        exact_pas(H, coef, C[:, :3], tail, targets)
    with pytest.raises(ValueError, match="together"):
        exact_pas(H, coef, C, tail, targets, C_base=C)
    bad = coef.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="coef holds NaN"):
        exact_pas(H, bad, C, tail, targets)
    with pytest.raises(ValueError, match="float16|supported"):
        exact_pas(H, coef, C, tail, targets, dtype=np.float16)


@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("head", ["vec", "mat"])
@pytest.mark.parametrize("with_base", [False, True])
def test_hessian_closed_form_matches_autograd(kind, head, with_base):
    H, coef, C, tail, targets, base = _case(kind, head, seed=11 + len(kind) + len(head))
    kw = base if with_base else {}
    closed = hessian_pas(H, coef, C, tail, targets, block=4, progress=False, **kw)
    auto = hessian_pas(H, coef, C, tail, targets, method="autograd", **kw)
    np.testing.assert_allclose(closed, auto, atol=1e-8 * max(1.0, np.abs(auto).max()), rtol=0)
    assert np.abs(closed).max() > 1e-3
    np.testing.assert_allclose(closed, closed.T, atol=1e-12)


def test_hessian_callable_tail_and_none():
    H, coef, C, tail, targets, _ = _case("layer", "vec", seed=4)
    via_callable = hessian_pas(H, coef, C, lambda h, t: tail.logit_torch(h))
    np.testing.assert_allclose(via_callable, hessian_pas(H, coef, C, tail, progress=False), atol=1e-10)
    flat = NormTail("none", head_w=tail.head_w)
    assert np.abs(hessian_pas(H, coef, C, flat, progress=False)).max() == 0.0


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_hessian_converges_to_exact_as_ablation_shrinks(kind):
    H, coef, C, tail, targets, base = _case(kind, "mat", seed=21)
    hess = hessian_pas(H, coef, C, tail, targets, progress=False, C_base=base["C_base"],
                       coef_base=base["coef_base"])
    errs = []
    for t in (0.1, 0.01, 0.001):
        ex = exact_pas(H, coef * t, C, tail, targets, C_base=base["C_base"], coef_base=base["coef_base"] * t,
                       progress=False).phi / t**2
        errs.append(np.abs(ex - hess).max() / np.abs(hess).max())
    # the remainder is third order in t: relative error shrinks at least linearly
    assert errs[1] < 0.2 * errs[0] and errs[2] < 0.2 * errs[1] and errs[2] < 0.02


def test_hessian_autograd_with_numpy_consuming_callable():
    """A module-style tail that reads targets with numpy (as the models' ModuleTail does) works too."""
    H, coef, C, tail, targets, base = _case("rms", "mat", seed=8)

    def module_tail(h, t):
        return tail.logit_torch(h, np.asarray(t))

    got = hessian_pas(H, coef, C, module_tail, targets, batch_size=4, **base)
    np.testing.assert_allclose(got, hessian_pas(H, coef, C, tail, targets, progress=False, **base), atol=1e-10)


def test_tile_workers_do_not_change_the_result():
    H, coef, C, tail, targets, base = _case("layer", "mat", seed=9, N=13, d=9, n=11)
    one = exact_pas(H, coef, C, tail, targets, block=3, n_jobs=1, progress=False, **base)
    two = exact_pas(H, coef, C, tail, targets, block=3, n_jobs=2, progress=False, **base)
    np.testing.assert_array_equal(one.phi, two.phi)
    np.testing.assert_array_equal(one.se, two.se)


@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("head", ["vec", "mat"])
def test_softcapped_tail_exact_and_hessian(kind, head):
    """Gemma-2's final soft-capping cap * tanh(z / cap): the closed forms stay exact (brute force) and the
    closed-form Hessian matches autograd; a cap near the logits' size changes both visibly."""
    import dataclasses

    H, coef, C, tail, targets, base = _case(kind, head, seed=31)
    capped = dataclasses.replace(tail, softcap=1.5)
    res = exact_pas(H, coef, C, capped, targets, block=4, batch_size=4, progress=False, **base)
    phi_ref, psi_ref = brute_force_pas(H, coef, C, capped, targets, **base)
    np.testing.assert_allclose(res.phi, phi_ref, atol=1e-10 * np.abs(phi_ref).max(), rtol=0)
    np.testing.assert_allclose(res.psi, psi_ref, atol=1e-10 * np.abs(psi_ref).max(), rtol=0)
    np.testing.assert_allclose(res.logit_mean, capped.logit(H, targets).mean(), rtol=1e-12)
    plain = exact_pas(H, coef, C, tail, targets, progress=False, **base)
    assert np.abs(res.phi - plain.phi).max() > 1e-2 * np.abs(plain.phi).max()
    closed = hessian_pas(H, coef, C, capped, targets, block=4, progress=False, **base)
    auto = hessian_pas(H, coef, C, capped, targets, method="autograd", **base)
    np.testing.assert_allclose(closed, auto, atol=1e-8 * np.abs(auto).max(), rtol=0)
