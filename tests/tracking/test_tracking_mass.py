"""Interaction mass against a direct loop over coalition pairs on small cases (float64)."""

import numpy as np
import pytest
import torch

from hedonic_neurons.models.gated_mlp import GatedBlock
from hedonic_neurons.tracking.jacobian import residual_jacobian_abs
from hedonic_neurons.tracking.mass import (
    coalition_ids,
    coalition_write,
    indicator,
    mlp_interaction_mass,
    residual_interaction_mass,
)


def _loop_write(W_down, acts, labels):
    ids = coalition_ids(labels)
    R = np.zeros((ids.size, W_down.shape[0]))
    for c, cid in enumerate(ids):
        members = np.flatnonzero(labels == cid)
        for x in range(acts.shape[0]):
            for p in range(W_down.shape[0]):
                R[c, p] += abs(sum(W_down[p, i] * acts[x, i] for i in members))
    return R / acts.shape[0]


def _loop_mlp_mass(R, W_up, W_gate, gain, labels, labels_next):
    ids, ids2 = coalition_ids(labels), coalition_ids(labels_next)
    M = np.zeros((ids.size, ids2.size))
    for a, ca in enumerate(ids):
        size_a = np.sum(labels == ca)
        for b, cb in enumerate(ids2):
            members = np.flatnonzero(labels_next == cb)
            total = 0.0
            for q in members:
                for p in range(W_up.shape[1]):
                    w = abs(W_up[q, p] * gain[p]) + (abs(W_gate[q, p] * gain[p]) if W_gate is not None else 0)
                    total += w * R[a, p]
            M[a, b] = total / (size_a * members.size)
    return M


@pytest.fixture
def small():
    rng = np.random.default_rng(3)
    d, n, n2, N = 5, 9, 7, 11
    labels = np.array([2, 0, 2, 5, 0, 5, 5, -1, 2])          # ids not contiguous, one unassigned
    labels_next = np.array([1, 1, 0, 3, 3, 3, 0])
    return dict(W_down=rng.normal(size=(d, n)), acts=rng.normal(size=(N, n)),
                W_up=rng.normal(size=(n2, d)), W_gate=rng.normal(size=(n2, d)),
                gain=rng.normal(size=d), labels=labels, labels_next=labels_next)


def test_coalition_write_matches_loop(small):
    R = coalition_write(small["W_down"], small["acts"], small["labels"], dtype=np.float64)
    np.testing.assert_allclose(R, _loop_write(small["W_down"], small["acts"], small["labels"]), rtol=1e-12)
    # chunking over samples changes nothing
    R1 = coalition_write(small["W_down"], small["acts"], small["labels"], dtype=np.float64, chunk_bytes=1)
    np.testing.assert_allclose(R1, R, rtol=1e-12)


def test_coalition_write_is_not_sum_of_abs(small):
    # the absolute value is taken after summing inside the coalition: cancellation must show
    W = np.array([[1.0, -1.0]])
    acts = np.array([[1.0, 1.0]])
    assert coalition_write(W, acts, np.array([0, 0]), dtype=np.float64)[0, 0] == 0.0
    assert coalition_write(W, acts, np.array([0, 1]), dtype=np.float64)[:, 0].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("with_gate,with_gain", [(True, True), (False, False), (True, False)])
def test_mlp_mass_matches_loop(small, with_gate, with_gain):
    R = coalition_write(small["W_down"], small["acts"], small["labels"], dtype=np.float64)
    gate = small["W_gate"] if with_gate else None
    gain = small["gain"] if with_gain else None
    M = mlp_interaction_mass(R, small["W_up"], gate, gain, small["labels"], small["labels_next"])
    ref = _loop_mlp_mass(R, small["W_up"], gate, gain if with_gain else np.ones(R.shape[1]),
                         small["labels"], small["labels_next"])
    assert M.shape == (3, 3)
    np.testing.assert_allclose(M, ref, rtol=1e-12)


def test_residual_mass_matches_loop():
    rng = np.random.default_rng(0)
    d, d2, N = 6, 5, 8
    J = np.abs(rng.normal(size=(d2, d)))
    acts = rng.normal(size=(N, d))
    labels, labels_next = np.array([0, 0, 1, 2, 1, 2]), np.array([4, 4, 4, 7, 7])
    M = residual_interaction_mass(J, acts, labels, labels_next)
    A = np.abs(acts).mean(0)
    ref = np.zeros((3, 2))
    for a, ca in enumerate([0, 1, 2]):
        for b, cb in enumerate([4, 7]):
            P, Q = np.flatnonzero(labels == ca), np.flatnonzero(labels_next == cb)
            ref[a, b] = sum(J[q, p] * A[p] for p in P for q in Q) / (P.size * Q.size)
    np.testing.assert_allclose(M, ref, rtol=1e-12)
    np.testing.assert_allclose(residual_interaction_mass(J, A, labels, labels_next), M)


def test_indicator():
    ind = indicator(np.array([3, -1, 3, 0]))
    np.testing.assert_array_equal(ind, [[0, 1], [0, 0], [0, 1], [1, 0]])


def test_bad_inputs_name_the_fix(small):
    with pytest.raises(ValueError, match="players"):
        coalition_write(small["W_down"], small["acts"], small["labels"][:-1])
    with pytest.raises(ValueError, match="d_ff"):
        coalition_write(small["W_down"], small["acts"][:, :-1], small["labels"])
    R = coalition_write(small["W_down"], small["acts"], small["labels"])
    with pytest.raises(ValueError, match="norm_gain_next"):
        mlp_interaction_mass(R, small["W_up"], None, np.ones(3), small["labels"], small["labels_next"])


def test_residual_jacobian_matches_autograd():
    torch.manual_seed(0)
    block = GatedBlock(4, 6).double()
    H = np.random.default_rng(1).normal(size=(7, 4))
    J = residual_jacobian_abs(block, H, batch_size=3)
    ref = np.zeros((4, 4))
    for x in H:
        ref += np.abs(torch.autograd.functional.jacobian(block, torch.tensor(x)).numpy())
    np.testing.assert_allclose(J, ref / len(H), rtol=1e-10)
    sub = residual_jacobian_abs(block, H, max_samples=3)
    assert sub.shape == (4, 4) and np.all(np.isfinite(sub))
