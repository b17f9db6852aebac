"""Moved to `hedonic_neurons.models.finetune` (library code, not orchestration); re-exported here."""

from hedonic_neurons.models.finetune import *  # noqa: F403
from hedonic_neurons.models.finetune import FinetuneConfig, build_task_data, finetune  # noqa: F401
