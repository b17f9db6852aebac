"""The default solver (issue 11): separable utilities, best-response dynamics, the stability it measures."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from hedonic_neurons import HedonicPartition, planted_game
from hedonic_neurons.game import Game, member_utilities, utilities_in_partition
from hedonic_neurons.game.dynamics import (
    absorb_singletons,
    best_response,
    improving_players,
    priority_order,
    separable_potential,
)
from hedonic_neurons.game.stability import blocking_mask, partition_shape, partition_synergy
from hedonic_neurons.game.utility import partner_quantile, positive_quantile


def _chain_game(n_pairs=8, n_noise=40, seed=0):
    """Pairs (2t, 2t+1) with phi 1, consecutive pairs linked by 0.4 (1 -> 2, 3 -> 4, ...), small noise.

    A top-k player with a free slot takes the 0.4 link, so the choice graph chains every pair into
    one strongly connected component; a utility that counts every member keeps the pairs apart.
    """
    rng = np.random.default_rng(seed)
    n = 2 * n_pairs + n_noise
    phi = rng.normal(0, 0.03, (n, n))
    phi = (phi + phi.T) / 2
    for t in range(n_pairs):
        phi[2 * t, 2 * t + 1] = phi[2 * t + 1, 2 * t] = 1.0
        if t + 1 < n_pairs:
            phi[2 * t + 1, 2 * t + 2] = phi[2 * t + 2, 2 * t + 1] = 0.4
    for t in range(n_pairs):  # the pairs dislike everything else a little
        for j in range(2 * n_pairs):
            if abs(j // 2 - t) > 1:
                phi[2 * t, j] = phi[j, 2 * t] = phi[2 * t + 1, j] = phi[j, 2 * t + 1] = -0.2
    np.fill_diagonal(phi, 0)
    return phi, n_pairs


def test_default_keeps_the_groups_where_topk_chains_into_one_component():
    phi, n_pairs = _chain_game()
    old = HedonicPartition(preset="topk", threshold=0.2, m=20_000, omega=2_000).fit(phi)
    chained = old.labels_[: 2 * n_pairs]
    assert np.unique(chained).size == 1  # today's default: one sink component over all 16 players
    assert old.stability_["rate"] == 0  # ... which no sampled coalition blocks
    assert old.stability_["share_within_max_size"] < 1 - 2 * n_pairs / phi.shape[0] + 1e-9
    new = HedonicPartition().fit(phi)
    lab = new.labels_
    for t in range(n_pairs):
        assert lab[2 * t] == lab[2 * t + 1]
        assert (lab == lab[2 * t]).sum() == 2  # exactly the intended pair
    assert new.stability_["nash_stable"] and new.stability_["improving_players"] == 0
    assert new.stability_["largest"] <= 10 and new.stability_["share_within_max_size"] == 1.0


@pytest.mark.parametrize("utility", ["fractional", "additive"])
def test_planted_recovery(utility):
    phi, truth = planted_game(600, noise=0.1, random_state=1)
    hp = HedonicPartition(utility=utility).fit(phi)
    assert adjusted_rand_score(truth, hp.labels_) >= 0.99
    assert hp.stability_["improving_players"] == 0 and hp.stability_["converged"]
    assert hp.params_["solver"] == "best_response"
    assert 0 < hp.threshold_ < 0.5 and "97%" in hp.threshold_rule_ and "84%" in hp.threshold_rule_
    assert "lowered" not in hp.threshold_rule_  # 600 players: the q97 cut leaves each many more than k partners


def test_partner_quantile_hand_checked():
    # 5 players, 20 ordered off-diagonal entries of which 8 positive: a player has 0.4 x 4 = 1.6 positive partners
    # on average; at least k = 1 above the cut needs q <= 1 - 1 / 1.6 = 0.375
    phi = -np.ones((5, 5))
    for i, j in ((0, 1), (1, 2), (2, 3), (3, 4)):
        phi[i, j] = phi[j, i] = 1.0 + i
    assert partner_quantile(phi, 0.3, 1) == 0.3
    assert partner_quantile(phi, 0.97, 1) == pytest.approx(0.375)
    assert partner_quantile(phi, 0.97, 2) == 0.0  # fewer positive partners than asked: the smallest positive
    assert partner_quantile(-np.ones((4, 4)), 0.9, 3) == 0.9  # nothing positive: unchanged


def test_small_game_keeps_its_groups():
    """On 48 players the q97 cut alone falls inside the signal (0.8 partners per player above it) and split
    the planted groups (ARI 0.72); tier 1's quantile is lowered to the top k partners and the groups stay."""
    phi, truth = planted_game(48, noise=0.1, random_state=0)
    hp = HedonicPartition().fit(phi)
    assert "lowered from 97%" in hp.threshold_rule_
    assert adjusted_rand_score(truth, hp.labels_) == pytest.approx(1.0)
    strict = HedonicPartition(threshold=float(positive_quantile(phi, 0.97)), absorb_quantile=None).fit(phi)
    assert adjusted_rand_score(truth, strict.labels_) < 0.95


