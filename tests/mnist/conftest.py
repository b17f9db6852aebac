"""The tiny MNIST run of the stage and per-layer-parallelism tests (the digits come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from hedonic_neurons.experiments.mnist import MnistConfig
from hedonic_neurons.partition import SolverConfig

# one network, one layer, one epoch on sklearn's digits, no controls or self-verification, a short solver
TINY = dict(seeds=[0], layers=["h4"], n_train=200, n_test=128, epochs=1, controls=False, verify=False,
            loss_delta_images=32, n_grids=1)
TINY_SOLVER = dict(m=500, omega=50)


def tiny_config(path, **kw) -> MnistConfig:
    """MnistConfig of the tiny run on the npz at `path`; keyword arguments override its fields."""
    return MnistConfig(**{**TINY, "data": str(path), "solver": SolverConfig(**TINY_SOLVER), **kw})


@pytest.fixture(scope="session")
def tiny_mnist():
    """tiny_config(path, **overrides) -> MnistConfig (a fixture: tests import nothing from conftest)."""
    return tiny_config
