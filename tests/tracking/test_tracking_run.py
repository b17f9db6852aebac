"""track_run over a run directory with residual-site inputs (MNIST-style blocks), and its error paths."""

import numpy as np
import pytest
import torch

from hedonic_neurons.models.gated_mlp import GatedBlock
from hedonic_neurons.rundir import RunDir, read_table
from hedonic_neurons.tracking.jacobian import residual_jacobian_abs
from hedonic_neurons.tracking.run import track_run


def test_track_run_residual_sites(tmp_path):
    torch.manual_seed(0)
    d, N = 12, 40
    blocks = [GatedBlock(d, 24) for _ in range(2)]
    h = [torch.randn(N, d)]
    with torch.no_grad():
        for b in blocks:
            h.append(b(h[-1]))
    rng = np.random.default_rng(0)
    rd = RunDir(tmp_path / "run")
    labels = {}
    for layer in range(3):
        labels[layer] = rng.integers(0, 4, d)
        if layer == 1:
            labels[1] = labels[0].copy()  # h2 partitioned like h1: the skip connection should make it persist
        rd.save_partition(f"h{layer + 1}", "hedonic_pas", labels[layer])
        tensors = {"track_acts": h[layer].numpy()}
        if layer < 2:
            tensors["track_J_abs"] = residual_jacobian_abs(blocks[layer], h[layer].numpy())
        rd.save_matrices(f"h{layer + 1}", tensors)
    out = track_run(rd.root)
    rows = out["hedonic_pas"]
    assert {r["transition"] for r in rows} == {"h1->h2", "h2->h3"}
    # the skip connection makes the Jacobian close to the identity: a coalition flows mostly to the
    # coalition holding the same coordinates, so relabelling layer 2 like layer 1 gives persistence
    table = read_table(rd.root / "tables" / "tracking_events.csv")
    # one row per transition for the method and for each control (residual sites: positive ones too)
    kinds = ("method", "random_partition", "shuffled_weights", "same_partition", "split_partition",
             "merge_partition")
    assert sorted((t["kind"], t["transition"]) for t in table) == sorted(
        (k, tr) for k in kinds for tr in ("h1->h2", "h2->h3"))
    summary = read_table(rd.root / "tables" / "tracking_summary.csv")
    assert [r["kind"] for r in summary] == [*kinds, "paper"]
    # residual sites: every row has its direct overlap and Table 3 the agreement with it
    assert all(0 < float(r["jaccard"]) <= 1 for r in read_table(rd.root / "tracking" / "transitions.csv"))
    # (not under shuffled weights: a player no longer feeds its namesake, so overlap checks nothing there)
    assert all((t["overlap_agree_%"] != "") == (t["kind"] != "shuffled_weights") for t in table)
    controls = {r["kind"]: r for r in read_table(rd.root / "tables" / "tracking_controls.csv")}
    # 4 coalitions of 12 dimensions: the link rule reads them all persist, but a random redraw of so small
    # a partition gives some of them back often enough that not all are beyond chance
    assert float(controls["same_partition"]["expected_link_%"]) == 100.0
    assert float(controls["same_partition"]["expected_%"]) >= 50.0
    # on track_run's own output: every h1 coalition is matched to its namesake in h2 and persists; the
    # differently partitioned h2 -> h3 does not persist throughout
    first = [r for r in rows if r["transition"] == "h1->h2"]
    assert len(first) == 4 and all(r["event_link"] == "persist" and r["target"] == r["source"] for r in first)
    assert all(r["alpha"] >= 0.7 and r["beta"] >= 0.7 for r in first)
    assert any(r["event"] != "persist" for r in rows if r["transition"] == "h2->h3")
    ev = {(t["kind"], t["transition"]): t for t in table}
    assert float(ev[("method", "h1->h2")]["persist_link_%"]) == 100.0
    assert float(ev[("method", "h1->h2")]["persist_%"]) == float(ev[("method", "h1->h2")]["beyond_chance_%"])


def test_track_run_skips_and_errors(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.save_partition("1", "m", np.array([0, 0, 1]))
    rd.save_partition("2", "m", np.array([0, 1, 1]))
    assert track_run(rd.root) == {}          # no tracking inputs saved: nothing to do, no error
    with pytest.raises(ValueError, match="no partitions on disk"):
        track_run(rd.root, methods=["other"])


def test_layer_chains_stay_within_a_network():
    from hedonic_neurons.tracking.run import layer_chains

    assert layer_chains(["seed0_h2", "seed0_h3", "seed1_h2", "seed1_h3", "shuffled0_h3"]) == [
        ("seed0_h2", "seed0_h3"), ("seed1_h2", "seed1_h3")]
    assert layer_chains(["7", "10", "8", "9"]) == [("7", "8"), ("8", "9"), ("9", "10")]


def test_write_tracking_one_view_per_network(tmp_path):
    from hedonic_neurons.report.sankey import draw_tracking
    from hedonic_neurons.tracking.run import write_tracking

    rng = np.random.default_rng(1)
    labels = {f"seed{s}_h{h}": rng.integers(0, 3, 9) for s in (0, 1) for h in (2, 3, 4)}
    mass = {(f"seed{s}_h{h}", f"seed{s}_h{h + 1}"): rng.random((3, 3)) for s in (0, 1) for h in (2, 3)}
    draw_tracking(tmp_path, {"hedonic_pas": write_tracking(tmp_path, "hedonic_pas", labels, mass, measure="excess")})
    views = sorted(p.stem for p in (tmp_path / "views").glob("*_all.html"))
    assert views == ["sankey_hedonic_pas_seed0_all", "sankey_hedonic_pas_seed1_all"]
    assert (tmp_path / "figures" / "sankey_hedonic_pas_seed1_all.png").exists()
