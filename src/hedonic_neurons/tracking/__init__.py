"""Cross-layer tracking of coalitions: interaction mass, matching, persist/merge/split/vanish (paper 3.4).

``mass``, ``events`` and ``controls`` are numpy/scipy only; ``jacobian`` (residual sites) imports torch and is not
imported here; ``run.track_run`` reads and writes a run directory.
"""

from hedonic_neurons.tracking.controls import (
    CONTROLS,
    EXPECTED,
    PAPER_TABLE3,
    POSITIVE_CONTROLS,
    best_jaccard,
    merge_partition,
    random_partition_like,
    shuffle_tracking_inputs,
    split_partition,
    summarize_events,
)
from hedonic_neurons.tracking.events import (
    EVENT_COLORS,
    EVENTS,
    MEASURES,
    NULLS,
    classify,
    link_shares,
    null_mass,
    relative_shares,
    track_layers,
    track_transition,
    transition_table,
)
from hedonic_neurons.tracking.mass import (
    coalition_ids,
    coalition_sizes,
    coalition_write,
    mlp_interaction_mass,
    mlp_transition,
    residual_interaction_mass,
    residual_transition,
)

__all__ = [
    "EVENTS", "EVENT_COLORS", "MEASURES", "NULLS", "classify", "null_mass", "relative_shares", "link_shares",
    "track_transition", "track_layers", "transition_table", "CONTROLS", "POSITIVE_CONTROLS", "EXPECTED",
    "PAPER_TABLE3", "random_partition_like", "split_partition", "merge_partition", "best_jaccard",
    "shuffle_tracking_inputs", "summarize_events",
    "coalition_ids", "coalition_sizes", "coalition_write", "mlp_interaction_mass", "mlp_transition",
    "residual_interaction_mass", "residual_transition", "track_run",
]


def __getattr__(name):  # lazy: track_run pulls in the run directory and the plotting code
    if name == "track_run":
        from hedonic_neurons.tracking.run import track_run

        return track_run
    raise AttributeError(name)
