"""`study` end to end on the embedded SmolLM2-135M: 512 texts of <= 64 tokens, 4 layers, every stage up to the report.

Prints the seconds of each stage (as the run's StageTimer recorded them), the total wall time and the peak
resident memory of the process. Target on 2 CPU cores: <= 15 min in all. On a CUDA device: `--device cuda`.

    python benchmarks/bench_study.py [--texts FILE] [--n-texts 512] [--layers 10-13] [--device cpu] [--out DIR]

Texts: the embedded Wikipedia passage pool (`hedonic-neurons fetch ir`), each cut to its first ~48 words so that
it stays within 64 tokens; or --texts FILE.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="model (default: the embedded SmolLM2-135M)")
    ap.add_argument("--texts", default=None, help="a texts file (default: 512 passages of the embedded pool)")
    ap.add_argument("--n-texts", type=int, default=512, help="texts taken from the pool (default 512)")
    ap.add_argument("--layers", default="10-13", help="layers (default 10-13)")
    ap.add_argument("--max-samples", type=int, default=4096, help="(text, position) samples (default 4096)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    args = ap.parse_args()

    import torch

    from hedonic_neurons.experiments.study import Study, StudyConfig

    out = Path(args.out or tempfile.mkdtemp(prefix="bench_study_"))
    texts_file = args.texts
    if texts_file is None:
        from hedonic_neurons.ir.embedded import passage_texts

        pool = [" ".join(t.split()[:48]) for t in passage_texts(None)][: args.n_texts]
        texts_file = out / "texts.txt"
        out.mkdir(parents=True, exist_ok=True)
        texts_file.write_text("\n".join(pool) + "\n", encoding="utf-8")
    cfg = StudyConfig(model=args.model, texts=str(texts_file), layers=args.layers, max_samples=args.max_samples,
                      max_length=64, device=args.device)
    print(f"study: {args.model}, {sum(1 for _ in open(texts_file))} texts, layers {args.layers}, device "
          f"{args.device}, torch threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    Study(cfg, out / "run", quiet=True).run()
    wall = time.perf_counter() - t0
    timings = json.loads((out / "run" / "timings.json").read_text())
    for stage, sec in timings.items():
        if stage != "total (this invocation)":
            print(f"  {stage:24s} {sec:8.1f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"total {wall / 60:.1f} min ({wall:.0f} s); peak resident memory {peak / 1024:.2f} GiB")
    if args.device.startswith("cuda"):
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"run directory: {out / 'run'}")


if __name__ == "__main__":
    main()
