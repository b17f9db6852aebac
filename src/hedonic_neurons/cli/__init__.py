"""`hedonic-neurons` command line: one sub-command per job, each registered by the module that owns it."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module exposes `register(subparsers)`, which adds its sub-command(s) and sets `func`.
_COMMAND_MODULES = [
    "hedonic_neurons.cli.partition",
    "hedonic_neurons.data.fetch",
    "hedonic_neurons.cli.mnist",
    "hedonic_neurons.report.cli",
    "hedonic_neurons.cli.reranker",
    "hedonic_neurons.models.cli",
    "hedonic_neurons.cli.study",
]
# sub-command -> the module that registers it, so a command imports only its own module: the others pull in
# torch and transformers (10+ s on a small machine), which e.g. refusing an unknown model must not wait for.
# tests/cli/test_cli_commands.py checks this table against what the modules register.
COMMANDS = {
    "partition": "hedonic_neurons.cli.partition",
    "planted": "hedonic_neurons.cli.partition",
    "fetch": "hedonic_neurons.data.fetch",
    "mnist": "hedonic_neurons.cli.mnist",
    "report": "hedonic_neurons.report.cli",
    "reranker": "hedonic_neurons.cli.reranker",
    "valuations": "hedonic_neurons.models.cli",
    "study": "hedonic_neurons.cli.study",
}


def _command_in(argv: list[str]) -> str | None:
    """The sub-command named in argv (the first token that is not a top-level option), if it is known."""
    for tok in argv:
        if tok in ("--quiet", "-v", "--verbose"):
            continue
        return tok if tok in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command (or only the module that registers `only`)."""
    parser = argparse.ArgumentParser(
        prog="hedonic-neurons",
        description="Find synergistic coalitions of neurons (hedonic games, PAC-Top-Cover).",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [COMMANDS[only]] if only in COMMANDS else _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    # --quiet / --verbose are accepted after the sub-command too (`hedonic-neurons mnist --quiet`)
    for child in sub.choices.values():
        common = ((("--quiet",), "no progress bars or log lines"), (("-v", "--verbose"), "debug logging"))
        for flags, helptext in common:
            try:
                child.add_argument(*flags, action="store_true", default=argparse.SUPPRESS, help=helptext)
            except argparse.ArgumentError:
                pass  # the sub-command defines it itself
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status (errors print one line, not a traceback)."""
    raw = sys.argv[1:] if argv is None else argv
    if "--quiet" in raw:
        # tqdm reads TQDM_DISABLE when first imported, so set it before any command module loads
        import os

        os.environ["TQDM_DISABLE"] = "1"
    parser = build_parser(only=_command_in(raw))
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:
        import os

        os.environ["TQDM_DISABLE"] = "1"
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import warnings

    from hedonic_neurons.notices import ResultWarning

    def _show(message, category, filename, lineno, file=None, line=None):
        # a result-changing fallback is one visible line, not a source excerpt
        if issubclass(category, ResultWarning):
            print(f"hedonic-neurons {args.command}: warning: {message}", file=sys.stderr)
        else:
            _default_show(message, category, filename, lineno, file, line)

    _default_show = warnings.showwarning
    warnings.showwarning = _show
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"hedonic-neurons {args.command}: interrupted: re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line (-v shows the traceback)
        if args.verbose:
            raise
        print(f"hedonic-neurons {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = _default_show


# errors whose message already names the problem and the fix (this project raises them so)
_OWN_ERRORS = (ValueError, FileNotFoundError, KeyError, RuntimeError, FloatingPointError, NotADirectoryError)


def error_line(exc: BaseException) -> str:
    """One line for the user: the project's own messages as they are, anything else with its type and a fix."""
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    msg = " ".join(str(msg).split())  # one line, whatever the library wrote
    if isinstance(exc, _OWN_ERRORS) and not type(exc).__module__.startswith(("safetensors", "zipfile")):
        return msg
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        return (f"{exc.strerror or type(exc).__name__}: {exc.filename}: check the path exists, is the kind of "
                "file or folder the option asks for, and is writable")
    return (f"{type(exc).__name__}: {msg or 'no message'} (unexpected: re-run with -v for the traceback and "
            "report it)")


if __name__ == "__main__":
    sys.exit(main())
