"""`hedonic-neurons study MODEL --texts FILE --layers 3-6 --out DIR`: model and texts to coalitions, a report."""

from __future__ import annotations

import argparse
import time

TARGETS = ("auto", "next-token", "label", "predicted", "head")


def run(args: argparse.Namespace) -> int:
    from hedonic_neurons.configs import config_from_args
    from hedonic_neurons.experiments.study import Study, StudyConfig
    from hedonic_neurons.layers import parse_layers

    d = StudyConfig()
    cfg = StudyConfig(model=args.model, texts=args.texts, layers=parse_layers(args.layers), target=args.target,
                      positions=args.positions, max_samples=None if args.max_samples == 0 else args.max_samples,
                      allow_new_head=args.allow_new_head, max_length=args.max_length, batch_size=args.batch_size,
                      device=args.device, seed=args.seed, solver=config_from_args(d.solver, args, args.solver_fields),
                      crossfit=not args.no_crossfit, baselines=not args.no_baselines, verify=not args.no_verify,
                      track=not args.no_track, cards=not args.no_cards, n_examples=args.examples)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda asked for, but torch sees no CUDA device: use --device cpu")
    t0 = time.time()
    s = Study(cfg, args.out, quiet=args.quiet, force=args.force)
    rd = s.run()
    print(f"study finished in {(time.time() - t0) / 60:.1f} min; summary: {rd.root / 'summary.md'}")
    report = rd.root / "report.html"
    print(f"report: {report if report.is_file() else rd.root / 'summary.md'}")
    return 0


def register(subparsers) -> None:
    """Add the `study` sub-command."""
    from hedonic_neurons.configs import add_config_flags
    from hedonic_neurons.experiments.study import StudyConfig

    d = StudyConfig()
    p = subparsers.add_parser(
        "study", help="your model and texts -> coalitions per layer, held-out scores, tracking, cards, report.html",
        description="Find coalitions of MLP channels in MODEL on the texts of --texts, over several layers: "
                    "valuations (exact pairwise ablation synergy on the model's own target), partitions fitted on "
                    "one half of the texts and scored on the other, Leiden and matched baselines beside them, "
                    "tracking across the layers, a card per coalition and report.html (docs/study.md).")
    p.add_argument("model", help="'smollm2', 'minilm', a local model or PEFT adapter directory, a .gguf file, or a "
                   "hub id (downloaded when online; from the local cache when HF_HUB_OFFLINE=1); required")
    p.add_argument("--texts", default=None, help="a UTF-8 file: one text per line, or .jsonl with {\"text\", "
                   "\"label\"} per line, or .csv/.tsv with text and label columns (default: the embedded "
                   "Wikipedia passage pool of hedonic-neurons fetch ir)")
    p.add_argument("--layers", default=None, help="layers to study, e.g. 3-6 or 2,5,9 (0-based) (default: four "
                   "layers around the middle of the model)")
    p.add_argument("--out", default="runs/study",
                   help="run directory, an existing one is resumed (default: %(default)s)")
    p.add_argument("--target", default=d.target, choices=TARGETS,
                   help="what the ablations are measured on: next-token (a causal LM's logit of the observed next "
                   "token), label (a classifier's gold-label logit; labels from the file), predicted (a "
                   "classifier's predicted class), head (a head you trained; the pooled position); auto picks "
                   "next-token for a causal LM and label / predicted for a classifier (default: %(default)s)")
    p.add_argument("--positions", default=d.positions, choices=("all", "last"),
                   help="next-token target: every position with an observed next token, or only the last one "
                   "(default: %(default)s)")
    p.add_argument("--max-samples", type=int, default=d.max_samples,
                   help="(text, position) samples drawn at random (seeded) when there are more; 0 = all "
                   "(default: %(default)s)")
    p.add_argument("--allow-new-head", action="store_true",
                   help="measure a newly initialised (random) classification head knowingly; it is then said so in "
                   "the summary, the report and the valuations")
    p.add_argument("--max-length", type=int, default=d.max_length,
                   help="tokens per text, longer ones are cut (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="texts per forward pass (default: %(default)s)")
    p.add_argument("--device", default=d.device, help="cpu or cuda (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the sample draw, the halves, the solver and "
                   "the baselines (default: %(default)s)")
    p.add_argument("--examples", type=int, default=d.n_examples,
                   help="top-activating examples per coalition card (default: %(default)s)")
    p.add_argument("--no-crossfit", action="store_true", help="fit and score on all samples (in-sample scores, "
                   "labelled so); default: fit on one half of the texts, score on the other")
    p.add_argument("--no-baselines", action="store_true", help="skip the random, k-means and Ward baselines "
                   "(Leiden is always fitted)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the self-verification of each valuation against the model's own modules")
    p.add_argument("--no-track", action="store_true", help="skip tracking across layers")
    p.add_argument("--no-cards", action="store_true", help="skip the coalition cards")
    p.add_argument("--force", action="store_true", help="recompute every stage of an existing --out (default: "
                   "reuse the stages whose config fields and inputs are unchanged)")
    g = p.add_argument_group("solver (SolverConfig)")
    p.set_defaults(func=run, solver_fields=add_config_flags(g, d.solver, exclude=["random_state"]))
