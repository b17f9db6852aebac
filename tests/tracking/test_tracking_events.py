"""Persist / split / merge / vanish on hand-built mass matrices, and the Table-3 percentages.

The paper's rule (measure="raw") and the chance-corrected excess (measure="excess"), which read an M matrix
alone; the default relative measure, which needs player-level mass, is tested in test_tracking_relative.py.
"""

import numpy as np
import pytest

from hedonic_neurons.tracking.events import (
    classify,
    link_shares,
    null_mass,
    track_layers,
    track_transition,
    transition_table,
)


def _by_source(rows):
    return {r["source"]: r for r in rows}


def test_pure_persist():
    M = np.diag([3.0, 2.0, 1.0])
    rows = track_transition(M, measure="excess")
    assert [r["event"] for r in rows] == ["persist"] * 3
    assert [r["target"] for r in rows] == [0, 1, 2]
    assert all(r["alpha"] == 1.0 and r["beta"] == 1.0 for r in rows)


def test_persist_with_leak_below_hi():
    # 80 % to the match and 80 % of the match's input: still persist at hi = 0.7, not at hi = 0.9
    M = np.array([[8.0, 2.0], [2.0, 8.0]])
    assert [r["event"] for r in track_transition(M, measure="raw")] == ["persist", "persist"]
    assert [r["event"] for r in track_transition(M, hi=0.9, measure="raw")] == ["vanish", "vanish"]
    # excess: chance gives 50 %, so 80 % observed is (0.8 - 0.5) / (1 - 0.5) = 0.6 beyond chance
    rows = track_transition(M, measure="excess")
    assert [r["alpha"] for r in rows] == pytest.approx([0.6, 0.6])
    assert [r["beta"] for r in rows] == pytest.approx([0.6, 0.6])
    assert [r["event"] for r in rows] == ["vanish", "vanish"]
    assert [r["event"] for r in track_transition(M, hi=0.6, measure="excess")] == ["persist", "persist"]


def test_clean_two_way_split():
    # source 0 feeds targets 0 and 1 equally and nobody else feeds them; source 1 persists into 2
    M = np.array([[1.0, 1.0, 0.0],
                  [0.0, 0.0, 1.0]])
    rows = _by_source(track_transition(M, measure="raw"))
    assert rows[0]["event"] == "split"
    assert rows[0]["alpha"] == pytest.approx(0.5) and rows[0]["beta"] == pytest.approx(1.0)
    assert rows[0]["n_links"] == 2
    assert rows[1]["event"] == "persist"
    # excess: T row sums (2, 1), column sums (1, 1, 1): N(0, t) = 2/3, E(0, 0) = 1/3, alpha = (1/3) / (4/3)
    rows = _by_source(track_transition(M, measure="excess"))
    assert rows[0]["event"] == "split" and rows[0]["n_links"] == 2
    assert rows[0]["alpha"] == pytest.approx(0.25) and rows[0]["beta"] == pytest.approx(1.0)
    assert rows[0]["expected"] == pytest.approx(2 / 3)
    assert rows[1]["event"] == "persist" and rows[1]["alpha"] == pytest.approx(1.0)


def test_two_into_one_merge():
    # sources 0 and 1 each send everything to target 0, which receives half from each.
    # The matching is one-to-one: one of them is matched (merge), the other has no positive match.
    M = np.array([[1.0, 0.0],
                  [1.0, 0.0]])
    rows = track_transition(M, measure="raw")
    events = sorted(r["event"] for r in rows)
    assert events == ["merge", "vanish"]
    merged = next(r for r in rows if r["event"] == "merge")
    assert merged["target"] == 0 and merged["alpha"] == 1.0 and merged["beta"] == pytest.approx(0.5)
    other = next(r for r in rows if r["event"] == "vanish")
    assert other["target"] == -1 and other["best_target"] == 0


def test_two_into_one_merge_excess():
    # two sources into target 0 (and a third source persisting into target 1, so the null is not trivial):
    # the matched one merges, and the unmatched one merges into its best target too (many_to_one)
    M = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    rows = track_transition(M, measure="excess")
    assert [r["event"] for r in rows] == ["merge", "merge", "persist"]
    assert sorted(r["matched"] for r in rows[:2]) == [False, True]
    assert all(r["target"] == 0 and r["alpha"] == pytest.approx(1.0) for r in rows[:2])
    # beta: (1 - 1 * 2/4) / (2 - 1 * 2/4) = 1/3 for each of the two merging sources
    assert [r["beta"] for r in rows[:2]] == pytest.approx([1 / 3, 1 / 3])
    # the paper's one-to-one reading: the unmatched one vanishes
    events = [r["event"] for r in track_transition(M, many_to_one=False, measure="excess")]
    assert sorted(events[:2]) == ["merge", "vanish"]


