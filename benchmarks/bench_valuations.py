"""Speed and memory of the valuations at LLaMA-8B shapes (n = 14,336 channels, d = 4,096, N = 4,096 inputs).

Each stage runs in its own subprocess, so its peak resident memory (ru_maxrss, inputs included) is its
own; each prints its GFLOP/s next to a plain float32 matrix product of the same size timed in the same
process. Targets (2 cores): OCA <= 60 s, Hessian PAS <= 180 s, peak <= 8 GB; exact PAS at the SmolLM2
shape (n = 1536, d = 576, N = 512) well under a minute.

    python benchmarks/bench_valuations.py                    # full shapes (a few minutes)
    python benchmarks/bench_valuations.py --n 2048 --d 512 --N 512   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB


def _baseline(torch, m: int, k: int, n: int) -> float:
    """GFLOP/s of one float32 (m x k) @ (k x n) product (best of 2)."""
    a = torch.randn(m, k)
    b = torch.randn(k, n)
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        c = a @ b
        best = min(best, time.perf_counter() - t)
        del c
    return 2.0 * m * k * n / best / 1e9


def _pas_inputs(rng, n: int, d: int, N: int):
    """Synthetic write directions C (d, n), residuals H (N, d), ablation coefficients and an RMSNorm tail."""
    f32 = np.float32
    C = (rng.standard_normal((d, n), dtype=f32) / np.sqrt(n)).astype(f32)
    H = rng.standard_normal((N, d), dtype=f32)
    coef = (0.1 * rng.standard_normal((N, n), dtype=f32)).astype(f32)
    return C, H, coef, _tail(rng, d)


def _tail(rng, d):
    from hedonic_neurons.valuations.tail import NormTail

    return NormTail("rms", head_w=rng.normal(size=d), weight=1 + 0.1 * rng.normal(size=d), eps=1e-5)


def stage(name: str, n: int, d: int, N: int, dtype: str) -> dict:
    """Run one stage in this process and return its figures."""
    import torch

    from hedonic_neurons.valuations import exact_pas, hessian_pas, oca

    rng = np.random.default_rng(0)
    f32 = np.float32
    res: dict = {"stage": name, "n": n, "d": d, "N": N, "dtype": dtype, "threads": torch.get_num_threads()}
    if name == "oca":
        W = (rng.standard_normal((d, n), dtype=f32) / np.sqrt(d)).astype(f32)
        # correlated activations: a low-rank signal plus noise
        acts = rng.standard_normal((N, 64), dtype=f32) @ rng.standard_normal((64, n), dtype=f32)
        acts += rng.standard_normal((N, n), dtype=f32)
        t = time.perf_counter()
        phi = oca(acts, W, dtype=dtype)
        res["seconds"] = time.perf_counter() - t
        # upper-triangle tiles of 2048 (oca's default): each tile is two products, over N and over d
        sizes = [min(2048, n - i0) for i0 in range(0, n, 2048)]
        pairs = sum(a * b for k, a in enumerate(sizes) for b in sizes[k:])
        res["gflop"] = 2.0 * pairs * (N + d) / 1e9
        res["baseline_gflops"] = _baseline(torch, n, N, n)
        res["check"] = float(np.abs(phi).max())
    elif name == "hessian":
        C, H, coef, tail = _pas_inputs(rng, n, d, N)
        t = time.perf_counter()
        phi = hessian_pas(H, coef, C, tail, dtype=dtype, progress=False)
        res["seconds"] = time.perf_counter() - t
        # H@C, v^T beta, upper-triangle tiles of the Gram and weighted-coef products
        res["gflop"] = (2.0 * N * d * n + 2.0 * n * n * N + n * n * d + n * n * N) / 1e9
        res["baseline_gflops"] = _baseline(torch, n, N, n)
        res["check"] = float(np.abs(phi).max())
    elif name == "exact":
        C, H, coef, tail = _pas_inputs(rng, n, d, N)
        t = time.perf_counter()
        r = exact_pas(H, coef, C, tail, dtype=dtype, progress=False)
        res["seconds"] = time.perf_counter() - t
        res["gflop"] = float("nan")  # elementwise work, not matrix products
        res["pair_samples_per_s"] = n * (n - 1) / 2 * N / res["seconds"]
        res["baseline_gflops"] = float("nan")
        res["check"] = float(np.abs(r.phi).max())
    elif name == "agree":
        from hedonic_neurons.valuations import agreement

        # Hessian vs exact PAS on the same synthetic layer, with each ablation ~10% and ~1% of |h|
        C = (rng.standard_normal((d, n), dtype=f32) / np.sqrt(n)).astype(f32)
        H = rng.standard_normal((N, d), dtype=f32)
        z = rng.standard_normal((N, n), dtype=f32)
        tail = _tail(rng, d)
        t = time.perf_counter()
        for scale in (0.1, 0.01):
            coef = (z * np.sqrt(n) * scale).astype(f32)
            ex = exact_pas(H, coef, C, tail, dtype=dtype, progress=False).phi
            hs = hessian_pas(H, coef, C, tail, dtype=dtype, progress=False)
            res[f"agree_{scale}"] = agreement(hs, ex)
        res["seconds"] = time.perf_counter() - t
        res["gflop"] = float("nan")
        res["baseline_gflops"] = float("nan")
        res["check"] = float(np.abs(ex).max())
    else:
        raise ValueError(f"unknown stage {name!r}: use oca, hessian, exact or agree")
    res["gflops"] = res["gflop"] / res["seconds"]
    res["peak_gb"] = _peak_gb()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=14336, help="players (MLP channels)")
    ap.add_argument("--d", type=int, default=4096, help="residual width")
    ap.add_argument("--N", type=int, default=4096, help="inputs")
    ap.add_argument("--exact-n", type=int, default=1536)
    ap.add_argument("--exact-d", type=int, default=576)
    ap.add_argument("--exact-N", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--stages", default="oca,hessian,exact,exact64,agree")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)

    if args.stage:  # child
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(stage(args.stage, args.n, args.d, args.N, args.dtype)))
        return 0

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TQDM_DISABLE="1")
    rows = []
    load0 = os.getloadavg()[0]
    for st in args.stages.split(","):
        if st in ("exact", "exact64", "agree"):
            shape = ["--n", str(args.exact_n), "--d", str(args.exact_d), "--N", str(args.exact_N)]
            dt = "float64" if st in ("exact64", "agree") else args.dtype
            name = "agree" if st == "agree" else "exact"
        else:
            shape = ["--n", str(args.n), "--d", str(args.d), "--N", str(args.N)]
            dt, name = args.dtype, st
        cmd = [sys.executable, __file__, "--stage", name, "--threads", str(args.threads), "--dtype", dt,
               *shape]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            raise RuntimeError(f"stage {st} failed (exit {out.returncode})")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  done {st}: {row['seconds']:.1f} s", file=sys.stderr, flush=True)

    targets = {"oca": 60.0, "hessian": 180.0, "exact": 60.0, "agree": float("nan")}
    print(f"\n{os.cpu_count()} CPUs, {args.threads} torch threads per stage; 1-min load average "
          f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end (other processes share the cores)")
    print("\n| stage | n | d | N | dtype | seconds | target s | GFLOP/s | matmul GFLOP/s | ratio | peak GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["gflops"] / r["baseline_gflops"]

        def f(x, fmt):
            return "-" if x != x else format(x, fmt)

        print(f"| {r['stage']} | {r['n']} | {r['d']} | {r['N']} | {r['dtype']} | {r['seconds']:.1f} | "
              f"{f(targets[r['stage']], '.0f')} | {f(r['gflops'], '.0f')} | {f(r['baseline_gflops'], '.0f')} | "
              f"{f(ratio, '.2f')} | {r['peak_gb']:.2f} |")
    for r in rows:
        if r["stage"] == "exact":
            # exact PAS is O(N n^2) elementwise: extrapolate to the big shape
            scale = (args.n / r["n"]) ** 2 * (args.N / r["N"])
            print(f"exact PAS {r['dtype']}: {r['pair_samples_per_s'] / 1e6:.0f} M pair-samples/s; "
                  f"at n={args.n}, N={args.N} that extrapolates to ~{r['seconds'] * scale / 60:.0f} min")
    for r in rows:
        if r["stage"] == "agree":
            for scale in (0.1, 0.01):
                a = r[f"agree_{scale}"]
                print(f"Hessian vs exact PAS (synthetic, n={r['n']}, N={r['N']}, |delta_i| ~ {scale:g} |h|, "
                      f"{a['n_pairs']} pairs): Pearson {a['pearson']:.3f}, Spearman {a['spearman']:.3f}, "
                      f"top-{a['top_k']} overlap {a['topk_overlap']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
