"""hedonic-neurons: coalitions of neurons as stable partitions of a top-responsive hedonic game."""

__version__ = "0.1.0"