def test_vanish():
    # source 0's mass is spread thinly over five targets that are dominated by other sources
    M = np.zeros((6, 5))
    M[0] = 0.2
    M[1:, :] = 5 * np.eye(5)
    rows = _by_source(track_transition(M, measure="raw"))
    assert rows[0]["event"] == "vanish" and rows[0]["n_links"] == 5
    assert all(rows[s]["event"] == "persist" for s in range(1, 6))
    # excess: source 0 sends each target exactly what the null expects, so no link at all
    rows = _by_source(track_transition(M, measure="excess"))
    assert rows[0]["event"] == "vanish" and rows[0]["n_links"] == 0 and rows[0]["alpha"] == 0.0
    assert all(rows[s]["event"] == "persist" for s in range(1, 6))
    # a source with no outgoing mass at all vanishes unmatched
    rows = track_transition(np.array([[0.0, 0.0], [0.0, 1.0]]), measure="raw")
    assert rows[0]["event"] == "vanish" and rows[0]["target"] == -1 and rows[0]["best_target"] == -1


def test_matching_is_max_weight_not_greedy():
    # greedy row-by-row argmax would give source 0 target 0 (5) and source 1 target 1 (1): total 6.
    # the max-weight matching gives 4 + 4 = 8.
    M = np.array([[5.0, 4.0], [4.0, 1.0]])
    rows = track_transition(M, measure="raw")
    assert [r["target"] for r in rows] == [1, 0]


def test_classify_table():
    assert classify(0.9, 0.9) == "persist"
    assert classify(0.9, 0.2) == "merge"
    assert classify(0.2, 0.9) == "split"
    assert classify(0.2, 0.2) == "vanish"
    assert classify(0.9, 0.9, matched=False) == "vanish"
    assert classify(0.75, 0.75, hi=0.8) == "vanish"


def test_track_layers_and_table():
    labels = {"7": np.array([0, 0, 1, 1, 2]), "8": np.array([5, 5, 6, 6, 6, 7]),
              "9": np.array([0, 1, 1])}
    mass = {("7", "8"): np.array([[1.0, 0, 0], [0, 1.0, 1.0], [0, 0, 0]]),
            ("8", "9"): np.array([[1.0, 0], [1.0, 0], [0, 1.0]])}
    rows = track_layers(labels, mass, measure="raw")
    assert [r["transition"] for r in rows] == ["7->8"] * 3 + ["8->9"] * 3
    assert rows[0]["size"] == 2 and rows[2]["size"] == 1
    assert [r["target"] for r in rows[:2]] == [5, 6]          # coalition ids, not column indices
    table = transition_table(rows)
    assert [t["transition"] for t in table] == ["7->8", "8->9"]
    t = table[0]
    assert t["persist_%"] == pytest.approx(33.3) and t["split_%"] == pytest.approx(33.3)
    assert t["vanish_%"] == pytest.approx(33.3) and t["merge_%"] == 0.0
    for t in table:
        total = sum(t[f"{e}_%"] for e in ("persist", "merge", "split", "vanish"))
        assert total == pytest.approx(100, abs=0.2)
    # the dict form of the input gives the same table
    by = {("7", "8"): rows[:3], ("8", "9"): rows[3:]}
    assert transition_table(by) == table


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="lo <= hi"):
        track_transition(np.eye(2), hi=0.1, lo=0.7, measure="excess")
    with pytest.raises(ValueError, match="non-negative"):
        track_transition(-np.eye(2), measure="excess")
    with pytest.raises(ValueError, match="no labels for layer"):
        track_layers({"1": np.array([0])}, {("1", "2"): np.eye(1)}, measure="excess")
    with pytest.raises(ValueError, match="measure must be one of"):
        track_transition(np.eye(2), measure="kappa")
    with pytest.raises(ValueError, match="sizes"):
        track_transition(np.eye(2), sizes=[1, 2, 3], measure="excess")
    with pytest.raises(ValueError, match="recompute"):
        track_layers({"1": np.array([0, 1]), "2": np.array([0])}, {("1", "2"): np.eye(1)}, measure="excess")


def test_excess_is_size_aware_and_scale_free():
    # the excess reads total mass T = |C||C'| M; scaling M changes nothing, and the null uses the sizes
    rng = np.random.default_rng(0)
    M = rng.random((4, 5))
    s1, s2 = np.array([1, 2, 3, 4]), np.array([2, 2, 1, 5, 3])
    a = track_transition(M, sizes=s1, sizes_next=s2, measure="excess")
    b = track_transition(7.0 * M, sizes=s1, sizes_next=s2, measure="excess")
    assert [(r["target"], r["event"]) for r in a] == [(r["target"], r["event"]) for r in b]
    np.testing.assert_allclose([r["alpha"] for r in a], [r["alpha"] for r in b])
    T = M * np.outer(s1, s2)
    N = null_mass(T)
    np.testing.assert_allclose(N.sum(axis=1), T.sum(axis=1))        # the null keeps every margin
    np.testing.assert_allclose(N.sum(axis=0), T.sum(axis=0))
    Ns = null_mass(T, s2, "size")                                    # uniform random target group
    np.testing.assert_allclose(Ns[:, 0] / Ns[:, 3], 2 / 5)
    L = link_shares(M, s1, s2, measure="excess")
    assert np.all((L["alpha"] >= 0) & (L["alpha"] <= 1)) and np.all((L["beta"] >= 0) & (L["beta"] <= 1))
