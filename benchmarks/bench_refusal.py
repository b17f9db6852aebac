"""How fast an unsupported architecture is refused: before its weights load (target: under 5 s on a 270M model).

Saves a random-weight ~270M-parameter GPT-2-architecture sequence classifier (Conv1D MLP: not supported) to a
temporary directory once, then times `hedonic-neurons valuations DIR --layer 3` end to end in a fresh process
(interpreter start, the command's imports, the file-only precheck of models/precheck.py, refusal) and, for
comparison, the meta-device check (what models that pass the precheck go through) and a plain
`from_pretrained` of the same weights (what the refusal used to wait for).

    python benchmarks/bench_refusal.py [--dir /tmp/hn-gpt2-270m] [--layers 18] [--no-load]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _make(folder: Path, n_layer: int) -> int:
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    cfg = GPT2Config(n_embd=1024, n_layer=n_layer, n_head=16, num_labels=1, pad_token_id=50256)
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(cfg)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/hn-gpt2-270m")
    ap.add_argument("--layers", type=int, default=18, help="GPT-2 blocks (18 x d 1024: ~278M parameters)")
    ap.add_argument("--no-load", action="store_true", help="skip timing the weight load for comparison")
    args = ap.parse_args(argv)
    folder = Path(args.dir)
    if not (folder / "config.json").is_file():
        t = time.perf_counter()
        n_params = _make(folder, args.layers)
        print(f"saved a random {n_params / 1e6:.0f}M-parameter GPT-2 classifier to {folder} "
              f"({time.perf_counter() - t:.0f} s)")
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e9
    texts = folder / "texts.txt"
    texts.write_text("query: a passage: b\nquery: c passage: d\n")
    cmd = [sys.executable, "-c", "import sys; from hedonic_neurons.cli import main; "
           f"sys.exit(main(['--quiet', 'valuations', {str(folder)!r}, '--layer', '3', '--texts', {str(texts)!r}]))"]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    refuse_s = time.perf_counter() - t
    # the refusal path imports only the `valuations` command module and reads files (models/precheck.py):
    # a fresh interpreter with just those imports says what start-up alone costs here
    imp = [sys.executable, "-c", "from hedonic_neurons.cli import build_parser; build_parser(only='valuations'); "
           "import hedonic_neurons.models.precheck"]
    t = time.perf_counter()
    subprocess.run(imp, capture_output=True, text=True)
    import_s = time.perf_counter() - t
    print(f"model: {folder} ({size:.2f} GB of weights)")
    print(f"fresh interpreter + the refusal path's imports: {import_s:.2f} s; the refusal beyond them: "
          f"{refuse_s - import_s:.2f} s")
    print(f"CLI exit code {r.returncode}, {refuse_s:.2f} s end to end (fresh interpreter; target < 5 s)")
    print(f"message: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else '(none)'}")
    # the meta-device check (the authority for models the file-only precheck lets through), for comparison
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from hedonic_neurons.models.detect import check_supported

    t = time.perf_counter()
    try:
        check_supported(str(folder))
        msg = "(accepted?)"
    except ValueError as exc:
        msg = str(exc)
    print(f"meta-device check_supported, torch/transformers already imported: {time.perf_counter() - t:.2f} s "
          f"-> {msg[:100]}...")
    if not args.no_load:
        cmd = [sys.executable, "-c", "import time; t = time.perf_counter(); "
               "from transformers import AutoModelForSequenceClassification as A; "
               f"A.from_pretrained({str(folder)!r}); print(time.perf_counter() - t)"]
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        print(f"for comparison, loading the weights alone: {time.perf_counter() - t:.2f} s end to end "
              f"({float(out.stdout.strip().splitlines()[-1]):.2f} s inside the process)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (timings under this contention)")
    return 0 if r.returncode == 2 and refuse_s < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
