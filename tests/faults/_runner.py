"""The target of the forked attempts (an importable module, so a forkserver child can unpickle it)."""

import sys


def cli(argv: list[str]) -> None:
    """Run `hedonic-neurons argv` and exit with its status, as the console script would."""
    from hedonic_neurons.cli import main

    sys.exit(main(argv))
