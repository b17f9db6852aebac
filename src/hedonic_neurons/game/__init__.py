"""The hedonic game and its solvers, pure numpy/scipy: separable and MFC utilities, best-response
dynamics, samplers, Top Covering, PAC-Top-Cover, stability measurement and planted games."""

from __future__ import annotations

import numpy as np

from hedonic_neurons.game.dynamics import best_response, improving_players
from hedonic_neurons.game.planted import planted_game
from hedonic_neurons.game.samplers import (
    SAMPLERS,
    CoalitionSampler,
    PartnerSampler,
    UniformSampler,
    WeightedSampler,
    make_sampler,
    register_sampler,
)
from hedonic_neurons.game.stability import partition_shape, partition_synergy, stability_certificate
from hedonic_neurons.game.top_cover import emit_round, pac_top_cover, sink_components, top_covering
from hedonic_neurons.game.utility import Game, coalition_values, member_utilities, utilities_in_partition


def labels_to_coalitions(labels: np.ndarray) -> list[np.ndarray]:
    """Coalitions as sorted index arrays, largest first (ties by smallest member)."""
    labels = np.asarray(labels)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    groups.sort(key=lambda g: (-g.size, int(g[0])))
    return groups


def coalitions_to_labels(coalitions, n: int | None = None) -> np.ndarray:
    """Labels from a list of disjoint coalitions covering 0..n-1 (checked)."""
    n = sum(len(c) for c in coalitions) if n is None else n
    labels = np.full(n, -1, dtype=np.int64)
    for cid, c in enumerate(coalitions):
        c = np.asarray(c, dtype=np.int64)
        if (labels[c] >= 0).any():
            raise ValueError("coalitions overlap: each player must be in exactly one coalition")
        labels[c] = cid
    if (labels < 0).any():
        raise ValueError(f"coalitions do not cover players {np.flatnonzero(labels < 0)[:10].tolist()}...")
    return labels


__all__ = [
    "Game", "CoalitionSampler", "UniformSampler", "WeightedSampler", "PartnerSampler", "SAMPLERS",
    "make_sampler", "register_sampler", "member_utilities", "coalition_values", "utilities_in_partition",
    "sink_components", "emit_round", "top_covering", "pac_top_cover", "stability_certificate",
    "planted_game", "labels_to_coalitions", "coalitions_to_labels", "best_response", "improving_players",
    "partition_shape", "partition_synergy",
]
