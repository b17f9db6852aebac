"""Cross-fitting: a partition is scored on the half it was NOT fitted on; halves are disjoint and seeded."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from hedonic_neurons.metrics.crossfit import (
    coverage,
    crossfit_synergy,
    half_seed,
    split_half_ari,
    split_halves,
    synergy_rows,
)
from hedonic_neurons.metrics.synergy import pair_synergy, ratio_synergy


def _sym(n, rng, scale):
    x = rng.normal(scale=scale, size=(n, n))
    x = (x + x.T) / 2
    np.fill_diagonal(x, 0.0)
    return x


def test_reported_pair_comes_from_the_other_half():
    # Two halves that disagree on purpose: on half a the fitted groups are strongly synergistic (+1),
    # on half b the same pairs are antagonistic (-1): an in-sample score would say +1, held-out says -1.
    rng = np.random.default_rng(0)
    n = 8
    psi_a, psi_b = _sym(n, rng, 0.01), _sym(n, rng, 0.01)
    lab_a = np.array([0, 0, 1, 1, 2, 3, 4, 5])  # fitted on a: {0,1}, {2,3}
    lab_b = np.array([0, 1, 2, 2, 3, 3, 4, 5])  # fitted on b: {2,3}, {4,5}
    for i, j in ((0, 1), (2, 3)):
        psi_a[i, j] = psi_a[j, i] = 1.0
        psi_b[i, j] = psi_b[j, i] = -1.0
    psi_b[4, 5] = psi_b[5, 4] = 2.0
    psi_a[4, 5] = psi_a[5, 4] = 0.5
    single_a, single_b = np.full(n, 0.25), np.full(n, 4.0)
    out = crossfit_synergy({"a": lab_a, "b": lab_b}, {"a": psi_a, "b": psi_b}, {"a": single_a, "b": single_b})
    # partition a on half b's valuation: both groups -1; partition b on half a's: {2,3} +1, {4,5} +0.5
    assert out["pair_a_on_b"] == -1.0
    assert out["pair_b_on_a"] == 0.75
    assert out["pair"] == pytest.approx((-1.0 + 0.75) / 2, abs=1e-15)
    assert out["pair_in_sample"] == pytest.approx((1.0 + (-1.0 + 2.0) / 2) / 2, abs=1e-15)
    # Ratio = sum_{i != j} psi(i,j) / sum_i psi(i), with psi(i) of the evaluation half too
    assert out["ratio_a_on_b"] == pytest.approx(-2.0 / 8.0, abs=1e-15)
    assert out["ratio_b_on_a"] == pytest.approx((2.0 / 0.5 + 1.0 / 0.5) / 2, abs=1e-15)
    assert out["ari"] == pytest.approx(adjusted_rand_score(lab_a, lab_b), abs=1e-15)


def test_synergy_rows_match_the_metric_functions():
    rng = np.random.default_rng(1)
    ev, fit = _sym(6, rng, 1.0), _sym(6, rng, 1.0)
    s_ev, s_fit = rng.normal(size=6), rng.normal(size=6)
    coals = [np.array([0, 2, 5]), np.array([1]), np.array([3, 4])]
    rows = synergy_rows(coals, ev, s_ev, fit, s_fit)
    for c, r in zip(coals, rows, strict=True):
        assert r["size"] == c.size
        if c.size < 2:
            assert np.isnan(r["pair"]) and np.isnan(r["pair_in_sample"])
            continue
        assert r["pair"] == pair_synergy(ev, c) and r["ratio"] == ratio_synergy(ev, s_ev, c)
        assert r["pair_in_sample"] == pair_synergy(fit, c) and r["ratio_in_sample"] == ratio_synergy(fit, s_fit, c)


def test_split_halves_disjoint_seeded_and_grouped():
    a, b = split_halves(101, 3, min_half=10)
    assert np.intersect1d(a, b).size == 0 and np.union1d(a, b).size == 101 and abs(a.size - b.size) <= 1
    a2, b2 = split_halves(101, 3, min_half=10)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert not np.array_equal(a, split_halves(101, 4, min_half=10)[0])
    groups = np.repeat([f"q{i}" for i in range(12)], 10)  # 12 queries x 10 pairs: whole queries per half
    ga, gb = split_halves(groups.size, 0, min_half=20, groups=groups, what="pairs")
    assert ga.size == gb.size == 60
    assert set(groups[ga]).isdisjoint(set(groups[gb]))


def test_too_few_inputs_is_one_line_naming_the_minimum():
    with pytest.raises(ValueError, match=r"each half needs >= 16: give at least 32 digits") as exc:
        split_halves(20, 0, min_half=16, what="digits")
    assert "\n" not in str(exc.value)


def test_ari_and_coverage():
    assert split_half_ari([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    lab = np.array([0] * 12 + [1, 1, 2, 3, 3, 3])  # sizes 12, 2, 1, 3: 5 of 18 players in 2..10
    assert coverage(lab, 2, 10) == pytest.approx(5 / 18)


def test_each_half_gets_its_own_random_state():
    # one seed on both halves would make a size-matched random partition identical on both (ARI 1 for nothing)
    from hedonic_neurons.baselines import RandomPartition

    sizes = [3] * 20 + [1] * 40
    X = np.zeros((100, 2))
    a = RandomPartition(sizes, random_state=half_seed(0, "a")).fit(X).labels_
    b = RandomPartition(sizes, random_state=half_seed(0, "b")).fit(X).labels_
    assert half_seed(0, "a") == 0 and half_seed(0, "b") != 0
    assert abs(split_half_ari(a, b)) < 0.2


def test_halves_names_and_directions_with_and_without_crossfit():
    from hedonic_neurons.metrics.crossfit import crossfit_halves, eval_half, fit_halves, partition_name

    h = crossfit_halves(20, True, 3, min_half=4)
    a, b = split_halves(20, 3, min_half=4)
    np.testing.assert_array_equal(h["a"], a)
    np.testing.assert_array_equal(h["b"], b)
    np.testing.assert_array_equal(crossfit_halves(20, False, 3, min_half=4)["a"], np.arange(20))
    assert fit_halves(True) == ("a", "b") and fit_halves(False) == ("a",)
    assert eval_half("a", True) == "b" and eval_half("b", True) == "a" and eval_half("a", False) == "a"
    assert [partition_name("ward", h, s) for h, s in (("a", 0), ("b", 0), ("a", 2), ("b", 2))] == [
        "ward", "ward.b", "ward.s2", "ward.s2.b"]
