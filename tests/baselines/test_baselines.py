"""Baselines: partitions of all players, exact count and size histogram when matched, deterministic."""

import numpy as np
import pytest

from hedonic_neurons.baselines import (
    RandomPartition,
    SphericalKMeansPartition,
    WardPartition,
    match_sizes,
    matched_baselines,
    size_histogram,
)


def _profiles(n=60, f=40, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, f))
    return centers[np.arange(n) % 5] + 0.3 * rng.normal(size=(n, f))


REF = np.repeat(np.arange(12), [2, 3, 4, 5, 6, 7, 8, 9, 4, 4, 4, 4])  # 60 players, 12 coalitions


def test_matched_baselines_histogram_and_cover():
    X = _profiles()
    out = matched_baselines(X, REF, random_state=0)
    assert set(out) == {"random", "kmeans", "ward"}
    for name, labels in out.items():
        assert labels.shape == (60,), name
        assert size_histogram(labels) == size_histogram(REF), name
        assert np.unique(labels).size == 12


def test_deterministic():
    X = _profiles()
    a, b = matched_baselines(X, REF, random_state=3), matched_baselines(X, REF, random_state=3)
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert not np.array_equal(RandomPartition([30, 30], 0).fit(X).labels_,
                              RandomPartition([30, 30], 1).fit(X).labels_)


def test_clusters_recover_planted_groups_without_matching():
    X = _profiles()
    for est in (SphericalKMeansPartition(5, random_state=0), WardPartition(5)):
        labels = est.fit(X).labels_
        truth = np.arange(60) % 5
        # each found cluster is pure in the planted group
        for c in np.unique(labels):
            assert np.unique(truth[labels == c]).size == 1


def test_match_sizes_keeps_already_matching_clusters():
    X = _profiles()
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    labels = np.arange(60) % 5
    out = match_sizes(Xn, labels, [12] * 5)
    # the clustering already has the target histogram: nothing moves (up to renaming)
    assert np.array_equal(np.unique(np.c_[labels, out], axis=0)[:, 0], np.arange(5))


def test_bad_sizes():
    with pytest.raises(ValueError, match="players"):
        RandomPartition([3, 3], 0).fit(np.zeros((7, 2)))
    with pytest.raises(ValueError, match="players"):
        matched_baselines(np.zeros((7, 2)), np.zeros(5))
