"""Cross-layer tracking of coalitions: interaction mass, matching, persist/merge/split/vanish (paper 3.4).

``mass`` and ``events`` are numpy/scipy only; ``jacobian`` (residual sites) imports torch and is not
imported here; ``run.track_run`` reads and writes a run directory.
"""

from hedonic_neurons.tracking.events import (
    EVENT_COLORS,
    EVENTS,
    classify,
    track_layers,
    track_transition,
    transition_table,
)
from hedonic_neurons.tracking.mass import (
    coalition_ids,
    coalition_sizes,
    coalition_write,
    mlp_interaction_mass,
    residual_interaction_mass,
)

__all__ = [
    "EVENTS", "EVENT_COLORS", "classify", "track_transition", "track_layers", "transition_table",
    "coalition_ids", "coalition_sizes", "coalition_write", "mlp_interaction_mass",
    "residual_interaction_mass", "track_run",
]


def __getattr__(name):  # lazy: track_run pulls in the run directory and the plotting code
    if name == "track_run":
        from hedonic_neurons.tracking.run import track_run

        return track_run
    raise AttributeError(name)
