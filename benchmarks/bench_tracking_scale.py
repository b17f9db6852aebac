"""Tracking one MLP transition at a 7-8B model's width: what the chance test costs at paper scale.

The real tracking path (``coalition_write``, ``mlp_transition``, ``track_layers``) on one transition of
LLaMA-3.1-8B's MLP shapes (d_model 4,096, d_ff 14,336) with random weights and activations and random
partitions into coalitions of 2-4 neurons (the cost depends on the shapes and the number of
coalitions, not on the values). Prints the wall time of the masses, of the events without the chance
test, and with ``--draws`` redraws of the next partition (per redraw too), and the peak resident memory.
Weights and activations are random, so the link rule gives hardly any event and a real run would skip
most redraws; they are timed here as if every source had an event (the worst case).

    python benchmarks/bench_tracking_scale.py [--d-model 4096] [--d-ff 14336] [--samples 256] [--draws 49]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d-model", type=int, default=4096, help="residual width (default: 4096)")
    ap.add_argument("--d-ff", type=int, default=14336, help="MLP width, the players (default: 14336)")
    ap.add_argument("--samples", type=int, default=256, help="activation samples (default: 256)")
    ap.add_argument("--draws", type=int, default=49, help="chance redraws timed (default: 49)")
    args = ap.parse_args()

    from hedonic_neurons.tracking.events import _chance_hits, _sizes
    from hedonic_neurons.tracking.mass import coalition_sizes, coalition_write, mlp_transition

    rng = np.random.default_rng(0)
    d, n = args.d_model, args.d_ff

    def partition() -> np.ndarray:
        sizes = rng.integers(2, 5, n // 2)
        sizes = sizes[np.cumsum(sizes) <= n]
        labels = np.full(n, -1)
        labels[: sizes.sum()] = np.repeat(np.arange(sizes.size), sizes)
        return rng.permutation(labels)

    lab1, lab2 = partition(), partition()
    W_down = rng.normal(size=(d, n)).astype(np.float32)
    acts = rng.normal(size=(args.samples, n)).astype(np.float32)
    W_up, W_gate = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    print(f"one transition: d_model {d}, d_ff {n}, {args.samples} samples; coalitions of 2-4: "
          f"{coalition_sizes(lab1).size} -> {coalition_sizes(lab2).size}")

    t0 = time.perf_counter()
    R = coalition_write(W_down, acts, lab1)
    mass = mlp_transition(R, W_up, W_gate, None, lab1, lab2, W_down=W_down, acts_abs_mean=np.abs(acts).mean(0))
    print(f"coalition writes + masses          {time.perf_counter() - t0:8.2f} s   peak {peak_gib():.1f} GiB")

    from hedonic_neurons.tracking.events import track_transition

    t0 = time.perf_counter()
    rows = track_transition(mass["M"], sizes=coalition_sizes(lab1), sizes_next=coalition_sizes(lab2),
                            forward=mass["forward"], backward=mass["backward"], backward_exact=False,
                            chance_draws=0)
    print(f"events, no chance test             {time.perf_counter() - t0:8.2f} s   "
          f"({sum(r['event'] != 'vanish' for r in rows)} of {len(rows)} sources with a link-rule event)")

    # the redraws as the chance test runs them, every source tested (the worst case: a real layer tests
    # only the sources the link rule gives an event, and skips the test when there is none)
    events = ["split"] * len(rows)
    scores = np.zeros(len(rows))
    for draws in (1, args.draws):
        t0 = time.perf_counter()
        _chance_hits(events, scores, mass["forward"], mass["backward_players"], lab2,
                     _sizes(coalition_sizes(lab1), len(rows), "sizes"), 0.7, 0.4, (2.0, 2.0), True, False, draws,
                     np.random.default_rng(0))
        dt = time.perf_counter() - t0
        print(f"chance test, {draws:3d} redraw(s)          {dt:8.2f} s   ({dt / draws:.2f} s per redraw; "
              f"peak {peak_gib():.1f} GiB)")


if __name__ == "__main__":
    main()
