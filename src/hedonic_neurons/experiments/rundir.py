"""Moved to `hedonic_neurons.rundir` (the package root, below every sub-package); re-exported here."""

from hedonic_neurons.rundir import RunDir, read_table, write_json, write_table

__all__ = ["RunDir", "read_table", "write_json", "write_table"]
