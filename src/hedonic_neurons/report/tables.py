"""Tables as lists of row dicts (CSV + Markdown): defined in `hedonic_neurons.rundir`, re-exported here."""

from hedonic_neurons.rundir import read_table, to_markdown, write_table

__all__ = ["read_table", "to_markdown", "write_table"]
