"""distributed_valuations takes compute_valuations' keywords from its one signature (models.valuate)."""

import inspect

import pytest

from hedonic_neurons.models.distributed import distributed_valuations
from hedonic_neurons.models.valuate import compute_valuations, valuation_options


def test_options_are_compute_valuations_keywords_with_their_defaults():
    sig = inspect.signature(compute_valuations)
    opts = valuation_options(verify=False, batch_size=3)
    assert set(opts) == set(sig.parameters) - {"model", "inputs", "layer"}
    assert opts["verify"] is False and opts["batch_size"] == 3
    assert opts["site"] == sig.parameters["site"].default


def test_unknown_keyword_is_refused_before_anything_runs():
    with pytest.raises(TypeError, match="bogus"):
        distributed_valuations("no-such-model", ["a", "b"], 1, bogus=1)
