import pytest

from hedonic_neurons.layers import check_layers, format_layers, parse_layers


@pytest.mark.parametrize("spec, want", [("3-6", (3, 4, 5, 6)), ("1,3,5", (1, 3, 5)), ("7", (7,)), (7, (7,)),
                                        ("2,4-6", (2, 4, 5, 6)), ([5, 3, 3], (3, 5)), (None, None), ("", None)])
def test_parse_layers(spec, want):
    assert parse_layers(spec) == want


@pytest.mark.parametrize("spec", ["a", "6-3", "1,,2", "-1", "h1..h5"])
def test_parse_layers_refuses(spec):
    with pytest.raises(ValueError, match="'3-6'"):
        parse_layers(spec)


def test_format_and_check():
    assert format_layers((3, 4, 5, 7)) == "3-5,7"
    assert check_layers((1, 2), range(0, 4)) == (1, 2)
    with pytest.raises(ValueError, match="within 0-3"):
        check_layers((2, 9), range(0, 4))
