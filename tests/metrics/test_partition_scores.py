"""The reranker's per-method scores (metrics.partition_metrics): Pair / Ratio by half, both directions."""

import numpy as np

from hedonic_neurons.metrics.crossfit import coalitions_of, synergy_rows
from hedonic_neurons.metrics.partition_metrics import method_scores, synergy_by_half
from hedonic_neurons.metrics.stats import mean_lo_hi, nanmean_noted, seed_cell


def _mats(n=6, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for h in ("a", "b"):
        P = rng.normal(size=(n, n))
        out[f"phi_pas_{h}"] = (P + P.T) / 2
        out[f"psi_{h}"] = rng.uniform(0.5, 1.5, n)
    return out


PARTS = {"a": {"m": np.array([0, 0, 1, 1, 1, 2])}, "b": {"m": np.array([0, 1, 1, 2, 2, 2])}}


def test_exact_synergy_scores_each_half_on_the_other():
    mats = _mats()
    syn = synergy_by_half(PARTS, mats, True, ["m"])
    ref = synergy_rows(coalitions_of(PARTS["a"]["m"], 2), mats["phi_pas_b"], mats["psi_b"], mats["phi_pas_a"],
                       mats["psi_a"])
    assert syn["a"]["m"] == ref


def test_subset_synergy_takes_pair_means_from_the_valuation_half():
    mats = _mats()
    sub = {h: {"m": coalitions_of(PARTS[h]["m"], 2)} for h in ("a", "b")}
    calls = []

    def pair_means(v, coals):  # a stand-in with a known answer: 10 x (valuation half) + coalition size
        calls.append(v)
        return [(10.0 if v == "a" else 20.0) + c.size for c in coals]

    syn = synergy_by_half(PARTS, mats, True, ["m"], subsets=sub, pair_means=pair_means)
    assert calls == ["a", "b"]
    r = syn["a"]["m"][1]  # half a's coalition {2, 3, 4}: held-out on b, in-sample on a
    coal = sub["a"]["m"][1]
    assert coal.tolist() == [2, 3, 4] and r["pair"] == 23.0 and r["pair_in_sample"] == 13.0
    assert np.isclose(r["ratio"], 23.0 * 6 / mats["psi_b"][coal].sum())
    scores = method_scores({h: PARTS[h]["m"] for h in ("a", "b")}, {h: syn[h]["m"] for h in ("a", "b")},
                           [0.5, 1.5], acts_probe=np.random.default_rng(1).normal(size=(30, 6)),
                           acts_ood=np.random.default_rng(2).normal(size=(30, 6)),
                           y_probe=np.arange(30.0), y_ood=np.arange(30.0),
                           features_ood=np.random.default_rng(3).normal(size=(30, 4)), crossfit=True, max_size=10)
    held = {h: np.mean([x["pair"] for x in syn[h]["m"]]) for h in ("a", "b")}
    assert scores["pair"] == np.mean([held["a"], held["b"]]) and scores["pair_a_on_b"] == held["a"]
    assert scores["ood_drop"] == 1.0 and scores["n_drop"] == 2 and scores["n_coalitions"] == 3


def test_seed_cells_and_intervals():
    assert seed_cell([0.5]) == "0.500 (1 seed, no CI)"
    assert seed_cell([]) == "n/a"
    m, lo, hi = mean_lo_hi([1.0, 2.0, 3.0, float("nan")])
    assert m == 2.0 and lo < 2.0 < hi and np.isclose(hi - m, m - lo)
    assert all(np.isnan(mean_lo_hi([float("nan")])))
    assert nanmean_noted([1.0, float("nan"), 3.0]) == 2.0 and np.isnan(nanmean_noted([]))
