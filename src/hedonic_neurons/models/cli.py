"""`hedonic-neurons valuations`: OCA / exact PAS / Hessian PAS of one layer of a (LoRA) model, to files."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def one_layer(spec: str) -> int:
    """--layer in the common layer syntax, one layer only ('7')."""
    from hedonic_neurons.layers import parse_layers

    layers = parse_layers(spec)
    if not layers or len(layers) != 1:
        raise ValueError(f"--layer {spec!r}: valuations are of one layer, e.g. --layer 7; run once per layer")
    return layers[0]


def run(args: argparse.Namespace) -> int:
    from hedonic_neurons.models.precheck import (
        check_layers_config,
        check_model_exists,
        loads_as_causal_lm,
        precheck_config,
        precheck_layers,
    )

    layer = one_layer(args.layer)
    # files only, seconds: a mistyped model path is reported before any input data is looked for, and an
    # unsupported architecture or a layer outside the model before torch is imported or a weight is read
    check_model_exists(args.model)
    check_layers_config(args.model, [layer], flag="--layer")
    if args.max_samples is not None and args.max_samples < 2:
        raise ValueError(f"--max-samples {args.max_samples}: valuations need at least 2 samples")
    if not args.adapter:
        precheck_config(args.model, causal=loads_as_causal_lm(args.model, args.target))
        precheck_layers(args.model, (layer,), flag="--layer")
    labels = None
    if args.texts:
        from hedonic_neurons.data.texts import read_texts

        texts, labels = read_texts(args.texts)
        source = args.texts
        if labels is not None and args.target not in (None, "label"):
            labels = None  # the file's labels are read by --target label only
    elif args.target == "label":
        raise ValueError("--target label needs gold labels: give --texts FILE.jsonl ({'text', 'label'} per line) "
                         "or a .tsv/.csv with text and label columns")
    import numpy as np
    import torch

    from hedonic_neurons.models.distributed import valuations_any
    from hedonic_neurons.models.placement import placement_kwargs
    from hedonic_neurons.models.valuate import METHODS

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}: use a comma list of {', '.join(METHODS)}")
    if not args.texts:
        from hedonic_neurons.ir.embedded import query_passage_pairs

        texts = query_passage_pairs(args.n, split=args.split, seed=args.seed).texts()[: args.n]
        source = f"embedded query-passage pairs ({args.split}, seed {args.seed})"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device: use --device cpu")
    adapter = None
    if args.adapter:
        from hedonic_neurons.models.detect import load_adapter_class

        adapter = load_adapter_class(args.adapter)
    # one process, or every rank of a torchrun launch (docs/scale.md); only rank 0 gets the result back
    v = valuations_any(args.model, texts, layer, methods=methods, ablation=args.ablation,
                       batch_size=args.batch_size, max_length=args.max_length, device=args.device,
                       pas_dtype=np.dtype(args.pas_dtype), load_kwargs=placement_kwargs(args),
                       verify=not args.no_verify, adapter=adapter, target=args.target, positions=args.positions,
                       max_samples=args.max_samples, seed=args.seed, labels=labels,
                       allow_new_head=args.allow_new_head)
    if v is None:
        return 0
    v.meta.update(model=str(args.model), inputs=source)
    out = v.save(args.out)
    log.info("wrote %s", out)
    print(f"layer {v.layer}: n = {v.n_players} players, N = {v.n_samples} samples, ablation {v.ablation}")
    tg = v.meta.get("target")
    if tg:
        from hedonic_neurons.models.targets import format_target

        print(format_target(tg))
    for k, s in v.timings.items():
        print(f"  {k:12s} {s:8.1f} s")
    if v.agreement:
        a = v.agreement
        print(f"  Hessian vs exact PAS: Pearson {a['pearson']:.3f}, Spearman {a['spearman']:.3f}, "
              f"top-{a['top_k']} overlap {a['topk_overlap']:.3f}")
    if v.verification:
        from hedonic_neurons.models.verify import format_verification

        print(format_verification(v.verification))
    else:
        print("  self-verification: skipped (--no-verify): these valuations are unchecked")
    print(f"-> {out / 'valuations.safetensors'}, {out / 'valuations.json'}"
          + (f", {out / 'verification.csv'}" if v.verification else ""))
    return 0


def _max_samples(value: str) -> int | None:
    if value.strip().lower() in ("all", "none"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of samples (or 'all')") from None


def register(subparsers) -> None:
    """Add the `valuations` sub-command."""
    from hedonic_neurons.models.placement import add_placement_args

    p = subparsers.add_parser(
        "valuations", help="pairwise valuations (OCA, exact/Hessian PAS) of one layer's MLP channels",
        description="Valuations of one layer of a model: 'smollm2', 'minilm', a local model or PEFT adapter "
                    "directory, or a cached hub id. Writes valuations.safetensors + valuations.json.")
    p.add_argument("model", help="smollm2 | minilm | PATH (model or PEFT adapter dir) | cached hub id")
    p.add_argument("--layer", required=True, help="the one layer to value, a 0-based index such as 7 (the "
                   "layer syntax of every command; required)")
    p.add_argument("--texts", help="inputs: one text per line, a .jsonl of {\"text\", \"label\"}, or a .tsv/.csv "
                                   "with text and label columns (default: embedded query-passage pairs)")
    p.add_argument("--target", choices=["next-token", "label", "predicted", "head"], default=None,
                   help="what the local logit reads: next-token (a causal LM's own logit of the observed next "
                        "token), label (a trained classifier's gold label, labels from --texts), predicted (its "
                        "argmax class), head (the head as it is) (default: next-token for a causal LM, label / "
                        "predicted for a classifier)")
    p.add_argument("--positions", choices=["all", "last"], default="all",
                   help="next-token: every position with an observed next token, or the last one per text "
                        "(default: %(default)s)")
    p.add_argument("--max-samples", type=_max_samples, default=4096,
                   help="next-token: draw this many (text, position) samples at random (--seed); 'all' keeps all "
                        "(default: %(default)s)")
    p.add_argument("--allow-new-head", action="store_true",
                   help="measure a newly initialised (random) classification head knowingly (recorded)")
    # --n-inputs: under torchrun, whose parser takes the bare `--n` for an abbreviation of its own options
    p.add_argument("--n", "--n-inputs", dest="n", type=int, default=512,
                   help="number of embedded pairs when --texts is not given (default: %(default)s)")
    p.add_argument("--split", default="train", choices=["train", "ood"],
                   help="embedded pairs: MS MARCO training queries or the TREC DL OOD queries "
                   "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the embedded pairs' draw and of the next-token "
                   "sample draw (default: %(default)s)")
    p.add_argument("--methods", default="oca,pas,hessian",
                   help="comma list of oca, pas (exact), hessian (default: %(default)s)")
    p.add_argument("--ablation", default="auto", choices=["auto", "lora", "zero", "mean"],
                   help="how a channel is removed: auto = revert LoRA where the layer's MLP has it, else zero "
                   "(default: %(default)s)")
    # the API's default (compute_valuations(batch_size=8)); tests/cli checks that the two agree
    p.add_argument("--batch-size", type=int, default=8, help="inputs per forward pass; the valuations are the same "
                   "up to float rounding (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=256, help="tokens per input, longer ones truncated "
                   "(default: %(default)s)")
    p.add_argument("--pas-dtype", default="float64", choices=["float64", "float32"],
                   help="accumulator of the exact PAS sums (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--out", default="valuations", help="output directory (default: %(default)s)")
    add_placement_args(p)
    p.add_argument("--adapter", metavar="MODULE:CLASS",
                   help="a ModelAdapter subclass for an architecture that is not found automatically "
                        "(importable module or path/to/file.py; docs/models.md) (default: found from the model)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the self-verification against direct ablation through the model's modules")
    p.set_defaults(func=run)
