"""`hedonic-neurons reranker`: the reranker experiment (paper section 4) from the command line; under
torchrun (`torchrun ... -m hedonic_neurons.cli reranker ...`) only rank 0 reports."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from hedonic_neurons.distributed import env_world
from hedonic_neurons.experiments.reranker import SIZE_PRESETS, RerankerConfig, run_reranker
from hedonic_neurons.layers import parse_layers
from hedonic_neurons.models.finetune import check_task


def _cli(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # under torchrun only rank 0 reports
    quiet = bool(getattr(args, "quiet", False) or getattr(args, "quiet_sub", False)) or env_world()[0] > 0
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
        logging.getLogger("hedonic_neurons").setLevel(logging.WARNING)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    from hedonic_neurons.configs import config_from_args

    d = RerankerConfig()
    check_task(args.task)
    if args.device not in ("cpu", "cuda"):
        raise ValueError(f"--device {args.device!r}: use cpu or cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but no CUDA device is visible; use --device cpu")
    from hedonic_neurons.models.precheck import check_model_exists, precheck_config, precheck_layers

    layers = parse_layers(args.layers)
    # files only, seconds: a mistyped model, an unsupported architecture or a layer outside the model is
    # refused before the weights load (and before the data is looked for)
    check_model_exists(args.model)
    precheck_config(args.model)
    precheck_layers(args.model, layers)
    cfg = RerankerConfig(model=args.model, task=args.task, layers=layers, device=args.device,
                         seeds=args.seeds, n_train=args.n_train, n_probe=args.n_probe, n_ood=args.n_ood,
                         n_ood_drop=args.n_ood_drop,
                         max_words=args.max_words, max_length=args.max_length,
                         finetune=config_from_args(d.finetune, args, args.finetune_fields, dest_prefix="ft_"),
                         agreement_pairs=args.agreement_pairs,
                         solver=config_from_args(d.solver, args, args.solver_fields), n_largest=args.n_largest,
                         n_random=args.n_random, data_dir=args.data_dir, report=not args.no_report,
                         crossfit=not args.no_crossfit, track=not args.no_report, verify=not args.no_verify)
    out = args.out or f"runs/reranker-{Path(args.model).name}-{args.task}"
    rd = run_reranker(cfg, out, quiet=quiet, force=args.force, jobs=args.jobs)
    if not quiet:
        print(f"[reranker] done: {rd.root}")
        s = rd.root / "summary.md"
        if s.is_file():
            print(s.read_text())
    return 0


def register(subparsers) -> None:
    from hedonic_neurons.configs import add_config_flags

    p = subparsers.add_parser("reranker", help="the reranker experiment: fine-tune, partition, evaluate (Tables 1-6)")
    d = RerankerConfig()
    p.add_argument("--model", default=d.model, help="smollm2, minilm, a local path or cached hub id "
                   "(default: %(default)s)")
    p.add_argument("--task", default=d.task, help="cqtr | mtfl | relevance (default: %(default)s)")
    p.add_argument("--layers", default=None, help="LoRA layers, as '7-14', '1,3,5' or '7' (0-based) "
                   "(default: 7-14 for a model with 15 layers or more, else 1 to the last but one: MiniLM 1-4)")
    p.add_argument("--device", default=d.device, help="cpu | cuda (default: %(default)s)")
    p.add_argument("--out", default=None, help="run directory (default: runs/reranker-<model>-<task>)")
    p.add_argument("--seeds", type=int, default=d.seeds, help="number of seeds: partitions and baselines are "
                   "fitted with seeds 0..N-1 on the one fine-tuned model (default: %(default)s)")
    p.add_argument("--quiet", dest="quiet_sub", action="store_true", help="no progress bars or stage lines")
    p.add_argument("--force", action="store_true", help="recompute every stage of an existing --out (default: "
                   "reuse the stages whose config fields and inputs are unchanged)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes for the partition stages of different "
                   "layers and seeds; same results, docs/scale.md (default: %(default)s)")
    g = p.add_argument_group("size knobs (defaults: the full run; sizes marked * follow the model's preset, "
                             "docs/reranker.md)")
    small, large = SIZE_PRESETS["small"], SIZE_PRESETS["large"]

    def preset(key: str) -> str:
        return f"(default *: the model's preset, {small[key]} below 60 M parameters, else {large[key]})"

    g.add_argument("--n-train", type=int, default=None,
                   help=f"fine-tuning pairs {preset('n_train')}")
    g.add_argument("--n-probe", type=int, default=None,
                   help=f"in-distribution pairs for valuations/ridge {preset('n_probe')}")
    g.add_argument("--n-ood", type=int, default=None,
                   help=f"OOD pairs (DL-19/20 queries) {preset('n_ood')}")
    g.add_argument("--n-ood-drop", type=int, default=None,
                   help=f"OOD pairs (whole queries) the coalition ablations run on, 0 = all {preset('n_ood_drop')}")
    g.add_argument("--max-words", type=int, default=d.max_words, help="passage words kept (default: %(default)s)")
    g.add_argument("--max-length", type=int, default=d.max_length, help="tokens per input (default: %(default)s)")
    g.add_argument("--agreement-pairs", type=int, default=d.agreement_pairs,
                   help="random pairs for the Hessian-vs-exact PAS check, non-norm tails (default: %(default)s)")
    g.add_argument("--n-largest", type=int, default=None,
                   help=f"OOD-drop subset: largest coalitions {preset('n_largest')}")
    g.add_argument("--n-random", type=int, default=None,
                   help=f"OOD-drop subset: random coalitions {preset('n_random')}")
    g.add_argument("--data-dir", default=None, help="data folder (default: $HEDONIC_NEURONS_DATA or ./data)")
    g.add_argument("--no-report", action="store_true", help="skip tracking and report.html")
    g.add_argument("--no-verify", action="store_true",
                   help="skip the self-verification of each layer's valuations against the model's modules")
    g.add_argument("--no-crossfit", action="store_true", help="fit and score Pair / Ratio on all probe pairs "
                   "(in-sample); default: fit on one half of the queries, score on the other")
    ft = p.add_argument_group("fine-tuning (FinetuneConfig)")
    fts = add_config_flags(ft, d.finetune, fields=["epochs", "batch_size", "lr", "head_lr", "rank", "alpha", "warmup",
                                                   "max_grad_norm", "head_init", "head_init_pairs", "rank_loss"],
                           dest_prefix="ft_", flags={"alpha": "--lora-alpha"})
    sg = p.add_argument_group("solver (SolverConfig; the same defaults as `partition` except where noted)")
    # measured (docs/solver.md, MiniLM CQTR): MLP channels' positive PAS is heavy-tailed, so a second tier at
    # q84 admits few of the channels the first leaves alone
    tiers = ("q90 / q70 is the reranker's own, measured: MLP channels' positive PAS is heavy-tailed, and on "
             "MiniLM it put 56 % of the channels in coalitions of 2-10 against 43 % at the library's q97 / q84, "
             "Pair still above Leiden's (docs/solver.md)")
    sizes = "the paper's 8e5 / 8e4 scaled to 1,536 channels: the same samples per player, an 8x cheaper fit"
    sol = add_config_flags(sg, d.solver, exclude=["random_state"],
                           aliases={"m": ["--solver-m"], "omega": ["--solver-omega"]},
                           notes={"tau_quantile": tiers, "absorb_quantile": tiers, "m": sizes, "omega": sizes})
    p.set_defaults(func=_cli, finetune_fields=fts, solver_fields=sol)
