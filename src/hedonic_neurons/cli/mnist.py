"""`hedonic-neurons mnist`: the paper's MNIST experiment (appendix I) from the command line."""

from __future__ import annotations

import argparse
import logging
import os
import time

from hedonic_neurons.experiments.mnist import FinishFailed, MnistConfig, run_mnist
from hedonic_neurons.layers import check_layers, parse_layers
from hedonic_neurons.rundir import RunDir

# the network's hidden states h1..h5 are layers 1..5 on the command line (the run's files keep "h1".."h5")
MNIST_LAYERS = range(1, 6)
_WHAT = "the MNIST network's hidden states h1..h5"


def mnist_layers(spec: str, flag: str = "--layers") -> list[str]:
    """--layers in the common syntax ('1-5', '2,3', '3') -> the experiment's layer names ['h1', ...]."""
    try:
        parsed = parse_layers(spec)
    except ValueError:
        raise ValueError(f"{flag} {spec!r}: write the hidden states h1..h5 as layers 1-5, e.g. '1-5', '2,3' "
                         "or '3'") from None
    try:
        layers = check_layers(parsed or (), MNIST_LAYERS, _WHAT)
    except ValueError as exc:
        raise ValueError(str(exc).replace("--layers", flag)) from None
    if not layers:
        raise ValueError(f"{flag} {spec!r}: name at least one layer within 1-5 (h1..h5)")
    return [f"h{i}" for i in layers]


def control_layer(spec: str) -> str:
    """--control-layer: exactly one layer in the common syntax ('3') -> 'h3'."""
    layers = mnist_layers(spec, "--control-layer")
    if len(layers) != 1:
        raise ValueError(f"--control-layer {spec!r}: name one layer within 1-5 (e.g. 3 for h3)")
    return layers[0]


def run(args: argparse.Namespace) -> int:
    from hedonic_neurons.configs import config_from_args

    if getattr(args, "mnist_quiet", False):
        os.environ["TQDM_DISABLE"] = "1"
        logging.getLogger().setLevel(logging.WARNING)
    cfg = MnistConfig(seeds=list(range(args.seeds)), layers=mnist_layers(args.layers), data=args.data,
                      n_train=args.n_train, n_test=args.n_test, epochs=args.epochs,
                      solver=config_from_args(MnistConfig().solver, args, args.solver_fields),
                      controls=not args.no_controls, control_layer=control_layer(args.control_layer),
                      control_seeds=(list(range(min(args.control_seeds, args.seeds))) if args.control_seeds
                                     else None),
                      loss_delta_images=args.loss_delta_images, verify=not args.no_verify,
                      crossfit=not args.no_crossfit)
    from hedonic_neurons import notices

    t0 = time.time()
    failures: list[str] = []
    with notices.collect(args.out):  # fallbacks that changed a result go to warnings.txt and summary.md
        try:
            rd = run_mnist(cfg, args.out, threads=args.threads, force=args.force, report=True,
                             jobs=args.jobs)
        except FinishFailed as exc:  # tracking or the report: the results are on disk, the run is not finished
            failures.append(str(exc))
            rd = RunDir(args.out)
    report = rd.root / "report.html" if (rd.root / "report.html").is_file() else None
    print(f"MNIST run finished in {(time.time() - t0) / 60:.1f} min; summary: {rd.root / 'summary.md'}")
    print(f"report: {report if report is not None else rd.root / 'summary.md'}")
    if failures:  # the results are on disk, but the run is not finished: say so, and exit non-zero
        for f in failures:
            notices.record(rd.root, f)
        raise RuntimeError(f"{'; '.join(failures)}; the tables and summary.md are in {rd.root}: fix the cause and "
                           "re-run the same command (finished stages are skipped)")
    return 0


def register(subparsers) -> None:
    from hedonic_neurons.configs import add_config_flags

    d = MnistConfig()
    p = subparsers.add_parser("mnist", help="the paper's MNIST experiment (appendix I): 3 seeds, layers 1-5 "
                              "(h1..h5), 6 methods, negative controls, Tables 7-9")
    p.add_argument("--seeds", type=int, default=len(d.seeds),
                   help="number of seeds: networks trained with seeds 0..N-1 (default: %(default)s)")
    p.add_argument("--layers", default="1-5", help="hidden states to value and partition, as '1-5' (h1..h5), "
                   "'2,3' or '3' (default: %(default)s)")
    p.add_argument("--out", default="runs/mnist", help="run directory, resumed when it exists "
                   "(default: %(default)s)")
    p.add_argument("--data", default=None, help="an npz or a directory of IDX files (full MNIST, Fashion-MNIST) "
                   "(default: the fetched 10k digits)")
    p.add_argument("--n-train", type=int, default=None, help="use at most this many training images, for tests "
                   "(default: all)")
    p.add_argument("--n-test", type=int, default=None, help="use at most this many held-out images, for tests "
                   "(default: all)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs per network "
                   "(default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads; the results do not depend on it "
                   "(default: OMP_NUM_THREADS where it is set, else every core)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes for the partition and metric stages "
                   "of different layers; same results, docs/scale.md (default: %(default)s)")
    p.add_argument("--control-layer", default=d.control_layer.removeprefix("h"),
                   help="the one layer of the negative controls and digit grids, e.g. 3 for h3 "
                   "(default: %(default)s)")
    p.add_argument("--control-seeds", type=int, default=1,
                   help="negative-control networks (random init, label-shuffled) for seeds 0..N-1; 0 = one per "
                   "seed; docs/mnist.md says why one (default: %(default)s)")
    p.add_argument("--loss-delta-images", type=int, default=d.loss_delta_images,
                   help="held-out images for the per-neuron loss deltas, appendix I.3 (default: %(default)s)")
    p.add_argument("--no-controls", action="store_true", help="skip the random-init and label-shuffled controls")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the self-verification of each valuation against the model's own modules")
    p.add_argument("--no-crossfit", action="store_true", help="fit and score on all held-out digits (in-sample "
                   "scores); default: fit on one half, score on the other")
    p.add_argument("--quiet", dest="mnist_quiet", action="store_true", help="no progress bars or log lines")
    p.add_argument("--force", action="store_true", help="recompute every stage of an existing --out (default: "
                   "reuse the stages whose config fields and inputs are unchanged)")
    g = p.add_argument_group("solver (SolverConfig; the same defaults as `partition` except where noted)")
    sizes = "appendix I.4's MNIST setting (SolverConfig's 8e5 / 8e4 are the paper's for 14,336 players)"
    p.set_defaults(func=run, solver_fields=add_config_flags(g, d.solver, exclude=["random_state"],
                                                            notes={"m": sizes, "omega": sizes}))
