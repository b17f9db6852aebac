"""The summaries' verdicts: with fewer than 2 seeds there is no 95 % CI, so no verdict may call intervals apart
(a one-seed Fashion-MNIST run once printed "with the 95 % CIs apart" from a zero-width interval)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hedonic_neurons.metrics.crossfit import versus_best
from hedonic_neurons.metrics.stats import mean_ci95, mean_lo_hi
from hedonic_neurons.report import mnist_tables, reranker_tables

METHODS = mnist_tables.METHODS
NAMES = mnist_tables.METHOD_NAMES


def test_one_value_has_no_interval():
    m, half = mean_ci95([0.25])
    assert m == 0.25 and np.isnan(half)
    m, lo, hi = mean_lo_hi([0.25, float("nan")])
    assert m == 0.25 and np.isnan(lo) and np.isnan(hi)


def test_versus_best_is_undecided_without_intervals():
    best, words = versus_best((2.0, np.nan, np.nan), {"a": (1.0, np.nan, np.nan), "b": (0.5, np.nan, np.nan)},
                              {"a": "A", "b": "B"})
    assert best == "a" and words.startswith("undecided") and "apart" not in words
    assert "above every other method" in words  # the means are still reported
    _, words = versus_best((0.5, np.nan, np.nan), {"a": (1.0, np.nan, np.nan)}, {"a": "A"})
    assert words.startswith("undecided") and "below A by 0.5" in words
    # the same means with real (non-overlapping) intervals over seeds are decided
    _, words = versus_best((2.0, 1.9, 2.1), {"a": (1.0, 0.9, 1.1)}, {"a": "A"})
    assert words == "above every other method with the 95 % CIs apart"


def _per_seed(n_seeds: int) -> dict:
    # Hedonic-PAS far above everyone: with intervals the verdict would be "CIs apart"
    rng = np.random.default_rng(0)
    base = {m: float(i) for i, m in enumerate(METHODS)}
    base["hedonic_pas"] = 100.0
    return {m: {"pair": list(base[m] + 1e-3 * rng.standard_normal(n_seeds)),
                "ratio": list(base[m] + 1e-3 * rng.standard_normal(n_seeds))} for m in METHODS}


@pytest.mark.parametrize("n_seeds, decided", [(1, False), (3, True)])
def test_mnist_summary_line(n_seeds, decided):
    line = mnist_tables.default_vs_all(_per_seed(n_seeds), "pair")
    if decided:
        assert line.endswith("with the 95 % CIs apart") and "[" in line
    else:
        assert "undecided (fewer than 2 seeds: no 95 % CI" in line and "apart" not in line
        assert "(no CI: one seed)" in line and "nan" not in line


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_reranker_summary(tmp_path, n_seeds):
    from hedonic_neurons.experiments.reranker import RerankerConfig
    from hedonic_neurons.rundir import RunDir

    rd = RunDir(tmp_path / "run")
    scores = {"mse": 0.5, "M": 0.5}
    (rd.root / "finetune.json").write_text(json.dumps({"ood_before": {"mse": 0.8, "M": 0.2},
                                                        "ood_after": scores}))
    cfg = RerankerConfig(model="minilm", layers=(1, 2), seeds=n_seeds, n_largest=2, n_random=2)
    keys = ("ood_drop", "align_r2", "predictivity_r2", "pair", "ratio", "ari", "coverage")
    per = _per_seed(n_seeds)
    per_seed = {m: {k: per[m]["pair" if k != "ratio" else "ratio"] for k in keys} for m in METHODS}
    means = {m: {k: float(np.mean(v)) for k, v in per_seed[m].items()} for m in METHODS}
    text = reranker_tables.summary_md(rd, cfg, means, per_seed, [])
    if n_seeds == 1:
        assert "CIs apart" not in text and "do not overlap" not in text and "nan" not in text
        assert text.count("undecided (fewer than 2 seeds: no 95 % CI") == 2  # Pair and Ratio
        assert "no 95 % CI, so beyond them undecided" in text
    else:
        assert text.count("with the 95 % CIs apart") == 2 and "undecided" not in text
