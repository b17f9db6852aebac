"""Pair and Ratio (eq. 8) on synthetic tails with known interactions."""

import itertools

import numpy as np
import pytest

from hedonic_neurons.metrics.synergy import coalition_synergy, pair_synergy, ratio_synergy
from hedonic_neurons.valuations.pas import exact_pas
from hedonic_neurons.valuations.tail import NormTail


def _known_game(n=6, seed=0):
    """l_-S = sum_i a_i [i kept] + sum_{i<j} b_ij [i, j kept]; so psi(i,j) = b_ij, psi(i) = a_i + sum_j b_ij."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = np.triu(rng.normal(size=(n, n)), 1)
    b = b + b.T

    def value(S):
        keep = np.ones(n, bool)
        keep[list(S)] = False
        return a[keep].sum() + 0.5 * b[np.ix_(keep, keep)].sum()

    full = value(())
    psi = np.array([full - value((i,)) for i in range(n)])
    pair = np.zeros((n, n))
    for i, j in itertools.combinations(range(n), 2):
        pair[i, j] = pair[j, i] = full - value((i,)) - value((j,)) + value((i, j))
    return a, b, psi, pair


def test_pair_and_ratio_known_interactions():
    a, b, psi, pair = _known_game()
    assert np.allclose(pair, b)
    assert np.allclose(psi, a + b.sum(1))
    C = [0, 2, 5]
    sub = b[np.ix_(C, C)]
    assert pair_synergy(pair, C) == pytest.approx(sub.sum() / 6)
    assert ratio_synergy(pair, psi, C) == pytest.approx(sub.sum() / (a[C] + b[C].sum(1)).sum())


def test_hand_values():
    pair = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], float)
    psi = np.array([1.0, 2.0, 3.0])
    assert pair_synergy(pair, [0, 1, 2]) == pytest.approx(2.0)  # (1+2+3)*2 / 6
    assert ratio_synergy(pair, psi, [0, 1, 2]) == pytest.approx(12 / 6)
    assert ratio_synergy(pair, psi, [1, 2]) == pytest.approx(6 / 5)
    assert np.isnan(pair_synergy(pair, [1])) and np.isnan(ratio_synergy(pair, psi, [1]))
    rows = coalition_synergy(np.array([0, 0, 1]), pair, psi)
    assert rows[0]["pair"] == pytest.approx(1.0) and rows[0]["ratio"] == pytest.approx(2 / 3)
    assert rows[1]["size"] == 1


def test_on_a_norm_tail_matches_brute_force():
    rng = np.random.default_rng(0)
    N, d = 40, 6
    H = rng.normal(size=(N, d)) + 0.5
    tail = NormTail(kind="layer", head_w=rng.normal(size=d), head_b=0.1, weight=rng.uniform(0.5, 1.5, d),
                    bias=rng.normal(size=d) * 0.1)
    res = exact_pas(H, H, None, tail, progress=False)
    C = [1, 3, 4]

    def logit(S):
        Hm = H.copy()
        Hm[:, list(S)] = 0.0
        return tail.logit(Hm)

    base = logit(())
    pairs = [base - logit((i,)) - logit((j,)) + logit((i, j)) for i, j in itertools.permutations(C, 2)]
    singles = [base - logit((i,)) for i in C]
    assert pair_synergy(res.phi, C) == pytest.approx(np.mean(pairs), rel=1e-8, abs=1e-12)
    ratio = sum(p.mean() for p in pairs) / sum(s.mean() for s in singles)
    assert ratio_synergy(res.phi, res.psi, C) == pytest.approx(ratio, rel=1e-8)
    # without a norm the tail is affine: every interaction is zero (DESIGN trap 1)
    flat = exact_pas(H, H, None, NormTail(kind="none", head_w=tail.head_w), progress=False)
    assert pair_synergy(flat.phi, C) == 0.0
