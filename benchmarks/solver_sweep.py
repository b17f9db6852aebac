"""Solver settings side by side on the saved per-half phi of a finished run, cross-fitted.

    python benchmarks/solver_sweep.py runs/mnist                 # MNIST: networks seeds x layers h2-h4
    python benchmarks/solver_sweep.py runs/minilm_cqtr           # reranker: solver seeds 0-2 x its layers
    python benchmarks/solver_sweep.py runs/mnist --only default leiden "previous default"

No experiment is re-run: the run's `matrices/*.safetensors` hold the exact PAS of each half of the
valuation inputs (MNIST `phi_pas_*` or, in older runs, `pas_*`, and `pas_se_*`; reranker `phi_pas_*`,
`pas_se_*`). Every setting is fitted on each half (with the random state the experiment gives that half:
`crossfit.half_seed`) and scored on the other, exactly as the experiments' Tables do: held-out Pair =
mean over coalitions of size >= 2 of the other half's mean PAS over the coalition's pairs; one value per
seed (MNIST: network seed; reranker: solver seed) = the mean over the two fitting halves of the mean
over the coalitions of every layer; mean and 95 % t interval over the seeds. ARI = split-half agreement
of the two partitions (mean over seeds and layers), coverage = share of players in coalitions of 2-10.
Leiden is fitted as the experiment fits it (MNIST until convergence, reranker leidenalg's 2 iterations).
The matched baselines (random, k-means, Ward) need activations of both halves and are left to the
experiments' own tables.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hedonic_neurons import HedonicPartition  # noqa: E402
from hedonic_neurons.baselines import LeidenPartition  # noqa: E402
from hedonic_neurons.metrics.crossfit import half_seed  # noqa: E402
from hedonic_neurons.metrics.stats import mean_ci95  # noqa: E402

MAX_SIZE = 10


def hed(**kw):
    """fit(phi, se, seed) -> labels of HedonicPartition(**kw) (the default where kw is empty)."""
    return lambda phi, se, s: HedonicPartition(max_size=MAX_SIZE, random_state=s, **kw).fit(phi, se).labels_


def settings(kind: str) -> dict:
    """name -> fit(phi, se, seed) -> labels. The first is the default, Leiden the reference to beat."""
    def lei(phi, se, s):
        it = -1 if kind == "mnist" else 2  # as each experiment fits it
        return LeidenPartition(max_size=MAX_SIZE, n_iterations=it, random_state=s).fit(phi).labels_

    return {
        "default (fractional, priority order, tiers q97 / q84, tier 1 >= k partners)": hed(),
        "leiden (CPM q90, <= 10)": lei,
        "priority order, q90, tier 2 q86 (the default before the q97 / q84 change)":
            hed(tau_quantile=0.9, absorb_quantile=0.86),
        "previous default (q90, 8 random orders, tier 2 q86)": hed(preset="random-order"),
        "one tier, q90, 8 random orders (preset fractional)": hed(preset="fractional"),
        "priority order, q97, tier 2 q84": hed(tau_quantile=0.97, absorb_quantile=0.84),
        "priority order, q97, one tier": hed(tau_quantile=0.97, absorb_quantile=None),
        "priority order, q97, tier 2 q86": hed(tau_quantile=0.97, absorb_quantile=0.86),
        "priority order, q97, tier 2 q80": hed(tau_quantile=0.97, absorb_quantile=0.80),
        "priority order, q97, tier 2 q70": hed(tau_quantile=0.97, absorb_quantile=0.70),
        "priority order, q95, tier 2 q84": hed(tau_quantile=0.95, absorb_quantile=0.84),
        "priority order, q90, one tier": hed(tau_quantile=0.9, absorb_quantile=None),
        "priority order, q90, tier 2 q85": hed(tau_quantile=0.9, absorb_quantile=0.85),
        "priority order, q90, tier 2 q84": hed(tau_quantile=0.9, absorb_quantile=0.84),
        "priority order, q90, tier 2 q83": hed(tau_quantile=0.9, absorb_quantile=0.83),
        "priority order, q90, tier 2 q80": hed(tau_quantile=0.9, absorb_quantile=0.80),
        "priority order, q90, tier 2 q70": hed(tau_quantile=0.9, absorb_quantile=0.70),
        "priority order, q90, tier 2 q60": hed(tau_quantile=0.9, absorb_quantile=0.60),
        "8 random orders, tier 2 q60": hed(preset="random-order", absorb_quantile=0.60),
        # the rows of the solver2 comparison (random orders, the default then), still printed
        "8 random orders, one tier q88": hed(preset="fractional", tau_quantile=0.88),
        "8 random orders, one tier q85": hed(preset="fractional", tau_quantile=0.85),
        "8 random orders, tier 2 q87": hed(preset="random-order", absorb_quantile=0.87),
        "8 random orders, tier 2 q85": hed(preset="random-order", absorb_quantile=0.85),
        "8 random orders, average q90, tier 2 q87": hed(preset="random-order", utility="average", absorb_quantile=0.87),
        "8 random orders, average q89, one tier": hed(preset="fractional", utility="average", tau_quantile=0.89),
    }


def load(run: Path) -> tuple[str, list[int], dict]:
    """(kind, seeds, {(seed, layer): (phi_a, phi_b, se_a, se_b)})."""
    from safetensors.numpy import load_file

    cfg = json.loads((run / "config.json").read_text())
    out = {}
    if "task" in cfg:  # reranker: one network, solver seeds
        seeds = list(range(int(cfg.get("seeds", 3))))
        for p in sorted((run / "matrices").glob("*.safetensors")):
            d = load_file(str(p))
            if "phi_pas_b" not in d:
                continue
            for s in seeds:
                out[(s, p.stem)] = (d["phi_pas_a"], d["phi_pas_b"], d.get("pas_se_a"), d.get("pas_se_b"))
        return "reranker", seeds, out
    seeds = list(cfg.get("seeds", [0, 1, 2]))
    for s in seeds:
        for layer in ("h2", "h3", "h4"):
            p = run / "matrices" / f"seed{s}_{layer}.safetensors"
            if p.exists():
                d = load_file(str(p))
                key = "pas" if "pas_a" in d else "phi_pas"  # older runs: pas_a; current: phi_pas_a
                out[(s, layer)] = (d[f"{key}_a"], d[f"{key}_b"], d["pas_se_a"], d["pas_se_b"])
    return "mnist", seeds, out


def pair_values(labels: np.ndarray, phi: np.ndarray) -> list[float]:
    vals = []
    for c in np.unique(labels):
        mem = np.flatnonzero(labels == c)
        if mem.size >= 2:
            sub = phi[np.ix_(mem, mem)]
            vals.append(float(sub.sum() - np.trace(sub)) / (mem.size * (mem.size - 1)))
    return vals


def coverage(labels: np.ndarray) -> float:
    sizes = np.bincount(labels)
    return float(sizes[(sizes >= 2) & (sizes <= MAX_SIZE)].sum()) / labels.size


def cached(fit, name: str, cache: Path | None):
    """fit, with labels kept in `cache`/<name>.npz (Leiden only: minutes per fit on 1,536 players)."""
    if cache is None or not name.startswith("leiden"):
        return lambda phi, se, seed, key: fit(phi, se, seed)
    path = cache / (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") + ".npz")
    store = dict(np.load(path)) if path.exists() else {}

    def run(phi, se, seed, key):
        if key not in store:
            store[key] = np.asarray(fit(phi, se, seed))
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(path, **store)
        return store[key]
    return run


def evaluate(fit, data: dict, seeds: list[int]) -> dict:
    """`fit(phi, se, seed, key)` -> labels; key names (seed, layer, half) for the cache."""
    per_seed, aris, covs, largest, per_layer = [], [], [], [], {}
    t0 = time.perf_counter()
    for s in seeds:
        halves = {"a": [], "b": []}
        for (s2, layer), (pa, pb, sa, sb) in data.items():
            if s2 != s:
                continue
            phi = {"a": np.asarray(pa, np.float64), "b": np.asarray(pb, np.float64)}
            se = {"a": None if sa is None else np.asarray(sa, np.float64),
                  "b": None if sb is None else np.asarray(sb, np.float64)}
            lab = {h: np.asarray(fit(phi[h], se[h], half_seed(s, h), f"s{s}_{layer}_{h}")) for h in "ab"}
            for h, o in (("a", "b"), ("b", "a")):
                v = pair_values(lab[h], phi[o])
                halves[h] += v
                per_layer.setdefault(layer, []).extend(v)
                covs.append(coverage(lab[h]))
                largest.append(int(np.bincount(lab[h]).max()))
            aris.append(adjusted_rand_score(lab["a"], lab["b"]))
        per_seed.append(float(np.mean([np.mean(v) for v in halves.values() if v])))
    return {"pair": per_seed, "ari": float(np.mean(aris)), "coverage": 100 * float(np.mean(covs)),
            "largest": float(np.mean(largest)), "per_layer": {k: float(np.mean(v)) for k, v in per_layer.items()},
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--only", nargs="*", default=None, help="settings whose name starts with one of these")
    ap.add_argument("--seeds", type=int, default=None, help="only the first N seeds (default: the run's)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep Leiden's labels here (npz per setting) and reuse them on the next call")
    ap.add_argument("--layers", nargs="*", default=None, help="only these layers (default: all found)")
    ap.add_argument("--grid", action="store_true",
                    help="the default, Leiden and a grid of tier costs (tier 1 q90-q97 x tier 2 q82-q86)")
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    kind, seeds, data = load(args.run)
    if args.seeds:
        seeds = seeds[: args.seeds]
        data = {k: v for k, v in data.items() if k[0] in seeds}
    if args.layers:
        data = {k: v for k, v in data.items() if k[1] in args.layers}
    seeds = [s for s in seeds if any(k[0] == s for k in data)]  # a run still going: the seeds it has
    if not data:
        raise SystemExit(f"{args.run}: no per-half PAS matrices found (a cross-fitted run is needed)")
    layers = sorted({layer for _, layer in data})
    print(f"{args.run} ({kind}): seeds {seeds}, layers {layers}; held-out Pair = mean [95 % CI] over seeds, "
          "fitted on one half and scored on the other, both directions averaged")
    meths = settings(kind)
    if args.grid:  # the tier-cost grid the q97 / q84 default was chosen from (docs/solver.md)
        base = {k: v for k, v in meths.items() if k.startswith(("default", "leiden"))}
        grid = {f"grid: tier 1 q{round(100 * t1)}, tier 2 q{round(100 * t2)}": hed(tau_quantile=t1, absorb_quantile=t2)
                for t1 in (0.90, 0.92, 0.94, 0.95, 0.97) for t2 in (0.82, 0.84, 0.85, 0.86)}
        meths = {**base, **grid}
    if args.only:
        meths = {k: v for k, v in meths.items() if any(k.startswith(o) for o in args.only)}
    print("\n| setting | held-out Pair [95 % CI] | per seed | per layer | split-half ARI | % in 2-10 | largest |")
    print("|---|---|---|---|---|---|---|")
    res = {}
    for name, fit in meths.items():
        r = res[name] = evaluate(cached(fit, name, args.cache), data, seeds)
        m, h = mean_ci95(r["pair"])
        print(f"| {name} | {m:.3e} [{m - h:.3e}, {m + h:.3e}] | {' '.join(f'{x:.2e}' for x in r['pair'])} | "
              f"{' '.join(f'{k} {v:.2e}' for k, v in sorted(r['per_layer'].items()))} | {r['ari']:.3f} | "
              f"{r['coverage']:.1f} | {r['largest']:.1f} |", flush=True)
        print(f"  ({name}: {r['seconds']:.0f} s)", file=sys.stderr, flush=True)
    ref = next((k for k in res if k.startswith("leiden")), None)
    d = next((k for k in res if k.startswith("default")), None)
    if ref and d:
        (md, hd), (ml, hl) = mean_ci95(res[d]["pair"]), mean_ci95(res[ref]["pair"])
        seeds_above = sum(a > b for a, b in zip(res[d]["pair"], res[ref]["pair"], strict=True))
        ci = "one seed: no CI" if len(seeds) < 2 else "CIs apart" if md - hd > ml + hl else "CIs overlap"
        diff = np.subtract(res[d]["pair"], res[ref]["pair"])
        mdiff, hdiff = mean_ci95(list(diff))
        print(f"\ndefault vs Leiden: Pair {md:.3e} vs {ml:.3e} ({ci}; "
              f"above on {seeds_above}/{len(seeds)} seeds; paired difference {mdiff:+.2e} [{mdiff - hdiff:+.2e}, "
              f"{mdiff + hdiff:+.2e}] = {100 * mdiff / ml:+.1f} %); ARI {res[d]['ari']:.3f} vs {res[ref]['ari']:.3f}; "
              f"coverage {res[d]['coverage']:.1f} % vs {res[ref]['coverage']:.1f} %")


if __name__ == "__main__":
    main()
