"""Solvers on real valuations, scored on held-out inputs: which default wins.

    python benchmarks/bench_real_phi.py --cache runs/bench_real_phi            # MNIST h2-h4 (+ MiniLM)
    python benchmarks/bench_real_phi.py --cache runs/bench_real_phi --part mnist

MNIST: the project's gated MLP (seed 0, `experiments.mnist` defaults) is trained once; the 2,000
held-out digits are split into two disjoint halves of 1,000 and exact PAS of each residual layer
h2-h4 (256 players) is computed on each half. MiniLM: the untuned all-MiniLM-L6-v2 (new head, seed 0)
on query-passage pairs of the embedded IR pool, two disjoint halves of inputs, MLP site (1,536
players), layers 1-4; its tail (post-LN + pooler + head) has no closed form, so phi is the Hessian
PAS of each half (the reranker experiment's choice), fitted and scored alike. Everything is cached
as safetensors under --cache, so reruns only re-solve.

Per layer and method, cross-fitted: fit on half A and score on half B, fit on B and score on A,
average the two directions. Columns: held-out Pair (mean psi(i,j) over a coalition's pairs,
averaged over coalitions of size >= 2) with the 95 % CI half-width over coalitions, held-out Ratio
(sum of pair terms / sum of singles; MNIST only, averaged over coalitions), split-half ARI of the two
partitions, % of players in coalitions of 2..max_size, largest coalition, number of coalitions,
and fit seconds. Baselines matched to the reference (--reference, the default solver) use the
activations of the fit half.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from hedonic_neurons import HedonicPartition
from hedonic_neurons.baselines import LeidenPartition, matched_baselines

MAX_SIZE = 10


# ---------------------------------------------------------------------------------------------------
# real phi halves
# ---------------------------------------------------------------------------------------------------


def _save(path: Path, arrays: dict) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path.with_suffix(".tmp")))
    path.with_suffix(".tmp").replace(path)


def _load(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def mnist_halves(cache: Path, layers: list[str], epochs: int) -> dict[str, dict]:
    """{layer: {phi_A, se_A, psi_A, acts_A, phi_B, ...}} for the seed-0 MNIST network."""
    out = {}
    todo = [layer for layer in layers if not (cache / f"mnist_{layer}.safetensors").exists()]
    if todo:
        import torch

        from hedonic_neurons.experiments.mnist import MnistConfig, load_data
        from hedonic_neurons.models.extract import layer_cache
        from hedonic_neurons.models.gated_mlp import GatedMLPClassifier, build_classifier, train_classifier
        from hedonic_neurons.models.valuate import valuations_from_cache

        cfg = MnistConfig(seeds=[0], epochs=epochs)
        data = load_data(cfg)
        mpath = cache / f"mnist_seed0_e{epochs}.safetensors"
        if mpath.exists():
            model = GatedMLPClassifier.load(mpath)
        else:
            t0 = time.perf_counter()
            model = build_classifier(0, d_model=cfg.d_model, d_ff=cfg.d_ff)
            train_classifier(model, data.X_train, data.y_train, epochs=epochs, lr=cfg.lr, seed=0, progress=False)
            mpath.parent.mkdir(parents=True, exist_ok=True)
            model.save(mpath, metadata={"seed": 0})
            print(f"trained the MNIST gated MLP (seed 0, {epochs} epochs) in {time.perf_counter() - t0:.0f} s")
        model.eval()
        torch.set_grad_enabled(False)
        n = data.X_test.shape[0]
        perm = np.random.default_rng(0).permutation(n)
        halves = {"A": np.sort(perm[: n // 2]), "B": np.sort(perm[n // 2:])}
        for layer in todo:
            t0 = time.perf_counter()
            arrays = {}
            for h, idx in halves.items():
                # the residual site of the gated MLP, zero ablation: the MNIST experiment's own valuation path
                c = layer_cache(model, [(data.X_test[idx], data.y_test[idx])], int(layer[1:]), site="residual",
                                ablation="zero", dtype=torch.float64, progress=False)
                v = valuations_from_cache(c, ("pas",), progress=False)
                arrays |= {f"phi_{h}": v.phi_pas, f"se_{h}": v.pas_se, f"psi_{h}": v.psi, f"acts_{h}": c.H.T.copy()}
            _save(cache / f"mnist_{layer}.safetensors", arrays)
            print(f"MNIST {layer}: exact PAS of two halves of {n // 2} digits in {time.perf_counter() - t0:.1f} s")
    for layer in layers:
        out[layer] = _load(cache / f"mnist_{layer}.safetensors")
    return out


def minilm_halves(cache: Path, layers: list[int], n_pairs: int) -> dict[str, dict]:
    """{layer: {phi_A, acts_A, phi_B, acts_B}}: Hessian PAS of the untuned MiniLM on two halves of pairs."""
    out = {}
    todo = [layer for layer in layers if not (cache / f"minilm_{layer}.safetensors").exists()]
    if todo:
        import torch

        from hedonic_neurons.ir.embedded import query_passage_pairs
        from hedonic_neurons.models.extract import layer_cache, text_batches
        from hedonic_neurons.models.loading import load_minilm
        from hedonic_neurons.valuations.pas import hessian_pas

        model, tok = load_minilm(1, seed=0, target="head", allow_new_head=True)
        model.eval()
        pairs = query_passage_pairs(n_pairs, "train", seed=0, per_query=10)
        texts = pairs.texts()
        n = len(texts)
        perm = np.random.default_rng(0).permutation(n)
        halves = {"A": np.sort(perm[: n // 2]), "B": np.sort(perm[n // 2:])}
        for layer in todo:
            t0 = time.perf_counter()
            arrays = {}
            for h, idx in halves.items():
                cache_l = layer_cache(model, text_batches(tok, [texts[i] for i in idx], batch_size=16, max_length=128),
                                      layer, progress=False)
                kw = cache_l.math_kwargs()
                with torch.enable_grad():
                    phi = hessian_pas(kw["H"], kw["coef"], kw["C"], cache_l.tail.logit_torch, None,
                                      C_base=kw.get("C_base"), coef_base=kw.get("coef_base"), progress=False)
                phi = np.asarray(phi, dtype=np.float64)
                np.fill_diagonal(phi, 0.0)
                arrays |= {f"phi_{h}": phi, f"acts_{h}": np.asarray(cache_l.acts, dtype=np.float64).T.copy()}
            _save(cache / f"minilm_{layer}.safetensors", arrays)
            print(f"MiniLM layer {layer}: Hessian PAS of two halves of {n // 2} pairs in "
                  f"{time.perf_counter() - t0:.0f} s")
    for layer in layers:
        out[layer] = _load(cache / f"minilm_{layer}.safetensors")
    return out


# ---------------------------------------------------------------------------------------------------
# methods and scores
# ---------------------------------------------------------------------------------------------------


def hedonic(**kw):
    def fit(phi, se, acts, seed):
        return HedonicPartition(max_size=MAX_SIZE, random_state=seed, **kw).fit(phi, se).labels_
    return fit


def leiden(**kw):
    def fit(phi, se, acts, seed):
        return LeidenPartition(max_size=MAX_SIZE, random_state=seed, **kw).fit(phi).labels_
    return fit


def leiden_start(**kw):
    def fit(phi, se, acts, seed):
        start = LeidenPartition(max_size=MAX_SIZE, random_state=seed).fit(phi).labels_
        return HedonicPartition(max_size=MAX_SIZE, random_state=seed, init=start, **kw).fit(phi, se).labels_
    return fit


def methods(m: int, omega: int) -> dict:
    return {
        "default": hedonic(),  # two tiers since the solver2 change, priority order since solver3
        "fractional q90, one tier (preset fractional, the previous default)": hedonic(preset="fractional"),
        "topk (MFC top-k, PAC-Top-Cover)": hedonic(preset="topk", m=m, omega=omega),
        "paper literal (mean, no tau, uniform D)": hedonic(preset="paper", m=m, omega=omega),
        "leiden (CPM q90, <= 10)": leiden(),
        "fractional q90, one run (n_init=1)": hedonic(utility="fractional", n_init=1),
        "fractional q80": hedonic(utility="fractional", tau_quantile=0.8),
        "modified fractional (average) q90": hedonic(utility="average"),
        "modified fractional (average) q85": hedonic(utility="average", tau_quantile=0.85),
        "additive q90 (CPM potential)": hedonic(utility="additive"),
        "fractional q90 from Leiden's partition": leiden_start(utility="fractional"),
    }


def pair_ratio(labels: np.ndarray, phi: np.ndarray, psi: np.ndarray | None) -> tuple[list, list]:
    pairs, ratios = [], []
    for c in np.unique(labels):
        mem = np.flatnonzero(labels == c)
        if mem.size < 2:
            continue
        sub = phi[np.ix_(mem, mem)]
        tot = float(sub.sum() - np.trace(sub))
        pairs.append(tot / (mem.size * (mem.size - 1)))
        if psi is not None:
            den = float(psi[mem].sum())
            ratios.append(tot / den if den != 0 else np.nan)
    return pairs, ratios


def shape(labels: np.ndarray) -> tuple[float, int, int]:
    sizes = np.bincount(labels)
    sizes = sizes[sizes > 0]
    mid = sizes[(sizes >= 2) & (sizes <= MAX_SIZE)].sum() / labels.size
    return 100 * mid, int(sizes.max()), int(sizes.size)


def evaluate(title: str, halves: dict, meths: dict, reference: str, seeds: list[int], baselines: bool) -> None:
    print(f"\n== {title}: cross-fitted (fit on one half, score on the other, both directions averaged), "
          f"seeds {seeds} ==")
    head = (f"{'layer':6s} {'method':42s} {'Pair held-out':>22s} {'Ratio':>7s} {'ARI A/B':>7s} {'% in 2-10':>9s} "
            f"{'largest':>7s} {'coal.':>5s} {'sec':>6s}")
    print(head)
    for layer, d in halves.items():
        phi = {h: np.asarray(d[f"phi_{h}"], dtype=np.float64) for h in "AB"}
        se = {h: (np.asarray(d[f"se_{h}"], dtype=np.float64) if f"se_{h}" in d else None) for h in "AB"}
        psi = {h: (np.asarray(d[f"psi_{h}"], dtype=np.float64) if f"psi_{h}" in d else None) for h in "AB"}
        acts = {h: d[f"acts_{h}"] for h in "AB"}
        fits: dict[str, dict] = {}
        secs: dict[str, float] = {}
        for name, fn in meths.items():
            t0 = time.perf_counter()
            fits[name] = {(h, s): np.asarray(fn(phi[h], se[h], acts[h], s)) for h in "AB" for s in seeds}
            secs[name] = (time.perf_counter() - t0) / (2 * len(seeds))
            print(f"  ({layer}: {name} fitted, {secs[name]:.1f} s per fit)", file=sys.stderr, flush=True)
        if baselines:
            for bname in ("random", "kmeans", "ward"):
                fits[f"{bname} (matched to default)"] = {}
                secs[f"{bname} (matched to default)"] = float("nan")
            for (h, s), ref in fits[reference].items():
                # a different seed per half, so the random control's split-half ARI is not an artefact
                for bname, lab in matched_baselines(acts[h], ref, random_state=2 * s + (h == "B")).items():
                    fits[f"{bname} (matched to default)"][(h, s)] = lab
        for name, f in fits.items():
            pairs, ratios, aris, shapes = [], [], [], []
            for s in seeds:
                for h, o in (("A", "B"), ("B", "A")):
                    p, r = pair_ratio(f[(h, s)], phi[o], psi[o])
                    pairs += p
                    ratios += r
                    shapes.append(shape(f[(h, s)]))
                aris.append(adjusted_rand_score(f[("A", s)], f[("B", s)]))
            p = np.asarray(pairs)
            ci = 1.96 * p.std(ddof=1) / np.sqrt(p.size) if p.size > 1 else float("nan")
            pm = float(p.mean()) if p.size else float("nan")
            rm = float(np.nanmean(ratios)) if ratios else float("nan")
            sh = np.mean(shapes, axis=0)
            print(f"{layer:6s} {name:42s} {pm:+10.2e} +- {ci:8.1e} {rm:7.3f} {np.mean(aris):7.3f} {sh[0]:8.1f}% "
                  f"{sh[1]:7.0f} {sh[2]:5.0f} {secs[name]:6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path("runs/bench_real_phi"))
    ap.add_argument("--part", choices=["mnist", "minilm", "all"], default="all")
    ap.add_argument("--seeds", type=int, default=1, help="solver seeds per half")
    ap.add_argument("--epochs", type=int, default=20, help="MNIST training epochs (the experiment's default)")
    ap.add_argument("--minilm-layers", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--minilm-pairs", type=int, default=80, help="query-passage pairs, split in two halves")
    ap.add_argument("--m", type=int, default=80_000, help="PAC-Top-Cover reservoir (MNIST appendix)")
    ap.add_argument("--omega", type=int, default=8_000)
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--skip", nargs="*", default=[], help="skip methods whose name contains any of these words")
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    seeds = list(range(args.seeds))
    meths = {k: v for k, v in methods(args.m, args.omega).items()
             if k == "default" or not any(w in k for w in args.skip)}
    if args.part in ("mnist", "all"):
        halves = mnist_halves(args.cache, ["h2", "h3", "h4"], args.epochs)
        evaluate("MNIST gated MLP seed 0, exact PAS, residual h2-h4 (256 players), halves of 1,000 digits",
                 halves, meths, "default", seeds, not args.no_baselines)
    if args.part in ("minilm", "all"):
        halves = minilm_halves(args.cache, args.minilm_layers, args.minilm_pairs)
        evaluate(f"MiniLM untuned, Hessian PAS, MLP layers {args.minilm_layers} (1,536 players), halves of "
                 f"{args.minilm_pairs // 2} pairs", {str(k): v for k, v in halves.items()}, meths, "default", seeds,
                 not args.no_baselines)


if __name__ == "__main__":
    main()
