"""SmolLM2 one-layer valuations on 1 process vs 2 processes (torchrun, gloo), measured in the same run.

Runs the real CLI twice, one after the other, on the same inputs:

    hedonic-neurons valuations smollm2 --layer L --n N ...                              (1 process, 2 threads)
    torchrun --standalone --nproc-per-node 2 -m hedonic_neurons.cli valuations ...     (2 processes, 1 thread each)

and prints the wall time of each (process start, imports and GGUF loading included), the per-stage
seconds rank 0 recorded, and how far the 2-process valuations are from the 1-process ones. The model
runs in float32 (the CLI's default), so the forward pass of a shard differs from the full batch by
float32 rounding; the exact-merge claim (1e-12 in float64) is the test suite's
(tests/models/test_distributed.py), not this script's.

    python benchmarks/bench_distributed.py [--n 128] [--layer 10] [--max-length 128] [--out res.json]

Timings on a shared machine depend on the other jobs: the script prints the load average before and
after; compare the two runs as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str], env: dict) -> tuple[float, int, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t, p.returncode, (p.stdout + p.stderr)[-3000:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=128, help="embedded query-passage inputs")
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)

    import numpy as np

    from hedonic_neurons.models.valuate import Valuations
    from hedonic_neurons.valuations.accumulate import relative_error

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    common = ["valuations", "smollm2", "--layer", str(args.layer), "--n-inputs", str(args.n), "--max-length",
              str(args.max_length), "--batch-size", str(args.batch_size)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_distributed_"))
    load0 = os.getloadavg()
    runs = {}
    # 1 process, as many threads as processes in the other run: the same cores either way
    one_env = dict(env, OMP_NUM_THREADS=str(args.nproc))
    runs["1 process"] = _run([sys.executable, "-m", "hedonic_neurons.cli", "--quiet", *common, "--out",
                              str(tmp / "one")], one_env)
    multi_env = dict(env, OMP_NUM_THREADS="1")
    runs[f"{args.nproc} processes"] = _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}", "-m",
         "hedonic_neurons.cli", "--quiet", *common, "--out", str(tmp / "multi")], multi_env)
    load1 = os.getloadavg()
    for name, (_, rc, log) in runs.items():
        if rc != 0:
            print(f"{name} run failed (exit {rc}):\n{log}", file=sys.stderr)
            return 1
    one, multi = Valuations.load(tmp / "one"), Valuations.load(tmp / "multi")
    print(f"SmolLM2-135M (no LoRA: zero ablation), layer {args.layer}, n = {one.n_players} channels, "
          f"N = {one.n_samples} inputs, max_length {args.max_length}; shards {multi.meta.get('shard_sizes')}")
    print(f"load average (1/5/15 min) before {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}, after "
          f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} on {os.cpu_count()} cores (other jobs share them)")
    names = list(runs)
    print(f"\n| seconds | {names[0]} | {names[1]} (rank 0) |\n|---|---:|---:|")
    print(f"| wall (start, imports, load, all stages, write) | {runs[names[0]][0]:.1f} | {runs[names[1]][0]:.1f} |")
    for s in list(one.timings) + [s for s in multi.timings if s not in one.timings]:
        a, b = one.timings.get(s), multi.timings.get(s)
        print(f"| {s} | {'' if a is None else f'{a:.1f}'} | {'' if b is None else f'{b:.1f}'} |")
    print(f"\nspeed-up (wall, 1 process / {args.nproc}): {runs[names[0]][0] / runs[names[1]][0]:.2f}x")
    diffs = {k: relative_error(getattr(multi, k), getattr(one, k))
             for k in ("phi_oca", "phi_pas", "pas_se", "psi", "phi_hessian")}
    print("max |2-process - 1-process| / max |1-process| (float32 forward on different batches): "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    off = ~np.eye(one.n_players, dtype=bool)
    print(f"|PAS| max {np.abs(one.phi_pas[off]).max():.2e}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "n": one.n_players, "N": one.n_samples, "layer": args.layer, "nproc": args.nproc,
            "wall_s": {k: v[0] for k, v in runs.items()}, "timings_one": one.timings,
            "timings_multi_rank0": multi.timings, "rel_diff": diffs, "loadavg_before": load0,
            "loadavg_after": load1}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
