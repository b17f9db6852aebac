"""Mergeable valuation statistics: phi from shards equals phi from one pass (float64, 1e-12 relative)."""

import numpy as np
import pytest

from hedonic_neurons.valuations.accumulate import Moments, ValuationStats, merge_all, relative_error
from hedonic_neurons.valuations.activations import RunningStats
from hedonic_neurons.valuations.oca import oca
from hedonic_neurons.valuations.pas import exact_pas, hessian_pas
from hedonic_neurons.valuations.tail import NormTail

TOL = 1e-12
SPLITS = {"even": [5, 5, 4], "uneven": [13, 1], "single-first": [1, 6, 7]}


def _case(seed=0, N=14, d=7, n=6):
    rng = np.random.default_rng(seed)
    H = rng.normal(size=(N, d)) + rng.normal(size=d)
    coef = rng.normal(size=(N, n))
    C = rng.normal(size=(d, n)) * 0.6
    tail = NormTail("rms", head_w=rng.normal(size=d), weight=1 + 0.3 * rng.normal(size=d), eps=1e-3)
    base = dict(C_base=rng.normal(size=(d, n)) * 0.5, coef_base=rng.normal(size=(N, n)))
    acts = rng.normal(size=(N, n)) * rng.uniform(0.5, 3, n) + rng.normal(size=n) * 10  # offsets: Chan matters
    return H, coef, C, tail, base, acts


def _shard_stats(H, coef, C, tail, base, acts, lo, hi):
    s = slice(lo, hi)
    res = exact_pas(H[s], coef[s], C, tail, C_base=base["C_base"], coef_base=base["coef_base"][s], progress=False)
    hes = hessian_pas(H[s], coef[s], C, tail, C_base=base["C_base"], coef_base=base["coef_base"][s], progress=False)
    N = hi - lo
    return ValuationStats(
        coef.shape[1], oca=RunningStats(coef.shape[1]).update(acts[s]),
        pas=Moments.from_mean_se(N, res.phi, res.se), psi=Moments.from_mean_se(N, res.psi, res.psi_se),
        logit=Moments(N, np.array([res.logit_mean])), hessian=Moments(N, hes), meta={"tail": "rms"})


def _assert_close(a, b):
    assert relative_error(a, b) <= TOL, relative_error(a, b)


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("how", ["pairwise", "k-way", "saved"])
def test_shards_merge_to_one_pass(split, how, tmp_path):
    H, coef, C, tail, base, acts = _case()
    sizes = SPLITS[split]
    bounds = np.cumsum([0] + sizes)
    parts = [_shard_stats(H, coef, C, tail, base, acts, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    if how == "saved":  # through safetensors files, as shards written by separate jobs would be
        parts = [ValuationStats.load(p.save(tmp_path / f"shard{k}.safetensors")) for k, p in enumerate(parts)]
    if how == "k-way":
        merged = ValuationStats.merge_all(parts)
    else:
        merged = parts[0]
        for p in parts[1:]:
            merged.merge(p)
    full = exact_pas(H, coef, C, tail, **base, progress=False)
    res = merged.pas_result()
    assert res.n_samples == merged.n_samples == H.shape[0]
    _assert_close(res.phi, full.phi)
    _assert_close(res.se, full.se)
    _assert_close(res.psi, full.psi)
    _assert_close(res.psi_se, full.psi_se)
    assert abs(res.logit_mean - full.logit_mean) <= TOL * abs(full.logit_mean)
    _assert_close(merged.hessian_phi(), hessian_pas(H, coef, C, tail, **base, progress=False))
    _assert_close(merged.oca_phi(C), oca(acts, C))
    assert merged.oca.count == H.shape[0]
    _assert_close(merged.oca.cov, np.cov(acts, rowvar=False))


def test_moments_chan_merge_is_exact_for_offset_data():
    """A large common offset: naive sums of squares lose digits, Chan's merge does not."""
    rng = np.random.default_rng(1)
    X = 1e6 + rng.normal(size=(101, 3))
    parts = [Moments.from_samples(X[a:b]) for a, b in ((0, 1), (1, 50), (50, 101))]
    m = merge_all(parts)
    m2 = parts[0].copy().merge(parts[1]).merge(parts[2])
    for got in (m, m2):
        np.testing.assert_allclose(got.mean, X.mean(0), rtol=1e-15)
        np.testing.assert_allclose(got.var, X.var(0, ddof=1), rtol=1e-9)
        np.testing.assert_allclose(got.se, X.std(0, ddof=1) / np.sqrt(101), rtol=1e-9)


def test_single_input_shard_and_errors(tmp_path):
    one = Moments.from_mean_se(1, np.array([2.0]), np.array([np.nan]))
    assert one.m2[0] == 0.0 and np.isnan(one.se[0])
    with pytest.raises(ValueError, match="shape"):
        Moments(3, np.zeros(2)).merge(Moments(3, np.zeros(3)))
    with pytest.raises(ValueError, match="same methods"):
        ValuationStats(2, pas=Moments(1, np.zeros((2, 2)))).merge(ValuationStats(2))
    with pytest.raises(FileNotFoundError, match="save them there first"):
        ValuationStats.load(tmp_path / "missing.safetensors")
    st = ValuationStats(2, hessian=Moments(3, np.ones((2, 2))), meta={"layer": 4})
    back = ValuationStats.load(st.save(tmp_path / "s.safetensors"))
    assert back.meta == {"layer": 4} and back.hessian.count == 3 and back.pas is None
