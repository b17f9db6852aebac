"""Paired per-query comparison of a relevance run's models (docs/benchmarks.md, "Fine-tuning").

    python benchmarks/paired_queries.py runs/reranker-minilm-relevance

Reads `finetune.json` (`ood_per_query`: NDCG@10 per OOD query of the untuned, head-only and fine-tuned
models, written by every relevance run of the current version) and prints, for fine-tuned minus untuned
and fine-tuned minus head only: the mean gain, its 95 % t interval, a percentile bootstrap interval,
and queries up / down.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    from hedonic_neurons.metrics.stats import paired_ci

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a `hedonic-neurons reranker --task relevance` run directory")
    args = ap.parse_args()
    path = Path(args.run_dir) / "finetune.json"
    if not path.is_file():
        print(f"error: {path} not found: pass the --out directory of a relevance run", file=sys.stderr)
        return 2
    pq = json.loads(path.read_text()).get("ood_per_query")
    if not pq:
        print(f"error: {path} holds no per-query NDCG (a CQTR / MTFL run, or a run of an older version): re-run "
              "the fine-tune stage of a relevance run", file=sys.stderr)
        return 2
    print(f"{len(pq['qids'])} OOD queries with a relevant candidate (derived grades), NDCG@10")
    for name in ("untuned", "head_only", "fine_tuned"):
        if name in pq:
            print(f"  {name:10s} mean {sum(pq[name]) / len(pq[name]):.4f}")
    for base in ("untuned", "head_only"):
        if base not in pq:
            continue
        r = paired_ci(pq[base], pq["fine_tuned"])
        print(f"fine-tuned minus {base}: {r['mean']:+.3f}, 95 % CI +-{r['t_half']:.3f} (t; bootstrap "
              f"[{r['boot_lo']:+.3f}, {r['boot_hi']:+.3f}]), {r['up']} queries up, {r['down']} down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
