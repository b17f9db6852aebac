"""`hedonic-neurons fetch {mnist,ir,all}`: put the embedded data sets under $HEDONIC_NEURONS_DATA."""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable
from pathlib import Path

from hedonic_neurons.data.mnist import data_root, fetch_mnist

log = logging.getLogger(__name__)


def _fetch_ir(data_dir: Path) -> Path:
    # The reranker engineer owns the IR data; import lazily so `fetch mnist` never depends on it.
    try:
        mod = importlib.import_module("hedonic_neurons.ir.data")
    except ImportError as exc:
        raise RuntimeError(f"the IR data fetcher is not available ({exc})") from exc
    return mod.fetch_ir(data_dir)


FETCHERS: dict[str, Callable[[Path], Path]] = {"mnist": fetch_mnist, "ir": _fetch_ir}


def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir) if args.data_dir else data_root()
    if data_dir.exists() and not data_dir.is_dir():
        raise ValueError(f"--data-dir {data_dir} is a file: give a folder (it is created when missing)")
    names = list(FETCHERS) if args.what == "all" else [args.what]
    for name in names:
        path = FETCHERS[name](data_dir)
        print(f"{name}: {path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("fetch", help="download the embedded data sets (MNIST digits, IR pool)")
    p.add_argument("what", choices=[*FETCHERS, "all"], help="which data set")
    p.add_argument("--data-dir", default=None, help="target folder (default: $HEDONIC_NEURONS_DATA or ./data)")
    p.set_defaults(func=run)
