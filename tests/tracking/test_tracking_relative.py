"""The relative measure, the chance redraws and the control partitions on small exact cases."""

import numpy as np
import pytest

from hedonic_neurons.tracking.controls import best_jaccard, merge_partition, split_partition
from hedonic_neurons.tracking.events import classify, relative_shares, track_layers
from hedonic_neurons.tracking.mass import residual_transition


def _identity_leak(d: int, leak: float, seed: int = 0) -> np.ndarray:
    """A residual Jacobian: identity plus a dense leak whose row sums are ``leak`` times the diagonal."""
    rng = np.random.default_rng(seed)
    J = rng.random((d, d))
    np.fill_diagonal(J, 0)
    J *= leak / J.sum(axis=1, keepdims=True)
    return J + np.eye(d)


def test_identical_coalitions_read_one_whatever_the_leak():
    # a fifth of each row on the diagonal, as on the demo's trained network: the paper's share of the
    # row is ~0.2, the relative share of an identical coalition is ~1
    d = 60
    J = _identity_leak(d, leak=4.0)
    lab = np.repeat(np.arange(10), 6)
    P = residual_transition(J, np.ones(d), lab, lab)
    L = relative_shares(P["M"], np.full(10, 6), np.full(10, 6), P["forward"], P["backward"])
    assert np.diag(L["alpha"]).min() > 0.95 and np.diag(L["beta"]).min() > 0.95
    assert np.diag(L["z_alpha"]).min() > 5
    off = ~np.eye(10, dtype=bool)
    assert L["alpha"][off].max() < 0.1
    raw = P["M"] / P["M"].sum(axis=1, keepdims=True)
    assert np.diag(raw).max() < 0.3
    rows = track_layers({"a": lab, "b": lab}, {("a", "b"): P})
    assert all(r["event"] == "persist" and r["target"] == r["source"] for r in rows)
    # random redraws of the next partition would need 5 of a coalition's 6 dimensions together: never
    assert all(r["beyond_chance"] for r in rows)


def test_split_and_merge_by_halves():
    d = 64
    J = _identity_leak(d, leak=4.0, seed=1)
    lab = np.repeat(np.arange(8), 8)
    half = np.repeat(np.arange(16), 4)                       # every coalition cut in two
    rows = track_layers({"a": lab, "b": half}, {("a", "b"): residual_transition(J, np.ones(d), lab, half)})
    assert {r["event"] for r in rows} == {"split"}
    rows = track_layers({"a": half, "b": lab}, {("a", "b"): residual_transition(J, np.ones(d), half, lab)})
    assert {r["event"] for r in rows} == {"merge"}           # both halves, though the matching pairs one


def test_classify_floor():
    assert classify(0.9, 0.2, 0.7) == "merge"                # the paper's rule: no floor
    assert classify(0.9, 0.2, 0.7, floor=0.4) == "vanish"
    assert classify(0.5, 0.9, 0.7, floor=0.4) == "split"
    assert classify(0.9, 0.9, 0.7, floor=0.4) == "persist"


def test_control_partitions():
    rng = np.random.default_rng(0)
    lab = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, -1])
    sp = split_partition(lab, rng)
    assert sorted(np.bincount(sp[sp >= 0])[np.bincount(sp[sp >= 0]) > 0].tolist()) == [1, 1, 1, 1, 2, 2, 2]
    assert sp[-1] == -1
    for c in (0, 1, 3):                                      # each half inside its coalition
        assert np.unique(sp[lab == c]).size == 2
    mp = merge_partition(lab, rng)
    sizes = sorted(np.bincount(mp[mp >= 0])[np.bincount(mp[mp >= 0]) > 0].tolist())
    assert sizes == [3, 7]                                   # 1+2 and 3+4: nearest sizes paired
    j = best_jaccard(lab, sp)
    np.testing.assert_allclose(j, [2 / 3, 1 / 2, 1.0, 1 / 2])
    with pytest.raises(ValueError, match="same players"):
        best_jaccard(lab, lab[:-1])


def test_layer_seed_differs_per_layer_and_stage_versions_change_fingerprints(tmp_path):
    from hedonic_neurons.metrics.crossfit import layer_seed
    from hedonic_neurons.rundir import RunDir
    from hedonic_neurons.stages import StageRunner

    assert len({layer_seed(0, f"h{i}") for i in range(1, 6)}) == 5
    assert layer_seed(0, "h2") == layer_seed(0, "h2") != layer_seed(1, "h2")
    fps = []
    for version in (0, 0, 1):
        sr = StageRunner(RunDir(tmp_path / "run"), {"solver": 1})
        sr.add("partitions", ("solver",), version=version)
        fps.append(sr.fingerprint("partitions"))
    assert fps[0] == fps[1] != fps[2]
