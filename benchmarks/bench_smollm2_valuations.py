"""SmolLM2-135M + LoRA: OCA, exact PAS for every pair and Hessian PAS of one layer (1536 channels).

The target: 512 query-passage inputs, all of it in <= 10 minutes on 2 CPU cores. Prints the time
of each stage, the Hessian-vs-exact agreement, and a spot check of exact PAS against direct ablation
through the tail for a few pairs.

    python benchmarks/bench_smollm2_valuations.py [--adapter DIR] [--layer 10] [--n 512] [--out res.json]

Without --adapter, LoRA (rank 8, alpha 16) is put on the MLP of layers 7-14 with RANDOM non-zero lora_B,
scaled so that ||Delta W||_F = 5 % of ||W||_F per module (a fine-tuned adapter's order of magnitude):
the timing does not depend on the values, the agreement figures do (say which adapter was used).
Inputs: `hedonic_neurons.ir.embedded.query_passage_pairs(n, seed=0)` (real MS MARCO dev queries x
Wikipedia passages; run `hedonic-neurons fetch ir` first).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _random_lora(model, rel: float, seed: int) -> None:
    """Random non-zero lora_B, rescaled per module so that ||Delta W|| = rel * ||W||."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in model.named_modules():
            if hasattr(m, "lora_B") and hasattr(m, "base_layer"):
                B = m.lora_B["default"].weight
                B.copy_(torch.randn(B.shape, generator=gen))
                dW = m.get_delta_weight("default")
                B.mul_(rel * m.base_layer.weight.norm() / dW.norm())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adapter", help="a fine-tuned PEFT adapter directory (default: random LoRA, layers 7-14)")
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--n", type=int, default=512, help="number of query-passage inputs")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--pas-dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--lora-rel", type=float, default=0.05, help="random LoRA: ||dW|| / ||W|| per module")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # PEFT draws lora_A from the global RNG: fix it so runs are comparable

    from peft import get_peft_model

    from hedonic_neurons.ir.embedded import query_passage_pairs
    from hedonic_neurons.models import layer_cache, load_model, load_smollm2, lora_config, text_batches
    from hedonic_neurons.models.valuate import valuations_from_cache

    T: dict[str, float] = {}
    t0 = time.perf_counter()
    t = time.perf_counter()
    if args.adapter:
        model, tok = load_model(args.adapter, target="head", allow_new_head=True)
        adapter_desc = f"fine-tuned adapter {args.adapter}"
    else:
        model, tok = load_smollm2(target="head", allow_new_head=True)
        model = get_peft_model(model, lora_config(model, range(7, 15), r=8, alpha=16, train_head=False))
        _random_lora(model, args.lora_rel, seed=0)
        adapter_desc = (f"RANDOM LoRA r=8 on the MLP of layers 7-14, ||dW|| = {args.lora_rel:.0%} of ||W|| "
                        "(no fine-tuned adapter given)")
    model.eval()
    T["load model + LoRA"] = time.perf_counter() - t

    t = time.perf_counter()
    pairs = query_passage_pairs(args.n, seed=0)
    texts = pairs.texts()[: args.n]
    batches = text_batches(tok, texts, batch_size=args.batch_size, max_length=args.max_length)
    n_tok = int(sum(int(b["attention_mask"].sum()) for b in batches))
    T["inputs + tokenise"] = time.perf_counter() - t

    t = time.perf_counter()
    cache = layer_cache(model, batches, args.layer)
    T[f"forward to layer {args.layer} (stopped there)"] = time.perf_counter() - t

    v = valuations_from_cache(cache, ("oca", "pas", "hessian"), pas_dtype=np.dtype(args.pas_dtype))
    T["OCA"] = v.timings["oca"]
    T["exact PAS, all pairs"] = v.timings["pas_exact"]
    T["Hessian PAS"] = v.timings["pas_hessian"]
    T["agreement"] = v.timings.get("agreement", 0.0)
    valuation_s = sum(s for k, s in T.items() if k not in ("load model + LoRA", "inputs + tokenise"))
    # self-verification, as compute_valuations / the CLI run it: a few psi(i), psi(i, j) by direct ablation
    # through a float64 copy of the real layer and the model's readout, in the same process under the same load
    from hedonic_neurons.models.verify import format_verification, verify_valuations

    t = time.perf_counter()
    ver = verify_valuations(model, batches, v, raise_on_fail=False)
    T["self-verification"] = time.perf_counter() - t
    del model
    total = time.perf_counter() - t0

    # spot check: exact PAS vs direct ablation through the tail, float64, for a few pairs
    rng = np.random.default_rng(0)
    n = cache.n_players
    H64 = cache.H.astype(np.float64)
    worst = 0.0
    from hedonic_neurons.models.extract import LayerCache

    c64 = LayerCache(**{**cache.__dict__, "H": H64, "coef": cache.coef.astype(np.float64),
                        "C": cache.C.astype(np.float64),
                        "C_base": None if cache.C_base is None else cache.C_base.astype(np.float64),
                        "coef_base": None if cache.coef_base is None else cache.coef_base.astype(np.float64)})
    l0 = c64.local_logit()
    for _ in range(5):
        i, j = rng.choice(n, 2, replace=False)
        direct = np.mean(l0 - c64.local_logit([i]) - c64.local_logit([j]) + c64.local_logit([i, j]))
        worst = max(worst, abs(direct - v.phi_pas[i, j]) / max(abs(direct), 1e-30))

    off = ~np.eye(n, dtype=bool)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nSmolLM2-135M, {adapter_desc}")
    print(f"layer {args.layer}: n = {n} channels, N = {cache.n_samples} query-passage inputs "
          f"({n_tok} tokens, max_length {args.max_length}), ablation = {cache.ablation}, "
          f"threads = {torch.get_num_threads()}, PAS in {args.pas_dtype}")
    print("\n| stage | seconds |\n|---|---:|")
    for k, s in T.items():
        print(f"| {k} | {s:.1f} |")
    print(f"| **total** | **{total:.1f}** (target <= 600) |")
    print(f"\npeak RSS {rss_gb:.2f} GB")
    print(f"exact PAS: |phi| mean {np.abs(v.phi_pas[off]).mean():.3e}, max {np.abs(v.phi_pas[off]).max():.3e}; "
          f"median se {np.median(v.pas_se[off]):.3e}; share of pairs with |phi| > 2 se: "
          f"{np.mean(np.abs(v.phi_pas[off]) > 2 * v.pas_se[off]):.3f}; local logit mean {l0.mean():.4f}")
    print(f"psi (single ablations): |psi| mean {np.abs(v.psi).mean():.3e}")
    print(f"spot check, exact PAS vs direct tail ablation (5 pairs, float64): max rel diff {worst:.2e}")
    ratio = T["self-verification"] / valuation_s
    print(f"self-verification {T['self-verification']:.1f} s = {100 * ratio:.1f} % of the valuation time "
          f"({valuation_s:.1f} s: forward to the layer + OCA + exact PAS + Hessian + agreement; target <= 10 %; "
          f"same process, same load, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(format_verification(ver))
    a = v.agreement
    print(f"Hessian vs exact PAS over {a['n_pairs']} pairs: Pearson {a['pearson']:.3f}, Spearman "
          f"{a['spearman']:.3f}, top-{a['top_k']} overlap {a['topk_overlap']:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"adapter": adapter_desc, "layer": args.layer, "n": n, "N": cache.n_samples,
                       "tokens": n_tok, "timings_s": T, "total_s": total, "peak_rss_gb": rss_gb,
                       "agreement": a, "spot_check_max_rel_diff": worst, "pas_dtype": args.pas_dtype,
                       "valuation_s": valuation_s, "verification_ratio": ratio, "verification": ver}, f,
                      indent=2)
    return 0 if total <= 600 and ver["passed"] and ratio <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
