"""Moved to `hedonic_neurons.metrics.crossfit` (library code, not orchestration); re-exported here."""

from hedonic_neurons.metrics.crossfit import *  # noqa: F403
from hedonic_neurons.metrics.crossfit import split_halves, synergy_rows, versus_best  # noqa: F401
