"""hedonic-neurons: coalitions of neurons as stable partitions of a top-responsive hedonic game."""

from hedonic_neurons.game import (
    CoalitionSampler,
    Game,
    PartnerSampler,
    UniformSampler,
    WeightedSampler,
    coalitions_to_labels,
    labels_to_coalitions,
    planted_game,
    register_sampler,
    stability_certificate,
    top_covering,
)
from hedonic_neurons.partition import HedonicPartition, SolverConfig

__version__ = "0.1.0"

__all__ = [
    "HedonicPartition", "SolverConfig", "Game", "CoalitionSampler", "UniformSampler", "WeightedSampler",
    "PartnerSampler", "register_sampler", "planted_game", "top_covering", "stability_certificate",
    "labels_to_coalitions", "coalitions_to_labels",
]
