"""`hedonic-neurons partition` and `hedonic-neurons planted`: the solver on a saved phi matrix."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _load_matrix(path: Path, key: str | None) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: pass a .safetensors or .npy file holding phi")
    if not path.is_file() or path.stat().st_size == 0:
        raise ValueError(f"{path} is {'empty' if path.is_file() else 'not a file'}: pass a .safetensors or .npy "
                         "file holding phi")
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{path} is not a readable .npy file (truncated or corrupt: {exc}); save phi again "
                             "with numpy.save") from exc
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable .safetensors file (truncated or corrupt: {exc}); save phi "
                             "again with safetensors.numpy.save_file") from exc
        if key is None:
            if len(tensors) != 1:
                raise ValueError(f"{path} holds {sorted(tensors)}: choose one with --key")
            key = next(iter(tensors))
        if key not in tensors:
            raise KeyError(f"{path} has no tensor {key!r}; it holds {sorted(tensors)}: choose one with --key")
        return tensors[key]
    raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .safetensors or .npy")


THRESHOLD_RULES = ("auto", "none", "quantile", "significance")


def parse_threshold(text: str | float | None) -> str | float:
    """--threshold: one of the named rules or a finite number (tau)."""
    if text is None:
        return "none"
    if text in THRESHOLD_RULES:
        return text
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value):
        raise ValueError(f"--threshold {text!r}: use one of {', '.join(THRESHOLD_RULES)} or a finite number (tau)")
    return value


def _partition(args: argparse.Namespace) -> int:
    from hedonic_neurons.parallel import map_jobs

    parse_threshold(args.threshold)  # a bad value fails before any matrix is read
    phis = [args.phi] if isinstance(args.phi, str) else list(args.phi)
    if len(phis) == 1:
        return _partition_one((args, phis[0], Path(args.out)))
    # several layers' matrices: independent given phi, so one worker process per file (--jobs)
    if args.se:
        raise ValueError("--se names one file: with several phi files keep the errors in each (--se-key)")
    out = Path(args.out if args.out != "partition.json" else "partitions")
    if out.suffix == ".json":
        raise ValueError(f"--out {out}: with several phi files give a directory (one JSON per file)")
    stems = [Path(p).stem for p in phis]
    if len(set(stems)) != len(stems):
        raise ValueError(f"phi files {phis} share a file name: their outputs would collide; rename them")
    map_jobs(_partition_one, [(args, p, out / f"{s}.json") for p, s in zip(phis, stems, strict=True)],
             jobs=args.jobs)
    return 0


def _solver_config(args: argparse.Namespace):
    from hedonic_neurons.configs import config_from_args
    from hedonic_neurons.partition import SolverConfig

    return config_from_args(SolverConfig(), args, args.solver_fields)


def _partition_one(job: tuple[argparse.Namespace, str, Path]) -> int:
    from hedonic_neurons.rundir import write_json

    args, phi_path, out = job
    phi = _load_matrix(Path(phi_path), args.key)
    se = _load_matrix(Path(args.se or phi_path), args.se_key) if (args.se or args.se_key) else None
    hp = _solver_config(args).to_estimator(progress=not args.quiet, random_state=args.seed)
    hp.fit(phi, se)
    write_json(out, {
        "labels": hp.labels_, "coalitions": [c.tolist() for c in hp.coalitions_],
        "n_coalitions": hp.n_coalitions_, "stability": hp.stability_,
        "stability_uniform": hp.stability_uniform_, "params": hp.params_, "trace": hp.trace_,
    })
    sizes = np.bincount(np.bincount(hp.labels_))
    print(f"{hp.n_coalitions_} coalitions of {phi.shape[0]} players "
          f"(sizes: {', '.join(f'{s}x{c}' for s, c in enumerate(sizes) if c)}); "
          f"{_stability_line(hp)}; written to {out}")
    return 0


def _stability_line(hp) -> str:
    st = hp.stability_
    movers = st.get("improving_players")
    movers = "" if movers is None else f"{movers} players with an improving move, "
    return (f"{movers}blocking rate {st['rate']:.4f} (upper {st['upper']:.4f}), "
            f"{st['share_within_max_size']:.0%} of players in coalitions of <= {st['max_size']}")


def _planted(args: argparse.Namespace) -> int:
    from sklearn.metrics import adjusted_rand_score

    from hedonic_neurons.game.planted import planted_game

    phi, truth = planted_game(args.n, k=args.k, noise=args.noise, random_state=args.seed)
    hp = _solver_config(args).to_estimator(progress=not args.quiet, random_state=args.seed).fit(phi)
    ari = adjusted_rand_score(truth, hp.labels_)
    print(f"planted game: n={args.n}, {len(np.unique(truth))} planted coalitions (sizes 2..{args.k + 1}), "
          f"noise sd {args.noise}")
    print(f"recovered {hp.n_coalitions_} coalitions in {hp.fit_seconds_:.1f} s ({hp.params_['solver']}, "
          f"{len(hp.trace_)} rounds/sweeps); "
          f"adjusted Rand index vs planted = {ari:.4f}")
    print(f"threshold: {hp.threshold_rule_}")
    print(f"stability: {hp.stability_['notion']}")
    print(f"measured: {_stability_line(hp)}")
    print(f"stability certificate (blocking): {hp.stability_['blocked']} of {hp.stability_['n_samples']} fresh "
          f"coalitions block (rate {hp.stability_['rate']:.4f}, upper bound {hp.stability_['upper']:.4f} "
          f"at delta={hp.delta}; certified eps={hp.epsilon}: {hp.stability_['certified']})")
    if args.out:
        from hedonic_neurons.rundir import write_json

        write_json(Path(args.out), {"labels": hp.labels_, "planted": truth, "ari": ari,
                                    "stability": hp.stability_, "params": hp.params_})
        print(f"written to {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from hedonic_neurons.configs import add_config_flags
    from hedonic_neurons.partition import SolverConfig

    p = sub.add_parser("partition", help="partition the players of a saved phi matrix (hedonic game)")
    p.add_argument("phi", nargs="+", help="phi as .safetensors (with --key) or .npy, n x n with zero diagonal; "
                   "several files (e.g. one per layer) are partitioned side by side (--jobs), one JSON each")
    p.add_argument("--jobs", type=int, default=1, help="worker processes for several phi files "
                   "(default: %(default)s)")
    p.add_argument("--key", help="tensor name inside the .safetensors file (default: its only tensor)")
    p.add_argument("--se", help="file with per-pair standard errors (default: the phi file, with --se-key)")
    p.add_argument("--se-key", help="tensor name of the standard errors (default: none, no standard errors)")
    p.add_argument("--out", default="partition.json",
                   help="output JSON (labels, coalitions, certificate); a directory for several phi files "
                   "(default: %(default)s, or partitions/ for several)")
    g = p.add_argument_group("solver (SolverConfig)")
    p.set_defaults(solver_fields=add_config_flags(g, SolverConfig(), exclude=["random_state"]))
    p.add_argument("--seed", type=int, default=0, help="solver seed (default: %(default)s)")
    p.set_defaults(func=_partition)

    q = sub.add_parser("planted", help="solve a planted game and print how well it was recovered")
    q.add_argument("--n", type=int, default=2000, help="players (default: %(default)s)")
    q.add_argument("--noise", type=float, default=0.2, help="standard deviation of the noise added to phi "
                   "(default: %(default)s)")
    # the same solver defaults as `partition` but m / omega, which only the MFC presets (topk, paper) use
    sizes = ("planted's own, measured: a 2,000-player game needs fewer samples than SolverConfig's 8e5 / 8e4 "
             "(the paper's, for 14,336 players): --preset topk recovers the same ARI 0.930 in 14 s instead of "
             "104 s")
    q.set_defaults(solver_fields=add_config_flags(q, SolverConfig(m=200_000, omega=20_000),
                                                  fields=["k", "preset", "sampler", "m", "omega"],
                                                  notes={"m": sizes, "omega": sizes}))
    q.add_argument("--seed", type=int, default=0, help="seed of the game and the solver (default: %(default)s)")
    q.add_argument("--out", help="optional JSON with labels, planted labels and the certificate (default: none)")
    q.set_defaults(func=_planted)
