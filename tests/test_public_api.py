"""The package root re-exports every part's public names; the solver never pulls in torch."""

import subprocess
import sys

import hedonic_neurons


def test_every_public_name_resolves():
    for name in hedonic_neurons.__all__:
        assert getattr(hedonic_neurons, name) is not None, name


def test_solver_import_does_not_import_torch():
    code = ("import sys, hedonic_neurons, hedonic_neurons.game, hedonic_neurons.partition; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
