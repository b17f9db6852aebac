"""Solver benchmarks: planted recovery (ARI) and paper-scale speed/memory.

    python benchmarks/bench_solver.py                  # both parts
    python benchmarks/bench_solver.py --part recovery  # n = 2000 planted games
    python benchmarks/bench_solver.py --part speed     # n = 14,336 (LLaMA-8B MLP size), the default solver
    python benchmarks/bench_solver.py --part speed --preset topk   # PAC-Top-Cover, m = 8e5, omega = 8e4

Figures are printed, never asserted; the speed part also times a plain float32 n x n pass over phi
(a row-wise argmax) in the same process as a yardstick for this machine.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

from hedonic_neurons import HedonicPartition, planted_game


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def recovery(n: int, seeds: list[int], m: int, omega: int, only: list[str] | None = None) -> None:
    print(f"\n== planted recovery: n={n}, groups 2..4 (k=3), in-group phi 1, m={m}, omega={omega} ==")
    settings = [
        ("default: fractional, tiers q97 / q84 (tier 1 >= k partners), priority order", dict()),
        ("priority order, tiers q90 / q86 (the default before q97 / q84)",
         dict(tau_quantile=0.9, absorb_quantile=0.86)),
        ("random-order: tiers q90 / q86, 8 random orders", dict(preset="random-order")),
        ("fractional, one tier, random orders", dict(preset="fractional")),
        ("additive, auto tau, best response", dict(utility="additive")),
        ("topk: MFC sum, significance tau, partners", dict(preset="topk")),
        ("sum, auto tau, weighted (Phi-proportional)", dict(preset="topk", sampler="weighted")),
        ("sum, auto tau, uniform (paper's D)", dict(preset="topk", sampler="uniform")),
        ("paper literal: mean, no tau, uniform", dict(utility="mean", threshold=None, sampler="uniform")),
        ("paper literal: sum, tau=0, uniform", dict(utility="sum", threshold=0.0, sampler="uniform")),
        ("mean, no tau, partners", dict(utility="mean", threshold=None)),
        ("sum, tau=0, partners", dict(utility="sum", threshold=0.0)),
    ]
    if only:
        settings = [(name, kw) for name, kw in settings if any(name.startswith(o) for o in only)]
    print(f"{'setting':76s} {'noise':>5s} {'ARI mean':>8s} {'min':>6s} {'coal.':>6s} {'true':>5s} "
          f"{'tau':>6s} {'block':>6s} {'sec':>5s}")
    for noise in (0.1, 0.2):
        games = [planted_game(n, noise=noise, random_state=s) for s in seeds]
        for name, kw in settings:
            aris, ncs, secs, taus, blocks = [], [], [], [], []
            for (phi, truth), s in zip(games, seeds, strict=True):
                t0 = time.perf_counter()
                hp = HedonicPartition(m=m, omega=omega, random_state=s, **kw).fit(phi)
                secs.append(time.perf_counter() - t0)
                aris.append(adjusted_rand_score(truth, hp.labels_))
                ncs.append(hp.n_coalitions_)
                taus.append(hp.threshold_)
                blocks.append(hp.stability_["rate"])
            print(f"{name:76s} {noise:5.1f} {np.mean(aris):8.4f} {np.min(aris):6.3f} {np.mean(ncs):6.0f} "
                  f"{len(np.unique(games[0][1])):5d} {np.mean(taus):6.3f} {np.mean(blocks):6.4f} "
                  f"{np.mean(secs):5.1f}")


def speed(n: int, m: int, omega: int, preset: str | None) -> None:
    what = f"preset={preset}, m={m:.0e}, omega={omega:.0e}" if preset else "the default (best response)"
    print(f"\n== speed: n={n} players, sizes <= 10, {what} ==")
    t0 = time.perf_counter()
    phi, truth = planted_game(n, noise=0.2, random_state=0, dtype=np.float32)
    print(f"planted phi (float32, {phi.nbytes / 1e9:.2f} GB) built in {time.perf_counter() - t0:.1f} s; "
          f"peak RSS so far {peak_rss_gb():.2f} GB")
    t0 = time.perf_counter()
    for start in range(0, n, 1024):
        phi[start : start + 1024].argmax(axis=1)
    base = time.perf_counter() - t0
    print(f"yardstick: one row-wise argmax pass over phi: {base:.2f} s")
    hp = HedonicPartition(preset=preset, m=m, omega=omega, random_state=0)
    t0 = time.perf_counter()
    hp.fit(phi)
    wall = time.perf_counter() - t0
    print(f"partition: {wall:.1f} s wall ({wall / base:.0f}x the yardstick), {hp.n_coalitions_} coalitions, "
          f"{len(hp.trace_)} rounds/sweeps, ARI vs planted {adjusted_rand_score(truth, hp.labels_):.4f}")
    print(f"stability: {hp.stability_['improving_players']} players with an improving move; "
          f"blocking rate {hp.stability_['rate']:.4f} (upper {hp.stability_['upper']:.4f} at "
          f"delta={hp.delta}, {hp.stability_['n_samples']} fresh samples; uniform D: "
          f"{hp.stability_uniform_['rate']:.4f})")
    print(f"peak RSS of the process (phi included): {peak_rss_gb():.2f} GB")
    print(f"targets: <= 120 s wall, <= 4 GB peak -> {'MET' if wall <= 120 and peak_rss_gb() <= 4 else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["recovery", "speed", "all"], default="all")
    ap.add_argument("--n-recovery", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-speed", type=int, default=14_336)
    ap.add_argument("--m", type=int, default=800_000)
    ap.add_argument("--omega", type=int, default=80_000)
    ap.add_argument("--preset", default=None, choices=["topk", "paper", "fractional", "random-order"],
                    help="speed part: time a preset instead")
    ap.add_argument("--only", nargs="*", default=None, help="recovery part: settings whose name starts with these")
    args = ap.parse_args()
    if args.part in ("recovery", "all"):
        recovery(args.n_recovery, list(range(1, args.seeds + 1)), m=200_000, omega=20_000, only=args.only)
    if args.part in ("speed", "all"):
        speed(args.n_speed, args.m, args.omega, args.preset)


if __name__ == "__main__":
    main()