def test_improving_players_hand_checked():
    phi = np.zeros((4, 4))
    phi[0, 1] = phi[1, 0] = 1.0
    phi[2, 3] = phi[3, 2] = 1.0
    phi[1, 2] = phi[2, 1] = 0.6
    tau = 0.5
    # {0,1},{2,3}: player 1 has 0.5; joining {2,3} gives 0.1 - 0.5 < 0; nobody moves
    assert improving_players(phi, np.array([0, 0, 1, 1]), tau, "additive", 10).size == 0
    # {0},{1,2,3}: player 1 has 0.1 - 0.5 = -0.4 and gains by leaving or joining 0 (0.5); player 2 has
    # 0.1 + 0.5 = 0.6 (stays); player 3 has -0.5 + 0.5 = 0 (alone would be 0: not strictly better)
    np.testing.assert_array_equal(improving_players(phi, np.array([0, 1, 1, 1]), tau, "additive", 10), [1])
    # the size cap: with max_size 1 nobody may join anyone, but player 1 still gains by leaving
    np.testing.assert_array_equal(improving_players(phi, np.array([0, 1, 1, 1]), tau, "additive", 1), [1])
    # fractional: u_1({1,2,3}) = -0.4 / 3 < 0, u_1({0,1}) = 0.5 / 2
    np.testing.assert_array_equal(improving_players(phi, np.array([0, 1, 1, 1]), tau, "fractional", 10), [1])
    game = Game(phi, tau=tau, utility="additive")
    np.testing.assert_allclose(utilities_in_partition(game, np.array([0, 1, 1, 1])), [0, -0.4, 0.6, 0.0])
    util, _ = member_utilities(Game(phi, tau=tau, utility="fractional"), np.array([[1, 2, 3, -1]]))
    np.testing.assert_allclose(util[0, :3], [-0.4 / 3, 0.6 / 3, 0.0])
    # {0, 1} blocks {0},{1,2,3}: both strictly prefer it (0.5 > 0 and 0.5 > -0.4)
    assert blocking_mask(game, np.array([0, 1, 1, 1]), np.array([[0, 1], [2, 3]])).tolist() == [True, False]
    labels, info = best_response(phi, tau, "additive", 10, np.random.default_rng(0), init=np.array([0, 1, 1, 1]))
    assert adjusted_rand_score([0, 0, 1, 1], labels) == 1.0 and info["converged"]
    assert separable_potential(phi, labels, tau, "additive") == pytest.approx(1.0)


def test_fixed_seed_is_deterministic_and_seeds_differ_only_in_order():
    phi, _ = planted_game(400, noise=0.25, random_state=3)
    a = HedonicPartition(random_state=5).fit(phi)
    b = HedonicPartition(random_state=5).fit(phi)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.stability_ == b.stability_


