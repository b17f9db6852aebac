"""GPU check: SmolLM2 valuations and a small reranker run on CUDA, and a paper-shaped timing.

    python benchmarks/gpu_check.py [--part all|smollm2|reranker|paper] [--n 512] [--paper-N 1024]

1. ``smollm2``: SmolLM2-135M + random LoRA (r 8 on the MLP of layers 7-14, ||dW|| = 5 % of ||W||), layer 10,
   N real query-passage inputs: load, forward to the layer on ``cuda`` (float32: float16 rounding would
   swamp the synergy), then OCA, exact PAS (+ se) and Hessian PAS in float64 as on CPU
   (valuations_from_cache), timed per stage;
   and the Hessian PAS closed form and OCA again with their products on the GPU (``device="cuda"``),
   checked against the CPU results.
2. ``reranker``: a small `hedonic-neurons reranker` run with ``--device cuda`` (SmolLM2, CQTR, LoRA layers
   7-8, 1 seed), its per-stage seconds read from the run directory's timings table.
3. ``paper``: a LLaMA-8B-shaped layer with random weights (n = 14,336 channels, d = 4,096, rank-8 LoRA on
   gate/up/down, RMSNorm + linear head): OCA (float32 from float32 activations), Hessian PAS (float64),
   both on one GPU, then the solver (numpy, on the host: the game code is CPU by design) on that phi.

On a machine without CUDA it prints that it needs a GPU and exits 0. Figures are printed (and written
with --out), never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEV = "cuda"  # --device cpu runs the same code small on CPU, to check the script itself


def _sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def _device_name() -> str:
    return torch.cuda.get_device_name() if DEV == "cuda" else "cpu"


def _empty() -> None:
    if DEV == "cuda":
        torch.cuda.empty_cache()


def _peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEV == "cuda" else float("nan")


def _t(fn, *a, **kw):
    _sync()
    t = time.perf_counter()
    out = fn(*a, **kw)
    _sync()
    return out, time.perf_counter() - t


def part_smollm2(args, res: dict) -> None:
    from peft import get_peft_model

    from hedonic_neurons.ir.embedded import query_passage_pairs
    from hedonic_neurons.models import layer_cache, load_smollm2, lora_config, text_batches
    from hedonic_neurons.models.valuate import valuations_from_cache
    from hedonic_neurons.valuations.accumulate import relative_error
    from hedonic_neurons.valuations.oca import oca
    from hedonic_neurons.valuations.pas import hessian_pas

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_smollm2_valuations import _random_lora

    T: dict[str, float] = {}
    torch.manual_seed(0)
    t = time.perf_counter()
    model, tok = load_smollm2(dtype=torch.float32, target="head", allow_new_head=True)
    model = get_peft_model(model, lora_config(model, range(7, 15), r=8, alpha=16, train_head=False))
    _random_lora(model, 0.05, seed=0)
    model = model.to(DEV).eval()
    _sync()
    T[f"load + LoRA + to {DEV}"] = time.perf_counter() - t
    texts = query_passage_pairs(args.n, seed=0).texts()[: args.n]
    batches = text_batches(tok, texts, batch_size=32, max_length=192)
    cache, T[f"forward to layer 10 ({DEV}, float32)"] = _t(layer_cache, model, batches, 10, device=DEV,
                                                            progress=False)
    v = valuations_from_cache(cache, ("oca", "pas", "hessian"), pas_dtype=np.float64, progress=False)
    T["OCA (host CPU, valuations_from_cache)"] = v.timings["oca"]
    T["exact PAS, all pairs (host CPU, float64)"] = v.timings["pas_exact"]
    T["Hessian PAS (host CPU, float64)"] = v.timings["pas_hessian"]
    kw = cache.math_kwargs()
    hg, T[f"Hessian PAS (products on {DEV}, float64)"] = _t(hessian_pas, **kw, dtype=np.float64, progress=False,
                                                         device=DEV)
    og, T[f"OCA (products on {DEV})"] = _t(oca, cache.acts, cache.W_down, device=DEV)
    check = {"hessian gpu vs cpu": relative_error(hg, v.phi_hessian), "oca gpu vs cpu": relative_error(og, v.phi_oca),
             "agreement pearson": v.agreement["pearson"]}
    print(f"\n== SmolLM2-135M + random LoRA, layer 10, n = {cache.n_players}, N = {cache.n_samples} on "
          f"{_device_name()} ==\n| stage | seconds |\n|---|---:|")
    for k, s in T.items():
        print(f"| {k} | {s:.2f} |")
    print("checks: " + ", ".join(f"{k} {val:.2e}" for k, val in check.items()))
    res["smollm2"] = {"timings_s": T, "checks": check, "n": cache.n_players, "N": cache.n_samples}
    del model, cache
    _empty()


def part_reranker(args, res: dict) -> None:
    out = Path(tempfile.mkdtemp(prefix="gpu_check_reranker_"))
    cmd = [sys.executable, "-m", "hedonic_neurons.cli", "reranker", "--model", "smollm2", "--task", "cqtr",
           "--layers", "7-8", "--device", DEV, "--seeds", "1", "--n-train", str(args.rr_train), "--n-probe",
           str(args.rr_probe), "--n-ood", str(args.rr_ood), "--n-ood-drop", str(min(args.rr_ood, 64)),
           "--no-report", "--out", str(out)]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    print(f"\n== reranker on {DEV}: {' '.join(cmd[2:])} ==\nexit {p.returncode}, wall {wall:.1f} s")
    if p.returncode != 0:
        print((p.stdout + p.stderr)[-3000:])
        res["reranker"] = {"exit": p.returncode, "wall_s": wall}
        return
    rows = []
    csv = out / "tables" / "timings.csv"
    if csv.is_file():
        import csv as _csv

        rows = list(_csv.DictReader(csv.open()))
        print("| stage | seconds |\n|---|---:|")
        for r in rows:
            print(f"| {r['stage']} | {float(r['seconds']):.1f} |")
    res["reranker"] = {"exit": 0, "wall_s": wall, "stages": rows, "run_dir": str(out)}


def part_paper(args, res: dict) -> None:
    """A LLaMA-8B-shaped MLP layer with random weights; the statistics the valuations use, on one GPU."""
    from hedonic_neurons import HedonicPartition
    from hedonic_neurons.valuations.oca import oca
    from hedonic_neurons.valuations.pas import hessian_pas
    from hedonic_neurons.valuations.tail import NormTail

    n, d, N, r = args.paper_n, args.paper_d, args.paper_N, 8
    g = torch.Generator(device=DEV).manual_seed(0)
    T: dict[str, float] = {}

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, device=DEV, dtype=torch.float32) * scale

    t = time.perf_counter()
    Wg, Wu, Wd = rnd(n, d, scale=d ** -0.5), rnd(n, d, scale=d ** -0.5), rnd(d, n, scale=n ** -0.5)
    lora = {k: (rnd(r, d if k != "down" else n, scale=0.02), rnd(d if k == "down" else n, r, scale=0.02))
            for k in ("gate", "up", "down")}
    dWg, dWu, dWd = ((B @ A) for A, B in (lora["gate"], lora["up"], lora["down"]))
    X = rnd(N, d)  # the MLP input (post-norm) at the readout position
    H = rnd(N, d) + rnd(d)  # the residual after the layer
    silu = torch.nn.functional.silu
    acts = silu(X @ (Wg + dWg).T) * (X @ (Wu + dWu).T)  # adapted g, float32 (float16 rounding would swamp the synergy)
    base = silu(X @ Wg.T) * (X @ Wu.T)
    _sync()
    T[f"build layer + activations ({DEV}, float32)"] = time.perf_counter() - t
    tail = NormTail("rms", head_w=np.random.default_rng(0).normal(size=d) / np.sqrt(d),
                    weight=1 + 0.1 * np.random.default_rng(1).normal(size=d), eps=1e-5)
    acts_np = acts.cpu().numpy()
    phi_oca, T[f"OCA ({DEV}, float32)"] = _t(oca, acts_np, (Wd + dWd).cpu().numpy(), device=DEV)
    kw = dict(H=H.double().cpu().numpy(), coef=(acts - base).double().cpu().numpy(),
              C=(Wd + dWd).double().cpu().numpy(), tail=tail, C_base=dWd.double().cpu().numpy(),
              coef_base=(-base).double().cpu().numpy())
    del X, acts, base
    _empty()
    phi_h, T[f"Hessian PAS ({DEV}, float64)"] = _t(hessian_pas, **kw, dtype=np.float64, progress=False, device=DEV)
    del kw
    print(f"\n== paper-shaped layer: n = {n}, d = {d}, N = {N}, rank-{r} LoRA, random weights ==")
    off = ~np.eye(n, dtype=bool)
    print(f"|phi_oca| mean {np.abs(phi_oca[off]).mean():.3e}; |Hessian PAS| mean {np.abs(phi_h[off]).mean():.3e}; "
          f"peak GPU memory {_peak_gib():.1f} GiB")
    for name, phi in (("Hessian PAS", phi_h), ("OCA", phi_oca)):
        t = time.perf_counter()
        hp = HedonicPartition(m=args.solver_m, omega=args.solver_omega, random_state=0).fit(
            np.asarray(phi, dtype=np.float64))
        T[f"solver on {name} (numpy, host CPU; m={args.solver_m}, omega={args.solver_omega})"] = (
            time.perf_counter() - t)
        print(f"solver on {name}: {np.unique(hp.labels_).size} coalitions")
    print("| stage | seconds |\n|---|---:|")
    for k, s in T.items():
        print(f"| {k} | {s:.2f} |")
    res["paper"] = {"n": n, "d": d, "N": N, "timings_s": T,
                    "peak_gpu_gib": _peak_gib(),
                    "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", default="all", choices=["all", "smollm2", "reranker", "paper"])
    ap.add_argument("--n", type=int, default=512, help="SmolLM2 inputs")
    ap.add_argument("--paper-N", type=int, default=1024, help="inputs of the paper-shaped layer")
    ap.add_argument("--paper-n", type=int, default=14_336, help="channels of the paper-shaped layer")
    ap.add_argument("--paper-d", type=int, default=4_096, help="residual width of the paper-shaped layer")
    ap.add_argument("--device", default="cuda", help="cuda (the check); cpu only to try the script small")
    ap.add_argument("--solver-m", type=int, default=800_000)
    ap.add_argument("--solver-omega", type=int, default=80_000)
    ap.add_argument("--rr-train", type=int, default=512)
    ap.add_argument("--rr-probe", type=int, default=256)
    ap.add_argument("--rr-ood", type=int, default=256)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    global DEV
    DEV = args.device
    if DEV == "cuda" and not torch.cuda.is_available():
        print("gpu_check needs a CUDA GPU and torch sees none: nothing to check here (run it on a GPU machine)")
        return 0
    res: dict = {"device": _device_name(), "torch": torch.__version__}
    parts = ["smollm2", "reranker", "paper"] if args.part == "all" else [args.part]
    for p in parts:
        {"smollm2": part_smollm2, "reranker": part_reranker, "paper": part_paper}[p](args, res)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
