"""SmolLM2-135M as a causal LM, next-token target: valuations of one layer's 1536 MLP channels.

The local logit is the model's own logit of the observed next token (final norm + tied unembedding), read
at (text, position) samples drawn from every position with a next token. Prints the samples drawn, how many
unembedding rows the tail holds (instead of the whole vocabulary), the time of each stage, the Hessian-vs-
exact agreement and the self-verification against the model's own modules.

    python benchmarks/bench_next_token.py [--layer 10] [--n-texts 64] [--max-samples 256] [--out res.json]

Inputs: `hedonic_neurons.ir.embedded.query_passage_pairs(n, seed=0)` (real queries x Wikipedia passages;
run `hedonic-neurons fetch ir` first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--n-texts", type=int, default=64)
    ap.add_argument("--max-samples", type=int, default=256)
    ap.add_argument("--positions", choices=["all", "last"], default="all")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from hedonic_neurons.ir.embedded import query_passage_pairs
    from hedonic_neurons.models import compute_valuations, load_model
    from hedonic_neurons.models.targets import format_target

    t = time.perf_counter()
    model, tok = load_model("smollm2")
    t_load = time.perf_counter() - t
    texts = query_passage_pairs(args.n_texts, seed=0).texts()[: args.n_texts]
    v = compute_valuations(model, texts, args.layer, tokenizer=tok, positions=args.positions,
                           max_samples=args.max_samples, seed=0, max_length=args.max_length, batch_size=16,
                           progress=False)
    c = v.cache
    res = {"model": type(model).__name__, "layer": v.layer, "n_players": v.n_players, "n_samples": v.n_samples,
           "n_texts": int(len(set(c.sample_text.tolist()))), "head_rows": int(c.tail.head_w.shape[0]),
           "vocab": int(model.config.vocab_size), "load_s": round(t_load, 1),
           "timings_s": {k: round(s, 1) for k, s in v.timings.items()}, "agreement": v.agreement,
           "verification": {"passed": v.verification["passed"],
                            "worst": max(c_["max_rel_err"] for c_ in v.verification["checks"].values())},
           "target": v.meta["target"], "threads": args.threads}
    print(f"{res['model']} layer {v.layer}: n = {v.n_players} players, N = {v.n_samples} samples from "
          f"{res['n_texts']} texts; tail head rows {res['head_rows']} of a {res['vocab']}-token vocabulary")
    print(format_target(v.meta["target"]))
    print(f"  load {t_load:.1f} s; " + ", ".join(f"{k} {s:.1f} s" for k, s in v.timings.items()))
    a = v.agreement
    print(f"  Hessian vs exact PAS: Pearson {a['pearson']:.3f}, Spearman {a['spearman']:.3f}, top-{a['top_k']} "
          f"overlap {a['topk_overlap']:.3f}")
    print(f"  self-verification: {'passed' if res['verification']['passed'] else 'FAILED'} "
          f"(worst relative error {res['verification']['worst']:.1e})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
