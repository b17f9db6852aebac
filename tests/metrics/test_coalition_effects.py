"""coalition_effects against a brute-force loop of exact ablations on tiny float64 caches, best_jaccard."""

import itertools

import numpy as np
import pytest
import torch

from hedonic_neurons.metrics.coalition_effects import best_jaccard, coalition_effects, mean_ci
from hedonic_neurons.models.adapters import ModuleTail
from hedonic_neurons.models.extract import LayerCache
from hedonic_neurons.valuations.tail import NormTail

N, D, NP, K = 23, 9, 14, 5


def _cache(kind="rms", lora=False, module_tail=False, seed=0):
    rng = np.random.default_rng(seed)
    H = rng.normal(size=(N, D)) * 2 + 0.3
    coef = rng.normal(size=(N, NP))
    C = rng.normal(size=(D, NP)) * 0.6
    targets = rng.integers(0, K, size=N)
    if module_tail:
        lin = torch.nn.Linear(D, K).double()
        ln = torch.nn.LayerNorm(D).double()

        def fn(h):
            return lin(torch.tanh(ln(h)))

        tail = ModuleTail(fn, d=D, n_classes=K)
    else:
        tail = NormTail(kind=kind, head_w=rng.normal(size=(K, D)), head_b=rng.normal(size=K),
                        weight=rng.normal(1.0, 0.3, size=D), bias=rng.normal(size=D) if kind == "layer" else None)
    kw = {}
    if lora:
        kw = {"C_base": rng.normal(size=(D, NP)) * 0.3, "coef_base": rng.normal(size=(N, NP))}
    return LayerCache(layer=1, site="mlp", H=H, coef=coef, C=C, tail=tail, acts=coef.copy(), ablation="zero",
                      targets=targets, **kw)


def _brute(cache, members):
    l0 = cache.local_logit()
    sing = {i: l0 - cache.local_logit([i]) for i in members}
    pairs = [l0 - cache.local_logit([i]) - cache.local_logit([j]) + cache.local_logit([i, j])
             for i, j in itertools.permutations(members, 2)]
    pair = np.mean(pairs, axis=0) if pairs else np.full(N, np.nan)
    joint = l0 - cache.local_logit(list(members))
    ssum = np.sum([sing[i] for i in members], axis=0)
    return pair, joint, ssum


COALS = [np.array([0, 3]), np.array([1, 2, 5, 9]), np.array([4]), np.array([6, 7, 8, 10, 11, 12, 13]),
         np.array([2, 13, 0])]


@pytest.mark.parametrize("kind,lora,module_tail", [("rms", False, False), ("layer", True, False),
                                                   ("none", False, False), ("rms", True, True)])
def test_matches_brute_force(kind, lora, module_tail):
    cache = _cache(kind, lora, module_tail)
    rows = coalition_effects(cache, COALS, level=0.9)
    assert len(rows) == len(COALS)
    for row, m in zip(rows, COALS, strict=True):
        pair, joint, ssum = _brute(cache, m)
        assert row["members"] == sorted(m.tolist()) and row["size"] == m.size and row["n_samples"] == N
        for name, x in (("joint", joint), ("singles_sum", ssum)):
            mean, ci = mean_ci(x, 0.9)
            assert abs(row[name] - mean) < 1e-10, (name, row[name], mean)
            np.testing.assert_allclose(row[f"{name}_ci"], ci, atol=1e-10)
        if m.size < 2:
            assert np.isnan(row["pair"]) and np.isnan(row["interaction"])
            continue
        mean, ci = mean_ci(pair, 0.9)
        assert abs(row["pair"] - mean) < 1e-10
        np.testing.assert_allclose(row["pair_ci"], ci, atol=1e-10)
        assert abs(row["interaction"] - (ssum - joint).mean()) < 1e-10
        if kind == "none":
            assert abs(row["pair"]) < 1e-12  # affine tail: no interaction at all
        else:
            assert abs(row["pair"]) > 1e-6
    # for a pair, singles_sum - joint is Delta_ij itself (paper eq. 7)
    assert abs(rows[0]["interaction"] - rows[0]["pair"]) < 1e-10


def test_ci_and_input_checks():
    m, (lo, hi) = mean_ci(np.array([1.0, 2.0, 3.0]))
    assert m == 2.0 and lo < 2.0 < hi
    assert np.isnan(mean_ci(np.array([1.0]))[1][0])
    cache = _cache()
    with pytest.raises(ValueError, match="outside"):
        coalition_effects(cache, [np.array([0, NP])])
    with pytest.raises(ValueError, match="empty"):
        coalition_effects(cache, [np.array([], dtype=int)])
    assert coalition_effects(cache, []) == []


def test_best_jaccard():
    other = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    assert best_jaccard([0, 1, 2], other) == (1.0, 0)
    j, c = best_jaccard([5, 6, 3], other)  # {5,6} of coalition 2 (size 4): 2/5; {3} of 1: 1/4
    assert c == 2 and abs(j - 2 / 5) < 1e-12
    j, c = best_jaccard([1, 2], np.array([0, 0, 1, 1]))  # ties 1/3 vs 1/3: the smaller id
    assert c == 0 and abs(j - 1 / 3) < 1e-12
    with pytest.raises(ValueError, match="outside"):
        best_jaccard([9], other)