def test_init_from_a_partition_is_certified_or_improved():
    phi, truth = planted_game(300, noise=0.1, random_state=2)
    hp = HedonicPartition(init=truth).fit(phi)  # the planted partition is already Nash stable: kept
    assert adjusted_rand_score(truth, hp.labels_) == 1.0 and hp.stability_["sweeps"] == 1
    start = np.arange(300) // 20  # blocks of 20 players: oversized, cut to pieces of 10 first
    hp = HedonicPartition(init=start).fit(phi)
    assert hp.stability_["nash_stable"] and hp.stability_["largest"] <= 10


def test_score_and_certificate_on_an_evaluation_phi():
    phi, truth = planted_game(200, noise=0.1, random_state=4)
    hp = HedonicPartition().fit(phi)
    other = -phi  # an evaluation valuation that disagrees on purpose
    assert hp.score(phi) > 0.5 and hp.score(other) < -0.5
    cert = hp.certificate(other, psi_eval=np.ones(200))
    assert cert["heldout_pair"] == pytest.approx(hp.score(other))
    assert cert["heldout_ratio"] < 0 and cert["heldout_n_scored"] == int((np.bincount(hp.labels_) >= 2).sum())
    with pytest.raises(ValueError, match="same players"):
        partition_synergy(hp.labels_, phi[:10, :10])


def test_partition_shape():
    shape = partition_shape(np.array([0, 0, 1, 2, 2, 2]), max_size=2)
    assert shape["share_within_max_size"] == pytest.approx(3 / 6)
    assert shape["share_in_2_to_max"] == pytest.approx(2 / 6)
    assert shape["largest"] == 3 and shape["n_coalitions"] == 3


def test_presets_and_bad_options():
    phi, _ = planted_game(120, noise=0.1, random_state=0)
    hp = HedonicPartition(preset="paper", m=2_000, omega=200).fit(phi)
    assert hp.params_["utility"] == "mean" and hp.params_["threshold"] is None
    assert hp.params_["sampler"]["name"] == "uniform" and hp.params_["emit"] == "one"
    assert hp.params_["solver"] == "pac_top_cover"
    assert HedonicPartition(preset="topk", m=2_000, omega=200).fit(phi).params_["utility"] == "sum"
    # an explicit parameter wins over the preset
    assert HedonicPartition(preset="paper", utility="sum", m=2_000, omega=200).fit(phi).params_["utility"] == "sum"
    with pytest.raises(ValueError, match="preset"):
        HedonicPartition(preset="fast").fit(phi)
    with pytest.raises(ValueError, match="finite tau"):
        HedonicPartition(threshold=None).fit(phi)
    with pytest.raises(ValueError, match="tau_quantile"):
        HedonicPartition(tau_quantile=1.0).fit(phi)


def test_pure_noise_with_standard_errors_stays_mostly_alone():
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(300, 300))
    phi = (phi + phi.T) / 2
    np.fill_diagonal(phi, 0)
    se = np.full_like(phi, 1 / np.sqrt(2))
    np.fill_diagonal(se, 0)
    hp = HedonicPartition().fit(phi, se)
    assert "floor binds" in hp.threshold_rule_
    assert hp.stability_["share_in_2_to_max"] < 0.15  # without se the quantile rule pairs up most players
    assert HedonicPartition().fit(phi).stability_["share_in_2_to_max"] > 0.5


