"""agreement(): statistics over off-diagonal pairs, sampled or complete."""

import numpy as np
import pytest

from hedonic_neurons.valuations.agreement import agreement


def _sym(rng, n):
    X = rng.normal(size=(n, n))
    X = X + X.T
    np.fill_diagonal(X, 0)
    return X


def test_identical_and_monotone():
    rng = np.random.default_rng(0)
    A = _sym(rng, 40)
    r = agreement(A, A, top_k=50)
    assert r["pearson"] == pytest.approx(1) and r["spearman"] == pytest.approx(1) and r["topk_overlap"] == 1
    assert r["n_pairs"] == 40 * 39 // 2
    r = agreement(A, np.exp(A), top_k=50)  # monotone map: ranks agree, values do not
    assert r["spearman"] == pytest.approx(1) and r["pearson"] < 0.99 and r["topk_overlap"] == 1


def test_sampled_pairs_track_the_truth():
    rng = np.random.default_rng(1)
    A = _sym(rng, 300)
    B = A + 0.5 * _sym(rng, 300)
    full = agreement(A, B, n_pairs=10**9)
    samp = agreement(A, B, n_pairs=5000, random_state=3)
    assert samp["n_pairs"] == 5000
    assert samp["pearson"] == pytest.approx(full["pearson"], abs=0.03)
    assert agreement(A, B, n_pairs=5000, random_state=3) == samp  # seeded
    unrelated = agreement(A, _sym(rng, 300), top_k=100)
    assert abs(unrelated["pearson"]) < 0.05 and unrelated["topk_overlap"] < 0.1
    with pytest.raises(ValueError, match="same shape"):
        agreement(A, B[:10, :10])


def test_explicit_pairs():
    rng = np.random.default_rng(4)
    A = _sym(rng, 50)
    B = np.zeros_like(A)
    i, j = np.triu_indices(50, 1)
    keep = rng.choice(i.size, 300, replace=False)
    B[i[keep], j[keep]] = A[i[keep], j[keep]]  # only a subset of B is known
    r = agreement(A, B, pairs=(i[keep], j[keep]), top_k=30)
    assert r["pearson"] == pytest.approx(1) and r["n_pairs"] == 300 and r["topk_overlap"] == 1
    with pytest.raises(ValueError, match="off-diagonal"):
        agreement(A, B, pairs=(np.array([1, 2]), np.array([1, 3])))
