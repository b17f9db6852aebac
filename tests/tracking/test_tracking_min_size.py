"""What tracking counts as a coalition (``min_size``), the chance test's statistic, and the fast paths of
the redraws (sparse aggregation, partial top-k) against their plain definitions."""


import numpy as np
import pytest
import torch

from hedonic_neurons.models.gated_mlp import GatedBlock
from hedonic_neurons.rundir import RunDir, read_table
from hedonic_neurons.tracking.controls import MIN_SIZE, coalitions_only, expected_min_size, split_partition
from hedonic_neurons.tracking.events import CHANCE_DRAWS, _top_k_sums
from hedonic_neurons.tracking.jacobian import residual_jacobian_abs
from hedonic_neurons.tracking.mass import _aggregate, indicator
from hedonic_neurons.tracking.run import track_run


def test_coalitions_only_marks_small_groups_as_in_no_coalition():
    labels = np.array([0, 0, 1, 2, 2, 2, -1, 5])
    assert coalitions_only(labels, 2).tolist() == [0, 0, -1, 2, 2, 2, -1, -1]
    assert coalitions_only(labels, 3).tolist() == [-1, -1, -1, 2, 2, 2, -1, -1]
    assert coalitions_only(labels, 1).tolist() == labels.tolist()
    # a pair cut in two leaves two lone players: the split control counts only what is cut into two coalitions
    assert expected_min_size("split_partition") == 4 and expected_min_size("merge_partition") == 2
    cut = coalitions_only(split_partition(np.array([0, 0, 1, 1, 1, 1]), np.random.default_rng(0)), 2)
    assert (cut[:2] == -1).all() and np.unique(cut[2:]).size == 2


@pytest.mark.parametrize("shape", [(5, 40), (40, 5), (1, 1), (3, 7)])
def test_top_k_sums_match_a_full_sort(shape):
    rng = np.random.default_rng(0)
    X = rng.random(shape)
    for axis in (0, 1):
        k = rng.integers(1, X.shape[axis] + 1, X.shape[1 - axis])
        lines = X.T if axis == 0 else X
        ref = [np.sort(v)[::-1][:kk].sum() for v, kk in zip(lines, k, strict=True)]
        np.testing.assert_allclose(_top_k_sums(X, k, axis), ref)


def test_sparse_aggregation_is_the_indicator_product():
    rng = np.random.default_rng(1)
    labels = np.array([7, -1, 3, 7, 3, 9, -1, 9, 9])      # ids not contiguous, unassigned players
    A = rng.random((4, labels.size))
    np.testing.assert_allclose(_aggregate(A, labels), A @ indicator(labels))
    np.testing.assert_allclose(_aggregate(A, labels, At=np.ascontiguousarray(A.T)), A @ indicator(labels))


def _residual_run(tmp_path, lab1, lab2, d=16, seed=0):
    torch.manual_seed(seed)
    block = GatedBlock(d, 2 * d)
    h1 = torch.randn(64, d)
    with torch.no_grad():
        h2 = block(h1)
    rd = RunDir(tmp_path / "run")
    rd.save_partition("h1", "m", np.asarray(lab1))
    rd.save_partition("h2", "m", np.asarray(lab2))
    rd.save_matrices("h1", {"track_acts": h1.numpy(), "track_J_abs": residual_jacobian_abs(block, h1.numpy())})
    rd.save_matrices("h2", {"track_acts": h2.numpy()})
    return rd


def test_lone_players_are_not_tracked_unless_asked(tmp_path):
    lab = np.array([0, 0, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])     # a pair, a triple, 11 alone
    rd = _residual_run(tmp_path, lab, lab)
    rows = track_run(rd.root, controls=())["m"]
    assert sorted(r["size"] for r in rows) == [2, 3]                     # min_size 2 (the default)
    assert MIN_SIZE == 2
    rows = track_run(rd.root, controls=(), min_size=1)["m"]
    assert len(rows) == 13 and sum(r["size"] == 1 for r in rows) == 11
    with pytest.raises(ValueError, match="min_size must be >= 1"):
        track_run(rd.root, min_size=0)


def test_a_layer_of_lone_players_is_skipped_not_an_error(tmp_path, caplog):
    from hedonic_neurons.tracking import run as run_module

    rd = _residual_run(tmp_path, np.repeat(np.arange(8), 2), np.arange(16))
    # the handler on the module's own logger: other tests may have stopped the package's propagation
    run_module.log.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger=run_module.log.name):
            assert track_run(rd.root, controls=()) == {}
    finally:
        run_module.log.removeHandler(caplog.handler)
    assert "no coalition of >= 2 players at h2" in caplog.text


def test_the_report_help_states_the_library_defaults():
    from hedonic_neurons import cli

    sub = dict(cli.build_parser()._subparsers._group_actions[0].choices)["report"]
    helps = {a.option_strings[-1]: a.help for a in sub._actions if a.option_strings and a.help}
    assert f"(default: {CHANCE_DRAWS})" in helps["--chance-draws"]
    assert f"(default: {MIN_SIZE})" in helps["--min-size"]
    assert "(default: yes)" in helps["--chance-gate"]


def test_a_redraw_counts_against_a_source_only_when_at_least_as_strong(tmp_path):
    """Same partition carried across a residual block of 64 dimensions, coalitions of 4: a random redraw of
    the next partition sometimes pairs two of a coalition's members (a weaker split-like link), but never
    reproduces a persist as strong as the identical coalition's, so every coalition persists beyond chance."""
    lab = np.repeat(np.arange(16), 4)
    rd = _residual_run(tmp_path, lab, lab, d=64)
    rows = track_run(rd.root, controls=())["m"]
    assert all(r["event"] == "persist" and r["beyond_chance"] for r in rows)
    assert all(float(r["p_chance"]) == pytest.approx(1 / (CHANCE_DRAWS + 1)) for r in rows)
    table = read_table(rd.root / "tables" / "tracking_events.csv")
    assert float(table[0]["persist_%"]) == 100.0 == float(table[0]["persist_link_%"])


def test_the_whole_run_retracked_starts_its_tables_over_and_skips_half_b(tmp_path):
    lab = np.repeat(np.arange(8), 2)
    rd = _residual_run(tmp_path, lab, lab)
    rd.save_partition("h1", "m.b", lab)
    rd.save_partition("h2", "m.b", lab)
    rd.save_partition("h1", "old", lab)
    rd.save_partition("h2", "old", lab)
    assert set(track_run(rd.root, methods=["m", "old"], controls=())) == {"m", "old"}
    (rd.root / "partitions" / "h1" / "old.json").unlink()   # a method no longer in the run
    (rd.root / "partitions" / "h2" / "old.json").unlink()
    assert set(track_run(rd.root, controls=())) == {"m"}     # the half-b twin only when named
    tables = [read_table(rd.root / "tracking" / "transitions.csv"),
              read_table(rd.root / "tables" / "tracking_events.csv")]
    assert all({r["method"] for r in t} == {"m"} for t in tables)
    assert set(track_run(rd.root, methods=["m.b"], controls=())) == {"m.b"}   # named: merged beside
    assert {r["method"] for r in read_table(rd.root / "tracking" / "transitions.csv")} == {"m", "m.b"}