def test_second_tier_groups_the_players_left_alone_and_keeps_the_first_closed():
    """Strong pairs {0,1} {2,3} {4,5} (phi 1) form at tau 0.5; weak pairs {6,7} {8,9} (phi 0.3) only at the
    second tier's 0.2, and player 6 may not join {0,1} (phi 0.9 to player 0) since tier-1 coalitions are closed."""
    from hedonic_neurons.game.dynamics import absorb_singletons

    n = 12
    phi = np.full((n, n), -0.05)
    for a, b, v in ((0, 1, 1.0), (2, 3, 1.0), (4, 5, 1.0), (6, 7, 0.3), (8, 9, 0.3), (6, 0, 0.9)):
        phi[a, b] = phi[b, a] = v
    np.fill_diagonal(phi, 0)
    tier1, _ = best_response(phi, 0.5, "fractional", 10)
    assert [tier1[2 * t] == tier1[2 * t + 1] for t in range(3)] == [True] * 3
    assert np.bincount(tier1)[tier1[6:]].tolist() == [1] * 6  # 6..11 alone at tau 0.5
    labels, info = absorb_singletons(phi, tier1, 0.2, "fractional", 10)
    assert info["tier2_players"] == 6 and info["tier2_converged"]
    assert adjusted_rand_score(tier1[:6], labels[:6]) == 1.0  # tier 1 untouched
    assert labels[6] == labels[7] != labels[0] and labels[8] == labels[9]
    assert np.unique(labels[10:]).size == 2 and (np.bincount(labels)[labels[10:]] == 1).all()  # no partner
    assert improving_players(phi, labels, 0.5, "fractional", 10).tolist() == [6, 7, 8, 9]  # tier 2 only
    tier2 = info["tier2_set"]
    assert improving_players(phi[np.ix_(tier2, tier2)], labels[tier2], 0.2, "fractional", 10).size == 0


def test_default_has_two_tiers_and_the_fractional_preset_one():
    rng = np.random.default_rng(3)
    phi = rng.gamma(0.5, 1.0, (150, 150)) - 0.6  # skewed: a few strong entries, many weak ones
    phi = (phi + phi.T) / 2
    np.fill_diagonal(phi, 0)
    new = HedonicPartition(random_state=0).fit(phi)
    old = HedonicPartition(absorb_quantile=None, random_state=0).fit(phi)  # the same first tier, alone
    assert "second tier" in new.threshold_rule_ and "second tier" not in old.threshold_rule_
    assert new.tier2_threshold_ < new.threshold_ and old.tier2_threshold_ is None
    assert HedonicPartition(preset="fractional").fit(phi).tier2_threshold_ is None
    st = new.stability_
    assert st["tier2_players"] == int((np.bincount(old.labels_) == 1)[old.labels_].sum())
    assert st["improving_players"] == 0 and st["improving_players_tier2"] == 0 and st["nash_stable"]
    assert st["share_in_2_to_max"] > old.stability_["share_in_2_to_max"]
    with pytest.raises(ValueError, match="absorb_quantile"):
        HedonicPartition(absorb_quantile=1.5).fit(phi)


def test_partition_cli_absorb_quantile(tmp_path):
    from safetensors.numpy import save_file

    from hedonic_neurons.cli import main

    rng = np.random.default_rng(3)
    phi = rng.gamma(0.5, 1.0, (80, 80)) - 0.6
    phi = (phi + phi.T) / 2
    np.fill_diagonal(phi, 0)
    save_file({"phi": phi}, str(tmp_path / "phi.safetensors"))
    import json

    for flag, tiers in ((["--absorb-quantile", "none"], False), ([], True)):
        out = tmp_path / f"p{tiers}.json"
        assert main(["partition", str(tmp_path / "phi.safetensors"), "--key", "phi", "--out", str(out), *flag]) == 0
        assert ("second tier" in json.dumps(json.loads(out.read_text()))) == tiers


def test_priority_order_is_strongest_first_and_computed_by_blocks():
    phi = np.array([[0, 1, 5, 0], [3, 0, 0, 2], [1, 0, 0, 0], [0, 2, 0, 0]], dtype=np.float64)
    # symmetrised best partner: 0 and 2 -> 3 (their pair), 1 and 3 -> 2; ties to the smaller id
    np.testing.assert_array_equal(priority_order(phi), [0, 2, 1, 3])
    np.testing.assert_array_equal(priority_order(phi, block=3), [0, 2, 1, 3])
    rng = np.random.default_rng(0)
    big = rng.normal(size=(37, 37))
    np.fill_diagonal(big, 0)
    np.testing.assert_array_equal(priority_order(big, block=5), priority_order(big))


