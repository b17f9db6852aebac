"""Baseline partitions of neurons (paper appendix I.5): random, spherical k-means, Ward, size-matched.

Every baseline is a scikit-learn-style estimator: hyperparameters in ``__init__``, ``fit(X)`` with
X = (n_players, n_features) activation profiles (one row per neuron), result in ``labels_``.
`LeidenPartition` (leidenalg CPM on the positive part of phi, communities <= max_size) is the
community-detection baseline: what a user would pick instead; it fits phi, not activations.
`matched_baselines` builds all three with the reference (Hedonic-PAS) partition's number of
coalitions and size histogram.
"""

from hedonic_neurons.baselines.leiden import LeidenPartition
from hedonic_neurons.baselines.partitions import (
    RandomPartition,
    SphericalKMeansPartition,
    WardPartition,
    match_sizes,
    matched_baselines,
    size_histogram,
)

__all__ = ["LeidenPartition", "RandomPartition", "SphericalKMeansPartition", "WardPartition", "match_sizes",
            "matched_baselines", "size_histogram"]
