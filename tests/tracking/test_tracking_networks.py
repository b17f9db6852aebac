"""Events on networks built by hand, through the real tracking path: matrices in a run directory ->
``track_run`` (coalition writes, interaction mass, null, matching) -> events out (issue 14)."""

import numpy as np
import pytest
import torch

from hedonic_neurons.models.gated_mlp import GatedBlock
from hedonic_neurons.rundir import RunDir, read_table
from hedonic_neurons.tracking.jacobian import residual_jacobian_abs
from hedonic_neurons.tracking.run import track_run

BLOCK = 4      # residual dimensions per block
SIZE = 4       # neurons per coalition


def _mlp_run(tmp_path, writes, reads, *, noise=0.0, seed=0, controls=(), measure="excess"):
    """Two MLP layers. Source coalition c writes (W_down) only into the residual blocks ``writes[c]``;
    target coalition t reads (W_up, W_gate) only from block ``reads[t]``. ``noise`` adds a dense
    Gaussian leak of that relative size to every weight. Returns {source coalition: event}."""
    rng = np.random.default_rng(seed)
    n_blocks = 1 + max(max(max(w) for w in writes), max(reads))
    d = n_blocks * BLOCK
    n1, n2 = len(writes) * SIZE, len(reads) * SIZE
    lab1, lab2 = np.repeat(np.arange(len(writes)), SIZE), np.repeat(np.arange(len(reads)), SIZE)
    W_down = noise * rng.normal(size=(d, n1))
    for c, blocks in enumerate(writes):
        for b in blocks:
            W_down[b * BLOCK:(b + 1) * BLOCK, c * SIZE:(c + 1) * SIZE] += rng.normal(size=(BLOCK, SIZE))
    W_up, W_gate = noise * rng.normal(size=(n2, d)), noise * rng.normal(size=(n2, d))
    for t, b in enumerate(reads):
        W_up[t * SIZE:(t + 1) * SIZE, b * BLOCK:(b + 1) * BLOCK] += rng.normal(size=(SIZE, BLOCK))
        W_gate[t * SIZE:(t + 1) * SIZE, b * BLOCK:(b + 1) * BLOCK] += rng.normal(size=(SIZE, BLOCK))
    acts = np.abs(rng.normal(size=(64, n1)))
    rd = RunDir(tmp_path / "run")
    rd.save_partition("7", "m", lab1)
    rd.save_partition("8", "m", lab2)
    rd.save_matrices("7", {"track_W_down": W_down, "track_acts": acts})
    rd.save_matrices("8", {"track_W_up": W_up, "track_W_gate": W_gate, "track_norm_gain": 1 + rng.random(d)})
    rows = track_run(rd.root, controls=controls, measure=measure)["m"]
    return {r["source"]: r["event"] for r in rows}, rd


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_writes_only_into_the_next_coalition_persist(tmp_path, noise):
    events, _ = _mlp_run(tmp_path, writes=[[0], [1], [2], [3]], reads=[0, 1, 2, 3], noise=noise)
    assert events == {0: "persist", 1: "persist", 2: "persist", 3: "persist"}


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_writes_into_two_coalitions_split(tmp_path, noise):
    events, _ = _mlp_run(tmp_path, writes=[[0, 1], [2], [3], [4]], reads=[0, 1, 2, 3, 4], noise=noise)
    assert events == {0: "split", 1: "persist", 2: "persist", 3: "persist"}


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_two_coalitions_into_one_merge(tmp_path, noise):
    events, _ = _mlp_run(tmp_path, writes=[[0], [0], [2], [3]], reads=[0, 1, 2, 3], noise=noise)
    assert events == {0: "merge", 1: "merge", 2: "persist", 3: "persist"}


@pytest.mark.parametrize("n_coal", [24, 4])
def test_random_dense_layer_vanishes(tmp_path, n_coal):
    rng = np.random.default_rng(5)
    d, n1, n2, N = 48, 96, 96, 128
    rd = RunDir(tmp_path / "run")
    lab1, lab2 = rng.permutation(np.arange(n1) % n_coal), rng.permutation(np.arange(n2) % n_coal)
    rd.save_partition("7", "m", lab1)
    rd.save_partition("8", "m", lab2)
    rd.save_matrices("7", {"track_W_down": rng.normal(size=(d, n1)), "track_acts": np.abs(rng.normal(size=(N, n1)))})
    rd.save_matrices("8", {"track_W_up": rng.normal(size=(n2, d)), "track_W_gate": rng.normal(size=(n2, d))})
    rows = track_run(rd.root, controls=())["m"]
    vanish = np.mean([r["event"] == "vanish" for r in rows])
    assert vanish >= 0.9
    # no event stands against random redraws of the next layer's partition
    assert np.mean([r["beyond_chance"] for r in rows]) <= 0.1
    excess = track_run(rd.root, controls=(), measure="excess")["m"]
    assert max(r["alpha"] for r in excess) < 0.1
    # the paper's raw rule reads vanish at 24 coalitions only because alpha ~ 1 / n_coal'
    raw = track_run(rd.root, controls=(), measure="raw")["m"]
    assert np.median([r["alpha"] for r in raw]) == pytest.approx(1 / n_coal, rel=0.3)


def test_residual_identity_persists(tmp_path):
    # h_{l+1} = h_l + block(h_l) with a zero block: the Jacobian is the identity (the skip connection)
    torch.manual_seed(0)
    d, N = 20, 32
    block = GatedBlock(d, 8).double()
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
    H = np.random.default_rng(0).normal(size=(N, d))
    J = residual_jacobian_abs(block, H)
    np.testing.assert_allclose(J, np.eye(d))
    labels = np.random.default_rng(1).permutation(np.arange(d) % 6)   # 6 coalitions, the same at both sites
    rd = RunDir(tmp_path / "run")
    rd.save_partition("h2", "m", labels)
    rd.save_partition("h3", "m", labels)
    rd.save_matrices("h2", {"track_J_abs": J, "track_acts": H})
    rd.save_matrices("h3", {"track_acts": H})
    rows = track_run(rd.root)["m"]
    assert [r["event"] for r in rows] == ["persist"] * 6
    assert all(r["target"] == r["source"] and r["alpha"] == pytest.approx(1.0) for r in rows)
    # the controls tell chance: independent random partitions and a shuffled Jacobian do not persist
    table = {t["kind"]: t for t in read_table(rd.root / "tables" / "tracking_events.csv")}
    assert float(table["method"]["persist_%"]) == 100.0
    assert float(table["shuffled_weights"]["persist_%"]) < 50.0


def test_controls_are_rows_beside_the_method(tmp_path):
    _, rd = _mlp_run(tmp_path, writes=[[0], [1], [2], [3]], reads=[0, 1, 2, 3],
                     controls=("random_partition", "shuffled_weights"))
    table = read_table(rd.root / "tables" / "tracking_events.csv")
    kinds = {t["kind"]: t for t in table}
    assert set(kinds) == {"method", "random_partition", "shuffled_weights"}
    assert float(kinds["method"]["persist_%"]) == 100.0
    # block-structured weights shuffled within each matrix carry no coalition structure
    assert float(kinds["shuffled_weights"]["persist_%"]) < 100.0
    summary = read_table(rd.root / "tables" / "tracking_summary.csv")
    assert summary[-1]["kind"] == "paper" and "paper Table 3" in summary[-1]["method"]
    with pytest.raises(ValueError, match="unknown control"):
        track_run(rd.root, controls=("bogus",))
