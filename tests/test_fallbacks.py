"""Silent fallbacks made visible (issue 15): each is made to happen here, and what the user sees is checked."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from hedonic_neurons import notices
from hedonic_neurons.notices import ResultWarning


def _sparse_phi(n: int = 40) -> np.ndarray:
    """Mostly zeros (so the MAD of the off-diagonal phi is 0) with a few planted pairs."""
    phi = np.zeros((n, n))
    for i in range(0, n, 4):
        phi[i, i + 1] = phi[i + 1, i] = 1.0
    return phi


def test_zero_mad_threshold_warns(tmp_path):
    from hedonic_neurons import HedonicPartition

    with pytest.warns(ResultWarning, match=r"MAD.*is 0.*tau fell back to max\(median, 0\).*--se-key"):
        hp = HedonicPartition(preset="topk", m=4000, omega=400, random_state=0).fit(_sparse_phi())
    assert len(hp.warnings_) == 1 and hp.params_["warnings"] == hp.warnings_
    assert np.isnan(hp.threshold_z_)
    # a phi with a real spread gives no warning
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(40, 40))
    phi = (phi + phi.T) / 2
    np.fill_diagonal(phi, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResultWarning)
        assert HedonicPartition(preset="topk", m=4000, omega=400, random_state=0).fit(phi).warnings_ == []


def test_zero_mad_warning_on_the_command_line(tmp_path, capsys):
    from hedonic_neurons.cli import main

    np.save(tmp_path / "phi.npy", _sparse_phi())
    out = tmp_path / "p.json"
    assert main(["partition", str(tmp_path / "phi.npy"), "--preset", "topk", "--m", "4000", "--omega", "400",
                 "--out", str(out), "--quiet"]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("hedonic-neurons partition: warning: threshold: the robust sd")
    assert "MAD" in json.loads(out.read_text())["params"]["warnings"][0]


def test_mean_over_fewer_seeds_is_named():
    from hedonic_neurons.metrics.stats import fmt_ci, mean_ci95, nanmean_noted

    with pytest.warns(ResultWarning, match=r"Table 6 Pair, Leiden: seed 2 missing \(NaN\): mean over 2 of 3 seeds"):
        m, h = mean_ci95([1.0, 3.0, np.nan], what="Table 6 Pair, Leiden", unit="seed")
    assert m == 2.0 and h > 0
    with pytest.warns(ResultWarning, match=r"layer 9 missing.*mean over 1 of 2 layers"):
        assert nanmean_noted([0.5, np.nan], "pair, seed 0", labels=[8, 9], unit="layer") == 0.5
    # one remaining value has no interval: never "± 0.000"
    with pytest.warns(ResultWarning):
        cell = fmt_ci([0.25, np.nan], what="x", unit="seed")
    assert cell == "0.250 (1 seed, no CI)"
    assert fmt_ci([np.nan, np.nan]) == "n/a"
    assert fmt_ci([1e-5, 2e-5, 3e-5]).startswith("2e-05 ± ")  # tiny values keep significant digits


def test_verdicts_with_nan_are_undecided_whatever_the_order():
    from hedonic_neurons.metrics.crossfit import beats_all, held_words, ordering_holds

    for order in (("random", "kmeans", "ward"), ("ward", "kmeans", "random"), ("kmeans", "random", "ward")):
        v = {"hedonic_pas": 0.5, "random": float("nan"), "kmeans": 0.2, "ward": 0.7}
        assert beats_all(v, "hedonic_pas", order) is None  # max() over NaN would depend on this order
    assert beats_all({"a": 1.0, "b": 0.5}, "a", ("b",)) is True
    assert held_words(None, {"a": 1.0, "b": float("nan")}, {"b": "Leiden"}) == "undecided (no finite value for Leiden)"
    assert ordering_holds({"a": 3.0, "b": 2.0, "c": 1.0}, ("a", "b", "c")) is True
    assert ordering_holds({"a": 3.0, "b": 2.0, "c": 1.0}, ("a", "b", "c"), higher_is_better=False) is False
    assert ordering_holds({"a": 3.0, "b": float("nan"), "c": 1.0}, ("a", "b", "c")) is None


def test_mnist_ordering_verdict_with_a_nan_mean():
    from hedonic_neurons.report.mnist_tables import METHODS, ordering_verdict

    means = {m: {"pair": v} for m, v in zip(METHODS, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6), strict=False)}
    means["random"]["pair"] = float("nan")  # the last of the paper's order: sorting NaN last used to say "held"
    for m, v in zip(("hedonic_pas", "hedonic_oca", "ward", "kmeans"), (0.9, 0.8, 0.7, 0.6), strict=True):
        means[m]["pair"] = v
    held, order = ordering_verdict(means, "pair")
    assert held is None and order.endswith("(nan)")


def test_tracking_failure_is_recorded_in_the_run(tmp_path):
    import torch

    from hedonic_neurons.models.gated_mlp import GatedBlock
    from hedonic_neurons.rundir import RunDir
    from hedonic_neurons.tracking.jacobian import residual_jacobian_abs
    from hedonic_neurons.tracking.run import track_run

    torch.manual_seed(0)
    d, N = 8, 20
    blocks = [GatedBlock(d, 16) for _ in range(2)]
    h = [torch.randn(N, d)]
    with torch.no_grad():
        for b in blocks:
            h.append(b(h[-1]))
    rd = RunDir(tmp_path / "run")
    rng = np.random.default_rng(0)
    for layer in range(3):
        rd.save_partition(f"h{layer + 1}", "hedonic_pas", rng.integers(0, 3, d))
        tensors = {"track_acts": h[layer].numpy()}
        if layer < 2:
            tensors["track_J_abs"] = residual_jacobian_abs(blocks[layer], h[layer].numpy())
        if layer == 0:
            del tensors["track_acts"]  # h1 -> h2 cannot be tracked
            tensors["track_other"] = np.zeros(1, np.float32)
        rd.save_matrices(f"h{layer + 1}", tensors)
    (rd.root / "summary.md").write_text("# run\n\ntext\n")
    with pytest.warns(ResultWarning, match=r"tracking hedonic_pas h1->h2 failed and was left out of Table 3"):
        out = track_run(rd.root, controls=())
    assert {r["transition"] for r in out["hedonic_pas"]} == {"h2->h3"}
    assert any("h1->h2 failed" in w for w in notices.read(rd.root))
    summary = (rd.root / "summary.md").read_text()
    assert summary.startswith("# run\n\ntext\n") and "## Warnings" in summary and "h1->h2 failed" in summary
    track_run(rd.root, controls=())  # a re-run does not repeat the line
    assert sum("h1->h2" in w for w in notices.read(rd.root)) == 1
    assert summary == (rd.root / "summary.md").read_text()


def test_collect_records_warnings_as_they_come(tmp_path):
    with notices.collect(tmp_path):
        notices.warn("first")
        assert notices.read(tmp_path) == ["first"]  # already on disk inside the block
        notices.warn("first")
        notices.warn("second")
    assert notices.read(tmp_path) == ["first", "second"]
    assert notices.markdown_section(tmp_path).count("\n- ") == 2


def test_paired_ci_and_per_query_ndcg():
    """The per-query figures behind docs/benchmarks.md's paired CIs (benchmarks/paired_queries.py)."""
    from hedonic_neurons.ir.metrics import mean_ndcg, per_query_ndcg
    from hedonic_neurons.metrics.stats import paired_ci

    qids = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    rels = [2, 0, 1, 0, 0, 0, 1, 0, 0]  # query b has no relevant candidate: skipped, as in mean_ndcg
    scores = [0.1, 0.9, 0.5, 1, 2, 3, 3, 2, 1]
    qs, vals = per_query_ndcg(qids, scores, rels)
    assert qs == ["a", "c"] and vals[1] == 1.0 and vals.mean() == pytest.approx(mean_ndcg(qids, scores, rels))
    r = paired_ci([0.5, 0.6, 0.7, 0.8], [0.6, 0.6, 0.9, 0.7])
    assert r["mean"] == pytest.approx(0.05) and (r["up"], r["down"], r["n"]) == (2, 1, 4)
    assert r["t_half"] == pytest.approx(3.182446 * np.std([0.1, 0, 0.2, -0.1], ddof=1) / 2, rel=1e-5)
    assert r["boot_lo"] <= r["mean"] <= r["boot_hi"]
