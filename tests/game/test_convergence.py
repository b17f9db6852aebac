"""When the fractional best-response dynamics cycle: detection, early stop, the state returned, the flags."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from hedonic_neurons import HedonicPartition, planted_game
from hedonic_neurons.game.dynamics import (
    CYCLE_RULE,
    absorb_singletons,
    best_response,
    improving_players,
    priority_order,
    relabel_by_size,
    separable_potential,
)
from hedonic_neurons.rundir import RunDir

# A symmetric 6-player game (seeded normal, rounded) on which the fractional dynamics at tau = 0 in the priority
# order cycle: from sweep 1 on the state alternates between {0,2,3,5},{4},{1} ... (3 players able to improve)
# and {0,3},{2,4,5},{1} (1 player able to improve: 5, who would rejoin 3).
PHI_CYCLE = np.array([
    [0.00, -0.35, -0.31, 1.00, 0.25, -0.52],
    [-0.35, 0.00, -0.25, -0.93, -0.05, 0.16],
    [-0.31, -0.25, 0.00, 0.46, 0.09, 0.12],
    [1.00, -0.93, 0.46, 0.00, -0.74, 1.38],
    [0.25, -0.05, 0.09, -0.74, 0.00, 0.60],
    [-0.52, 0.16, 0.12, 1.38, 0.60, 0.00],
])

BEFORE = Path(__file__).parent / "data" / "planted_labels_before_cycle_detection.json"


def _same_partition(a, b) -> bool:
    return np.array_equal(relabel_by_size(np.asarray(a)), relabel_by_size(np.asarray(b)))


def _trajectory(phi, tau, max_size, order, sweeps):
    """The state after 0..sweeps-1 sweeps, each from a run capped there (no cycle is reached that early)."""
    return [best_response(phi, tau, "fractional", max_size, order=order, max_sweeps=s)[0] for s in range(sweeps)]


def test_cycle_is_detected_and_the_run_stops_early():
    order = priority_order(PHI_CYCLE)
    labels, info = best_response(PHI_CYCLE, 0.0, "fractional", 10, order=order, max_sweeps=100)
    assert not info["converged"]
    assert info["cycle_start"] == 1 and info["cycle_length"] == 2
    assert info["sweeps"] == 3 and info["moves"] == [4, 2, 2]  # stopped at the repeat, not at max_sweeps
    states = _trajectory(PHI_CYCLE, 0.0, 10, order, 4)
    assert _same_partition(states[1], states[3]) and not _same_partition(states[1], states[2])
    # the rule, computed here from the two states of the cycle: fewest improving players, then welfare
    movers = [improving_players(PHI_CYCLE, s, 0.0, "fractional", 10).size for s in states[1:3]]
    assert movers == [3, 1]
    assert _same_partition(labels, states[2]) and info["improving"] == 1
    assert improving_players(PHI_CYCLE, labels, 0.0, "fractional", 10).tolist() == [5]
    assert info["returned"] == "cycle: " + CYCLE_RULE
    assert info["potential"] == pytest.approx(separable_potential(PHI_CYCLE, states[2], 0.0, "fractional"))


def test_rule_prefers_the_higher_welfare_among_states_with_as_few_improving_players():
    # a seeded 6-player game whose cycle has two states with one improving player each
    rng = np.random.default_rng(102)
    a = rng.standard_normal((6, 6))
    phi = np.round((a + a.T) / 2, 2)
    np.fill_diagonal(phi, 0)
    order = priority_order(phi)
    labels, info = best_response(phi, 0.0, "fractional", 10, order=order)
    assert info["cycle_length"] == 2 and info["sweeps"] < 100
    s0 = info["cycle_start"]
    cycle = _trajectory(phi, 0.0, 10, order, s0 + 2)[s0:]
    assert [improving_players(phi, s, 0.0, "fractional", 10).size for s in cycle] == [1, 1]
    welfare = [separable_potential(phi, s, 0.0, "fractional") for s in cycle]
    assert welfare[0] != pytest.approx(welfare[1])
    assert _same_partition(labels, cycle[int(np.argmax(welfare))])


def test_random_orders_are_not_cut_short():
    # a repeated state under a random order proves no cycle: those runs keep their old behaviour
    _, info = best_response(PHI_CYCLE, 0.0, "fractional", 10, rng=np.random.default_rng(0), max_sweeps=100)
    assert info["cycle_length"] is None and info["returned"] in ("converged", "max_sweeps: the last state")


def test_estimator_flags_on_a_cycling_game_and_they_are_saved(tmp_path):
    hp = HedonicPartition(threshold=0.0, n_certificate=200).fit(PHI_CYCLE)
    st = hp.stability_
    assert st["converged"] is False and st["cycle_detected"] is True and st["cycle_length"] == 2
    assert st["sweeps"] == 3 and st["max_sweeps"] == 100
    assert st["improving_players"] == 1 and st["improving_at_stop"] == 1 and st["nash_stable"] is False
    assert st["returned"] == "cycle: " + CYCLE_RULE
    assert hp.converged_ is False and hp.cycle_length_ == {"tier1": 2} and hp.n_sweeps_ == {"tier1": 3}
    order = priority_order(PHI_CYCLE)
    assert _same_partition(hp.labels_, _trajectory(PHI_CYCLE, 0.0, 10, order, 3)[2])
    path = RunDir(tmp_path / "run").save_partition("0", "hedonic", hp.labels_, stability=hp.stability_)
    saved = json.loads(Path(path).read_text())["stability"]
    for key in ("converged", "cycle_detected", "cycle_length", "returned", "sweeps", "improving_players",
                "improving_at_stop"):
        assert saved[key] == st[key]


def test_second_tier_cycle_is_detected_and_reported():
    # everyone alone after tier 1: tier 2 plays the cycling game among them
    labels, info = absorb_singletons(PHI_CYCLE, np.arange(6), 0.0, "fractional", 10, order=priority_order(PHI_CYCLE))
    assert info["tier2_cycle_length"] == 2 and info["tier2_sweeps"] == 3 and not info["tier2_converged"]
    assert info["tier2_improving"] == 1 and info["tier2_returned"] == "cycle: " + CYCLE_RULE
    # one player left alone has nothing to move: settled
    _, one = absorb_singletons(PHI_CYCLE, np.array([0, 0, 0, 1, 1, 2]), 0.0, "fractional", 10)
    assert one["tier2_players"] == 1 and one["tier2_converged"] and one["tier2_cycle_length"] is None


def test_converging_game_reads_nash_stable():
    phi, _ = planted_game(120, noise=0.3, random_state=1)
    hp = HedonicPartition(n_certificate=200).fit(phi)
    st = hp.stability_
    assert st["converged"] and not st["cycle_detected"] and st["cycle_length"] is None
    assert st["returned"] == "converged" and st["improving_players"] == 0 and st["nash_stable"]
    assert st["improving_at_stop"] == 0 and st["tier2_improving_at_stop"] == 0
    assert st["tier2_converged"] and not st["tier2_cycle_detected"] and st["tier2_returned"] == "converged"
    assert hp.converged_ and hp.cycle_length_ == {"tier1": None, "tier2": None}
    assert hp.n_sweeps_["tier1"] == st["sweeps"] and hp.n_sweeps_["tier2"] == st["tier2_sweeps"]


def test_converging_games_return_the_same_labels_as_before_cycle_detection():
    # digests of the labels the solver returned before cycle detection existed (every run here converged)
    before = json.loads(BEFORE.read_text())
    assert len(before) == 30
    for row in before:
        phi, _ = planted_game(row["n"], noise=row["noise"], random_state=row["seed"])
        hp = HedonicPartition(preset=row["preset"], utility=row["utility"], n_certificate=200).fit(phi)
        assert hp.stability_["converged"] and hp.stability_["cycle_length"] is None
        digest = hashlib.sha256(",".join(map(str, hp.labels_.tolist())).encode()).hexdigest()[:16]
        assert digest == row["sha256_16"], row
