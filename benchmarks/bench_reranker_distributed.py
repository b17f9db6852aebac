"""The reranker's valuation stage on 1 process vs 2 processes (torchrun, gloo), measured in the same run.

Prepares one small MiniLM reranker run (data, fine-tuning and everything else on one process), copies it
twice with the valuation stage and the stages after it undone, and resumes each copy with the real CLI:

    hedonic-neurons reranker --model minilm ... --out A                                     (1 process)
    torchrun --standalone --nproc-per-node 2 -m hedonic_neurons.cli reranker ... --out B   (2 processes)

Both resume after fine-tuning (the resumable stages are skipped on every rank), redo the valuations
(rank 0 alone, or sharded over the ranks) and then partitions / evaluate / tables on rank 0. Prints the
wall time of each command, the `valuations:<layer>` stage seconds from each run's timings, and how far
the two runs' matrices are apart. The model runs in float32, so each rank's forward pass on its own
batches differs from one process's by float32 rounding; the exact-merge claim (1e-12, float64) is the
test suite's (tests/reranker/test_distributed_stage.py).

    python benchmarks/bench_reranker_distributed.py [--layer 2] [--n-probe 200] [--out res.json]

Timings on a shared machine depend on the other jobs: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LATER = ("valuations", "partitions", "evaluate", "tables")


def _run(cmd: list[str], env: dict) -> tuple[float, int, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t, p.returncode, (p.stdout + p.stderr)[-3000:]


def _undo_valuations(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for f in (dst / "stages").glob("*.done"):
        if f.stem.split(":")[0] in LATER:
            f.unlink()
    for d in ("matrices", "activations", "partitions", "eval", "verification"):
        shutil.rmtree(dst / d, ignore_errors=True)
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-probe", type=int, default=200)
    ap.add_argument("--n-ood", type=int, default=100)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)

    import numpy as np
    from safetensors.numpy import load_file

    from hedonic_neurons.valuations.accumulate import relative_error

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    common = ["reranker", "--model", args.model, "--task", "cqtr", "--layers", str(args.layer), "--seeds", "1",
              "--n-train", str(args.n_train), "--n-probe", str(args.n_probe), "--n-ood", str(args.n_ood),
              "--n-ood-drop", "20", "--n-largest", "1", "--n-random", "1", "--solver-m", "5000",
              "--solver-omega", "500", "--no-report"]
    cli = [sys.executable, "-m", "hedonic_neurons.cli", "--quiet"]
    tmp = Path(tempfile.mkdtemp(prefix="bench_reranker_distributed_"))
    prep = _run([*cli, *common, "--out", str(tmp / "prep")], dict(env, OMP_NUM_THREADS=str(args.nproc)))
    if prep[1] != 0:
        print(f"preparing the run failed (exit {prep[1]}):\n{prep[2]}", file=sys.stderr)
        return 1
    load0 = os.getloadavg()
    runs = {}
    # 1 process with as many threads as the other run has processes: the same cores either way
    one = _undo_valuations(tmp / "prep", tmp / "one")
    runs["1 process"] = (one, _run([*cli, *common, "--out", str(one)], dict(env, OMP_NUM_THREADS=str(args.nproc))))
    multi = _undo_valuations(tmp / "prep", tmp / "multi")
    runs[f"{args.nproc} processes"] = (multi, _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}", "-m",
         "hedonic_neurons.cli", "--quiet", *common, "--out", str(multi)], dict(env, OMP_NUM_THREADS="1")))
    load1 = os.getloadavg()
    for name, (_, (_, rc, log)) in runs.items():
        if rc != 0:
            print(f"{name} run failed (exit {rc}):\n{log}", file=sys.stderr)
            return 1
    stage = f"valuations:{args.layer}"
    res: dict = {"model": args.model, "layer": args.layer, "n_probe": args.n_probe, "n_ood": args.n_ood, "runs": {}}
    info = json.loads((one / "stages" / f"{stage}.done").read_text())
    print(f"reranker {args.model}, CQTR, layer {args.layer}: {info['n_players']} channels, probe halves "
          f"{info['halves']}, {args.n_ood} OOD pairs; PAS: {info['pas']}")
    print(f"load average (1/5/15 min) before {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}, after "
          f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} on {os.cpu_count()} cores (other jobs share them)")
    names = list(runs)
    print(f"\n| seconds | {names[0]} | {names[1]} (rank 0) |\n|---|---:|---:|")
    rows = {"wall: start, imports, load, resume, valuations, partitions, evaluate, tables": [
        runs[n][1][0] for n in names],
            f"stage {stage}": [json.loads((runs[n][0] / "timings.json").read_text())[stage] for n in names]}
    for k, (a, b) in rows.items():
        print(f"| {k} | {a:.1f} | {b:.1f} |")
        res["runs"][k] = {names[0]: a, names[1]: b}
    print(f"\nvaluation stage speed-up {rows[f'stage {stage}'][0] / rows[f'stage {stage}'][1]:.2f}x, wall "
          f"{rows[next(iter(rows))][0] / rows[next(iter(rows))][1]:.2f}x (measured under the load above)")
    ma = load_file(str(one / "matrices" / f"{args.layer}.safetensors"))
    mb = load_file(str(multi / "matrices" / f"{args.layer}.safetensors"))
    errs = {k: float(relative_error(mb[k], ma[k])) for k in sorted(ma) if ma[k].dtype.kind == "f"}
    same_idx = all(np.array_equal(ma[k], mb[k]) for k in ma if ma[k].dtype.kind == "i")
    print("max |2 processes - 1 process| / max |1 process| per matrix (float32 forward passes on different "
          "batches): " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) + f"; half indices identical: {same_idx}")
    res.update(relative_error=errs, load_before=load0, load_after=load1)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
