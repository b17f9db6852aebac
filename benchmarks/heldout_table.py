"""Print the cross-fitted (held-out) comparison of a run directory, finished or not.

    python benchmarks/heldout_table.py runs/mnist            # MNIST: layers h2-h4 of the trained networks
    python benchmarks/heldout_table.py runs/minilm_cqtr      # reranker: every layer of the run

Per method: held-out Pair (mean and 95 % CI over the seeds present; a seed's value is the mean over the
two fitting halves of the mean over coalitions of size >= 2, each scored with the other half's PAS),
held-out Ratio, in-sample Pair (labelled), split-half ARI, % of players in coalitions of 2-10, then
whether the default hedonic method (Hedonic-PAS) is above every other method with CIs apart and its ARI
at least Leiden's. It reads only what the stages wrote (metrics/*.json or eval/*.json), so it can be run
on a partial run (it says which seeds and layers it found).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hedonic_neurons.metrics.stats import mean_ci95  # noqa: E402


def _mnist(root: Path, layers: list[str]) -> tuple[dict, list, list]:
    from hedonic_neurons.report.mnist_tables import METHOD_NAMES, METHODS, _per_seed, _per_seed_part

    rows, prows = [], []
    for p in sorted((root / "metrics").glob("*.json")):
        d = json.loads(p.read_text())
        if isinstance(d, dict):
            rows += d["coalitions"]
            prows += d["partitions"]
    rows = [r for r in rows if r["setting"] == "trained" and r["layer"] in layers]
    prows = [r for r in prows if r["setting"] == "trained" and r["layer"] in layers]
    per_seed = {m: {k: _per_seed(rows, k, m, layers) for k in ("pair", "ratio", "pair_in_sample")} for m in METHODS}
    for m in METHODS:
        per_seed[m].update({k: _per_seed_part(prows, k, m, layers) for k in ("ari", "coverage")})
    found = sorted({(r["seed"], r["layer"]) for r in prows})
    return {METHOD_NAMES[m]: per_seed[m] for m in METHODS}, found, ["Hedonic-PAS", "Leiden (CPM)"]


def _reranker(root: Path, layers: list[str]) -> tuple[dict, list, list]:
    from hedonic_neurons.report.reranker_tables import METHOD_LABELS, METHODS

    by_seed: dict[int, list[dict]] = {}
    found = []
    for p in sorted((root / "eval").glob("*_s*.json")):
        e = json.loads(p.read_text())
        if layers and str(e["layer"]) not in layers:
            continue
        by_seed.setdefault(int(e["seed"]), []).append(e)
        found.append((int(e["seed"]), e["layer"]))
    per_seed: dict = {}
    for m in METHODS:
        d: dict[str, list[float]] = {}
        for key in ("pair", "ratio", "pair_in_sample", "ari", "coverage"):
            for _, evs in sorted(by_seed.items()):
                v = np.array([e["per_method"][m].get(key, np.nan) for e in evs], dtype=float)
                if np.isfinite(v).any():
                    d.setdefault(key, []).append(float(np.nanmean(v)))
            d.setdefault(key, [])
        per_seed[METHOD_LABELS[m]] = d
    return per_seed, sorted(found), ["Hedonic (PAS)", "Leiden (CPM)"]


def _ci(vals: list[float]) -> tuple[float, float, float]:
    if not vals:
        return float("nan"), float("nan"), float("nan")
    m, h = mean_ci95(vals)
    return m, m - h, m + h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--layers", default=None, help="comma list (default: h2,h3,h4 for MNIST, all for a reranker run)")
    args = ap.parse_args(argv)
    root = Path(args.run_dir)
    mnist = (root / "metrics").is_dir()
    layers = args.layers.split(",") if args.layers else (["h2", "h3", "h4"] if mnist else [])
    per_seed, found, (ref, leiden) = (_mnist if mnist else _reranker)(root, layers)
    seeds = sorted({s for s, _ in found})
    print(f"{root}: {'MNIST' if mnist else 'reranker'}, seeds {seeds}, layers "
          f"{sorted({str(la) for _, la in found})} (mean ± 95 % CI over seeds; held-out = fitted on one half, "
          "scored on the other, both directions averaged)\n")
    print("| method | held-out Pair [95 % CI] | held-out Ratio | in-sample Pair | split-half ARI | % in 2-10 |")
    print("|---|---|---|---|---|---|")
    stats = {}
    for name, d in per_seed.items():
        p, r, pin, a, c = (_ci(d[k]) for k in ("pair", "ratio", "pair_in_sample", "ari", "coverage"))
        stats[name] = (p, a, c)
        print(f"| {name} | {p[0]:.3g} [{p[1]:.3g}, {p[2]:.3g}] | {r[0]:.3g} ± {r[2] - r[0]:.2g} | {pin[0]:.3g} | "
              f"{a[0]:.3f} ± {a[2] - a[0]:.3f} | {100 * c[0]:.1f} |")
    p0, a0, c0 = stats[ref]
    others = {k: v for k, v in stats.items() if k != ref and np.isfinite(v[0][0])}
    best = max(others, key=lambda k: others[k][0][0])
    apart = p0[1] > max(v[0][2] for v in others.values())
    print()
    if len(seeds) < 2:  # one seed has no 95 % CI: the means alone decide nothing
        gap = others[best][0][0] - p0[0]
        means = ("above every other method" if gap < 0 else
                 f"below {best} by {gap:.3g} ({p0[0] / others[best][0][0]:.2f} of it)")
        print(f"{ref} held-out Pair against every other method: undecided (fewer than 2 seeds: no 95 % CI); "
              f"on the means it is {means}.")
    elif p0[0] > others[best][0][0]:
        print(f"{ref} held-out Pair is above every other method"
              + (" with the 95 % CIs apart." if apart else f" on the means only (CI overlaps {best})."))
    else:
        gap = others[best][0][0] - p0[0]
        print(f"{ref} held-out Pair is NOT above every method: {best} is higher by {gap:.3g} "
              f"({p0[0] / others[best][0][0]:.2f} of it).")
    print(f"Split-half ARI: {ref} {a0[0]:.3f} vs {leiden} {stats[leiden][1][0]:.3f}: "
          + ("at least Leiden's." if a0[0] >= stats[leiden][1][0] else "below Leiden's."))
    print(f"{ref}: {100 * c0[0]:.1f} % of players in coalitions of 2-10.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
