"""`python -m hedonic_neurons.cli` (what `torchrun ... -m hedonic_neurons.cli` runs): the same entry point."""

import sys

from hedonic_neurons.cli import main

sys.exit(main())
