"""Every option of every sub-command says what it does and what its default is; the layer syntax, --seeds
and the batch size mean the same in every command and in the Python API."""

from __future__ import annotations

import argparse
import inspect
import re

import pytest

from hedonic_neurons import cli
from hedonic_neurons.configs import add_config_flags
from hedonic_neurons.partition import SolverConfig


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    return dict(parser._subparsers._group_actions[0].choices)


def _switch(action: argparse.Action) -> bool:
    """A boolean switch (--quiet, --no-verify, --cover-all/--no-cover-all): its help need not state a default."""
    return (isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                argparse.BooleanOptionalAction)) or action.nargs == 0)


def _rendered(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_option_has_help_stating_its_default(command):
    sub = _subcommands()[command]
    missing, no_default = [], []
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        flag = action.option_strings[-1]
        text = _rendered(sub, action) if action.help not in (None, argparse.SUPPRESS) else ""
        if not text.strip():
            missing.append(flag)
            continue
        if _switch(action):
            continue
        if action.required:  # no default to state: the help says it must be given
            if "required" not in text:
                no_default.append(f"{flag} (required): {text!r}")
            continue
        if not re.search(r"\(default\b|\bdefault:", text):
            no_default.append(f"{flag}: {text!r}")
    assert not missing, f"{command}: options without help: {missing}"
    assert not no_default, f"{command}: options whose help does not state the default: {no_default}"


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_has_no_placeholder_metavars_or_none_choices(command):
    text = _subcommands()[command].format_help()
    assert not re.search(r"--[\w-]+ X\b", text), f"{command} --help shows an X placeholder"
    assert "None" not in text, f"{command} --help shows a literal None (users type 'none')"


def test_config_flags_parse_none_and_refuse_what_is_not_a_choice():
    p = argparse.ArgumentParser()
    names = add_config_flags(p, SolverConfig(), fields=["preset", "absorb_quantile", "n_certificate"])
    args = p.parse_args(["--preset", "none", "--absorb-quantile", "none", "--n-certificate", "500"])
    assert [getattr(args, n) for n in names] == [None, None, 500]
    assert p.parse_args(["--preset", "topk"]).preset == "topk"
    with pytest.raises(SystemExit):
        p.parse_args(["--preset", "fast"])


def test_layers_seeds_and_batch_size_mean_the_same_everywhere():
    sub = _subcommands()
    mnist, reranker, val = sub["mnist"], sub["reranker"], sub["valuations"]
    # one layer syntax: the MNIST hidden states h1..h5 are layers 1-5
    assert mnist.get_default("layers") == "1-5" and mnist.get_default("control_layer") == "3"
    from hedonic_neurons.cli.mnist import control_layer, mnist_layers

    assert mnist_layers("1-5") == ["h1", "h2", "h3", "h4", "h5"] and mnist_layers("2,4") == ["h2", "h4"]
    assert control_layer("3") == "h3"
    with pytest.raises(ValueError, match="within 1-5"):
        mnist_layers("0-6")
    with pytest.raises(ValueError, match="one layer"):
        control_layer("2-3")
    # --seeds is a count (seeds 0..N-1) in both experiments
    for p in (mnist, reranker):
        action = next(a for a in p._actions if "--seeds" in a.option_strings)
        assert action.type is int and "0..N-1" in action.help
    # the CLI's batch size is the API's
    from hedonic_neurons.models.valuate import compute_valuations

    api = inspect.signature(compute_valuations).parameters["batch_size"].default
    assert val.get_default("batch_size") == api


def test_solver_defaults_are_one_default_or_say_why():
    """partition uses SolverConfig's defaults; where planted, mnist or reranker differ, the flag's help gives
    the reason."""
    sub = _subcommands()
    base = SolverConfig()
    for command in ("partition", "planted", "mnist", "reranker"):
        p = sub[command]
        for action in p._actions:
            name = action.dest
            if name in ("help", "seed") or not hasattr(base, name) or name == "random_state":
                continue
            if action.default != getattr(base, name):
                assert command != "partition", f"partition --{name}: {action.default} is not SolverConfig's"
                assert ";" in action.help.split("(default:")[-1], f"{command} --{name} differs without a reason"