def test_priority_order_decides_a_race_that_random_orders_leave_to_chance():
    # a 4-cycle 0-1 (0.9), 1-2 (0.8), 2-3 (0.7), 3-0 (0.6) with the cap 2: both perfect matchings are Nash
    # stable (every coalition is full). Strongest first (0, 1, 2, 3): 0 takes 1, then 2 takes 3, on every seed.
    phi = np.zeros((4, 4))
    for i, j, v in ((0, 1, 0.9), (1, 2, 0.8), (2, 3, 0.7), (3, 0, 0.6)):
        phi[i, j] = phi[j, i] = v
    np.testing.assert_array_equal(priority_order(phi), [0, 1, 2, 3])
    for seed in range(6):
        lab, info = best_response(phi, 0.1, "fractional", 2, np.random.default_rng(seed), order=priority_order(phi))
        assert info["converged"] and lab[0] == lab[1] and lab[2] == lab[3] and lab[0] != lab[2]
    labs = {tuple(HedonicPartition(max_size=2, threshold=0.1, random_state=s).fit(phi).labels_) for s in range(6)}
    assert len(labs) == 1
    # random orders reach both matchings over a few seeds (when 2 moves first it takes 1, and 0 pairs with 3)
    rand = {tuple(HedonicPartition(max_size=2, threshold=0.1, order="random", n_init=1, random_state=s)
                  .fit(phi).labels_) for s in range(20)}
    assert len(rand) == 2


def test_default_does_not_depend_on_the_seed_and_the_random_order_preset_does():
    rng = np.random.default_rng(3)
    phi = rng.gamma(0.5, 1.0, (120, 120)) - 0.6
    phi = (phi + phi.T) / 2
    np.fill_diagonal(phi, 0)
    a, b = HedonicPartition(random_state=0).fit(phi), HedonicPartition(random_state=7).fit(phi)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.stability_["n_init"] == 1 and a.stability_["nash_stable"] and a.params_["order"] == "priority"
    r0 = HedonicPartition(preset="random-order", random_state=0).fit(phi)
    r7 = HedonicPartition(preset="random-order", random_state=7).fit(phi)
    assert r0.stability_["n_init"] == 8 and r0.params_["order"] == "random"
    # the preset keeps the previous default's costs (q90 / q86), whatever the default's
    assert "90%" in r0.threshold_rule_ and "86%" in r0.threshold_rule_ and r0.params_["tau_quantile"] == 0.9
    assert not np.array_equal(r0.labels_, r7.labels_)
    with pytest.raises(ValueError, match="order must be one of"):
        HedonicPartition(order="alphabetical").fit(phi)


def test_second_tier_keeps_the_priority_order_among_the_players_left_alone():
    # tier 1 (tau 0.5) groups {0, 1}; 2, 3, 4 are alone. At tau_2 = 0.1 with the cap 2, player 3 (best
    # partner 0.4, with 4) moves first and takes 4; player 2 (0.3, with 3) moves last and stays alone.
    phi = np.zeros((5, 5))
    phi[0, 1] = phi[1, 0] = 1.0
    phi[2, 3] = phi[3, 2] = 0.3
    phi[3, 4] = phi[4, 3] = 0.4
    order = priority_order(phi)
    np.testing.assert_array_equal(order, [0, 1, 3, 4, 2])
    lab, _ = best_response(phi, 0.5, "fractional", 2, np.random.default_rng(0), order=order)
    out, info = absorb_singletons(phi, lab, 0.1, "fractional", 2, np.random.default_rng(0), order=order)
    assert info["tier2_players"] == 3 and out[0] == out[1] and out[3] == out[4]
    assert np.bincount(out)[out[2]] == 1
