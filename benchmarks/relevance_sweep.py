"""The relevance loss and schedule sweep of docs/reranker.md: fine-tune MiniLM on the derived grades per row.

    python benchmarks/relevance_sweep.py [--rows ranknet listnet ...] [--out /tmp/relevance_sweep]

Each row is the reranker's own data and fine-tuning stages (`RerankerExperiment`: data, then finetune, nothing
after), with the row's settings on top of `hedonic-neurons reranker --model minilm --task relevance`'s defaults,
and prints OOD NDCG@10 of the untuned model, the head alone (linear probe) and the fine-tuned model. One row
takes ~400-500 s on one CPU thread; all rows ~2 h. Rows are kept under --out, so a re-run resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# name -> (rank loss, head init, probe pairs, lr, OOD pairs (40 queries = 400, 88 = 880), seed of the data
# sample and the fine-tune)
ROWS = {
    "listnet_random_head": ("listnet", "random", 800, 2e-3, 400, 0),
    "listnet_88q": ("listnet", "ridge", 800, 2e-3, 880, 0),
    "listnet_3200_lr2e-4_88q": ("listnet", "ridge", 3200, 2e-4, 880, 0),
    "ranknet": ("ranknet", "ridge", 800, 2e-3, 400, 0),
    "ranknet_88q": ("ranknet", "ridge", 800, 2e-3, 880, 0),
    "ranknet_seed1_88q": ("ranknet", "ridge", 800, 2e-3, 880, 1),
    "ranknet_3200": ("ranknet", "ridge", 3200, 2e-3, 400, 0),
    "ranknet_3200_lr2e-4": ("ranknet", "ridge", 3200, 2e-4, 400, 0),
}


def run_row(name: str, out: Path) -> dict:
    """Data and fine-tune stages of one row (resumed when its directory holds them); its finetune.json."""
    from hedonic_neurons.experiments.reranker import RerankerConfig, RerankerExperiment

    loss, head, pairs, lr, n_ood, seed = ROWS[name]
    cfg = RerankerConfig(model="minilm", task="relevance", n_ood=n_ood, seed0=seed, track=False, report=False)
    cfg.finetune = dataclasses.replace(cfg.finetune, rank_loss=loss, head_init=head, head_init_pairs=pairs, lr=lr,
                                       seed=seed)
    exp = RerankerExperiment(cfg, out / name, quiet=True)
    exp._check_config()
    exp._stage("data", exp.stage_data)
    exp._stage("finetune", exp.stage_finetune)
    return json.loads((out / name / "finetune.json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--out", default="/tmp/relevance_sweep", help="one run directory per row (resumable)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print("| row | loss | head before LoRA | lr | OOD | untuned | head only | fine-tuned |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.rows:
        rep = run_row(name, Path(args.out))
        loss, head, pairs, lr, n_ood, seed = ROWS[name]
        # task_metric dicts ({"ndcg@10": v, "M": v}); the head-only figure is None with a random head
        fmt = {k: f"{rep[k]['ndcg@10']:.3f}" if isinstance(rep.get(k), dict) else "-"
               for k in ("ood_before", "ood_head_only", "ood_after")}
        head_txt = f"ridge, {pairs}" if head == "ridge" else "random (as loaded)"
        print(f"| {name} | {loss} | {head_txt} | {lr:g} | {n_ood // 10} q | {fmt['ood_before']} | "
              f"{fmt['ood_head_only']} | {fmt['ood_after']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
