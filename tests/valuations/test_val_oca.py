"""OCA against a direct numpy computation; constant neurons; the null sd; RunningStats vs np.cov."""

import logging

import numpy as np
import pytest

from hedonic_neurons.valuations.activations import RunningStats
from hedonic_neurons.valuations.oca import oca, oca_null_se, oca_se


def _direct_oca(acts, W):
    n = acts.shape[1]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            r = np.corrcoef(acts[:, i], acts[:, j])[0, 1]
            c = W[:, i] @ W[:, j] / np.linalg.norm(W[:, i]) / np.linalg.norm(W[:, j])
            out[i, j] = (1 - abs(c)) * r
    return out


def test_oca_matches_direct_numpy():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(50, 9)) @ rng.normal(size=(9, 9))
    W = rng.normal(size=(5, 9))
    ref = _direct_oca(acts, W)
    np.testing.assert_allclose(oca(acts, W, block=4), ref, atol=1e-12)
    np.testing.assert_allclose(oca(acts.astype(np.float32), W), ref, atol=1e-5)
    stats = RunningStats(9)
    for b in np.array_split(acts, 7):
        stats.update(b)
    np.testing.assert_allclose(oca(stats, W), ref, atol=1e-12)
    # no weight term (identity players): plain Pearson off the diagonal
    np.testing.assert_allclose(oca(acts, None), np.corrcoef(acts.T) - np.eye(9), atol=1e-12)


def test_constant_neuron_gives_zero_not_nan(caplog):
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(30, 4)).astype(np.float32)
    acts[:, 2] = 3.7
    with caplog.at_level(logging.WARNING):
        phi = oca(acts, rng.normal(size=(6, 4)))
    assert np.isfinite(phi).all()
    assert np.all(phi[2] == 0) and np.all(phi[:, 2] == 0)
    assert "never vary" in caplog.text
    stats = RunningStats(4).update(acts)
    assert np.isfinite(oca(stats, None)).all()


def test_null_se():
    assert oca_null_se(101) == pytest.approx(0.1)
    # empirical check of the formula on independent normals
    rng = np.random.default_rng(2)
    r = [np.corrcoef(rng.normal(size=(2, 26)))[0, 1] for _ in range(4000)]
    assert np.std(r) == pytest.approx(oca_null_se(26), rel=0.05)
    W = np.eye(3)
    np.testing.assert_allclose(oca_se(W, 26), (1 - np.eye(3)) * 0.2)
    np.testing.assert_allclose(oca_se(None, 26, n=3), (1 - np.eye(3)) * 0.2)
    W2 = np.array([[1.0, 1.0], [0.0, 1.0]])  # cos = 1/sqrt(2)
    assert oca_se(W2, 26)[0, 1] == pytest.approx((1 - 2**-0.5) * 0.2)
    with pytest.raises(ValueError):
        oca_null_se(1)


def test_running_stats_vs_numpy():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(203, 6)) * 5 + 1e4  # large offset: the merge must not lose precision
    rs = RunningStats(6)
    for b in np.array_split(X, [1, 2, 50, 51, 150]):
        rs.update(b)
    assert rs.count == 203
    np.testing.assert_allclose(rs.mean, X.mean(0), rtol=1e-13)
    np.testing.assert_allclose(rs.cov, np.cov(X.T), rtol=1e-9)
    np.testing.assert_allclose(rs.corr, np.corrcoef(X.T), atol=1e-10)
    a, b = RunningStats(6).update(X[:80]), RunningStats(6).update(X[80:])
    np.testing.assert_allclose(a.merge(b).cov, np.cov(X.T), rtol=1e-9)
    again = RunningStats.from_state_dict(rs.state_dict())
    np.testing.assert_allclose(again.cov, rs.cov)
    with pytest.raises(ValueError, match="shape"):
        rs.update(np.ones((3, 5)))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_oca_leaves_the_activations_unchanged(dt):
    """Regression: the in-place standardisation used to overwrite a contiguous float32/64 input."""
    rng = np.random.default_rng(0)
    acts = (rng.normal(size=(20, 5)) * 3 + 7).astype(dt)
    before = acts.copy()
    oca(acts, rng.normal(size=(4, 5)))
    np.testing.assert_array_equal(acts, before)
