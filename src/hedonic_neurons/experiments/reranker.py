"""The reranker experiment (paper section 4, Tables 1, 2, 4-6): fine-tune, value, partition, evaluate.

Stages (each writes its files atomically and a marker in RUN/stages/, so an interrupted run resumes from
the last finished one and never recomputes what is on disk):

1. ``data``: in-distribution pairs (MS MARCO dev queries: `n_train` for fine-tuning, `n_probe` for
   activations / valuations / ridge training) and OOD pairs (TREC DL-19 + DL-20 queries), their task
   labels and MSLR features -> RUN/data/*.json.
2. ``finetune``: PEFT LoRA on the MLP of `layers` -> RUN/adapter/ (safetensors), RUN/finetune.json,
   table ``finetune`` (untuned vs fine-tuned on OOD, like the paper's Tables 4 and 5).
3. ``valuations:<layer>``: layer cache on the probe pairs, split into two halves of whole queries
   (cross-fitting) -> per half OCA, PAS (+ se, psi), tracking inputs -> RUN/matrices/<layer>.safetensors
   (keys ending ``_a`` / ``_b``); readout activations of probe and OOD pairs -> RUN/activations/<layer>.safetensors.
4. ``partitions:<layer>:<seed>``: on each half, Hedonic-PAS, Hedonic-OCA (PAC-Top-Cover, random_state = seed),
   Leiden (CPM on the positive PAS phi) and the three baselines matched to Hedonic-PAS's size histogram ->
   RUN/partitions/<layer>/<method>.json (seed 0 under the plain method name, seed s > 0 as ``<method>.s<s>``;
   the half-b partition with ``.b`` appended).
5. ``evaluate:<layer>:<seed>``: per method, on a stated subset of coalitions (the `n_largest` largest
   plus `n_random` drawn at random from the other coalitions of size >= 2): OOD drop (the coalition's
   LoRA reverted for every token, layers before `layer` replayed from a cache, `coalition_batch`
   coalitions per forward pass); on every coalition of size >= 2: feature alignment R^2 (OOD); per
   partition: coalition predictivity (ridge on coalition mean activations, trained on the probe pairs,
   R^2 on OOD); all three for the half-a partitions. Pair and Ratio cross-fitted: each half's partition
   scored with the other half's PAS (held-out; in-sample beside), both directions averaged; split-half
   ARI -> RUN/eval/<layer>_s<seed>.json.
6. ``tables``: Tables 1, 2 and 6 (mean +- 95 % CI over seeds, beside the paper's numbers), summary.md.
7. ``tracking`` and ``report``: the tracking engineer's `track_run` and `report.build_report`.

Seeds vary the partitioner's and the baselines' random state and the random part of the coalition
subset; the fine-tuned model is one (fine-tuning seed `seed0`), as the paper's 3 seeds cannot be
afforded three fine-tunes on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np

from hedonic_neurons.distributed import Dist
from hedonic_neurons.metrics.crossfit import crossfit_halves, eval_half, fit_halves, partition_name
from hedonic_neurons.metrics.partition_metrics import coalition_subset, method_scores, synergy_by_half
from hedonic_neurons.models.ablate import ablation_scores
from hedonic_neurons.models.extract import subset_cache
from hedonic_neurons.models.finetune import (
    FinetuneConfig,
    TaskData,
    build_task_data,
    check_rank_loss,
    check_task,
    drop_subset,
    finetune,
    load_adapter,
    task_data_from_json,
    task_data_to_json,
    task_metric,
)
from hedonic_neurons.partition import SolverConfig
from hedonic_neurons.report.reranker_tables import METHODS, finetune_table, subset_rule, write_tables
from hedonic_neurons.rundir import RunDir, write_json
from hedonic_neurons.runtime import record_runtime
from hedonic_neurons.stages import StageRunner, StageTimer
from hedonic_neurons.tracking.events import RULE_VERSION as TRACKING_VERSION

log = logging.getLogger(__name__)

MIN_HALF = 8  # cross-fitting: fewest probe pairs per half


# --- configuration -------------------------------------------------------------------------------
def default_layers(n_layers: int) -> tuple[int, ...]:
    """The paper's 7-14 when the model is deep enough, else the middle layers 1..n-2 (MiniLM: 1-4)."""
    if n_layers >= 15:
        return tuple(range(7, 15))
    return tuple(range(1, max(2, n_layers - 1)))


@dataclasses.dataclass
class RerankerConfig:
    """Everything that decides a reranker run (saved as RUN/config.json, loadable again)."""

    model: str = "smollm2"
    task: str = "cqtr"
    layers: tuple[int, ...] | None = None  # None: default_layers(model)
    device: str = "cpu"
    seeds: int = 3
    seed0: int = 0  # data draw and fine-tuning seed
    # Sizes: None = the model's preset (`SIZE_PRESETS`, chosen by parameter count in `resolve_sizes`).
    n_train: int | None = None  # fine-tuning pairs (MS MARCO dev queries)
    n_probe: int | None = None  # in-distribution pairs for activations, valuations and ridge training
    n_ood: int | None = None  # OOD pairs (TREC DL-19/20 queries)
    n_ood_drop: int | None = None  # of those, the pairs (whole queries) the coalition ablations run on
    per_query: int = 10
    max_words: int = 60
    max_length: int = 128
    # fine-tuning (task, layers, seed = seed0, device and max_length are filled from this config)
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(head_init_pairs=None))
    # The paper's m = 8e5 / omega = 8e4 are for 14,336 players (56 samples per player); the 1,536 MLP
    # channels of MiniLM / SmolLM2 get 1e5 (65 per player): the same ratio, an 8x cheaper fit.
    # solver.max_size also caps the Leiden communities; random_state is set per seed. MLP channels' positive
    # PAS is heavy-tailed, so a second tier in the 80s admits few of the channels the first leaves alone:
    # tiers q90 / q70 (docs/solver.md, MiniLM: 56 % in coalitions of 2-10 against 40 % at q90 / q86; the
    # library default q97 / q84 gives 43 %). `hedonic-neurons reranker --help` gives the same reason.
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(m=100_000, omega=10_000, tau_quantile=0.9,
                                                                      absorb_quantile=0.7))
    # cross-fitting: the probe pairs are split into two seeded halves of whole queries; partitions
    # fitted on one half's valuation are scored (Pair, Ratio) on the other's, both directions averaged
    crossfit: bool = True
    n_largest: int | None = None  # OOD-drop subset: the largest coalitions per method, layer, seed ...
    n_random: int | None = None  # ... plus this many drawn at random from the other coalitions of size >= 2
    coalition_batch: int = 8  # coalition ablations per forward pass
    eval_batch: int = 10  # OOD pairs per forward pass in the ablation runs
    direct_pas_limit: int = 20_000_000  # pair x sample count up to which a non-norm tail gets exact PAS
    agreement_pairs: int = 1_000  # random pairs for the Hessian-vs-exact check (non-norm tails)
    synergy_pairs: int = 100  # non-norm tails: exact pairs per coalition for Pair / Ratio (sampled above)
    data_dir: str | None = None
    track: bool = True
    report: bool = True
    verify: bool = True  # self-verify each layer's valuations against the model's modules (models.verify)

    def __post_init__(self):
        if self.layers is not None:
            self.layers = tuple(int(x) for x in self.layers)
        if isinstance(self.solver, dict):
            self.solver = SolverConfig(**self.solver)
        if isinstance(self.finetune, dict):
            self.finetune = FinetuneConfig(**self.finetune)
        self.sync_finetune()

    def sync_finetune(self) -> None:
        """Fill the fine-tuning fields this config owns (task, layers, seed, device, max_length), so the
        saved config holds exactly what fine-tuning ran with."""
        ft = self.finetune
        ft.task, ft.seed, ft.device, ft.max_length = self.task, self.seed0, self.device, self.max_length
        if self.layers is not None:
            ft.layers = tuple(self.layers)

    def resolve_sizes(self, n_params: int) -> RerankerConfig:
        """Fill the size fields left at None from `SIZE_PRESETS` ("small" below 60 M parameters, else
        "large"): what fits the 20-minute (MiniLM) and 60-minute (SmolLM2) budgets on 2 CPU cores."""
        preset = SIZE_PRESETS["small" if n_params < 60_000_000 else "large"]
        for k, v in preset.items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        return self


# flat keys of config.json files written before RerankerConfig.solver / .finetune existed -> their nested place
RERANKER_MOVED = {"solver_m": "solver.m", "solver_omega": "solver.omega", "max_size": "solver.max_size",
                  **{k: f"finetune.{k}" for k in ("epochs", "batch_size", "lr", "head_lr", "rank_loss", "rank")}}


# Per-model-size defaults. The ablations of the evaluate stage cost K coalitions x pairs x later layers:
# ~7 ms per pair and layer on 2 cores for MiniLM (5 later layers at most), ~7 ms for SmolLM2 too but through
# 16-23 later layers, hence the smaller OOD-drop subset for large models. On a GPU raise them
# (--n-ood-drop, --n-largest, --n-random).
SIZE_PRESETS: dict[str, dict[str, int]] = {
    "small": {"n_train": 3200, "n_probe": 400, "n_ood": 400, "n_ood_drop": 40, "n_largest": 3, "n_random": 3},
    "large": {"n_train": 800, "n_probe": 200, "n_ood": 200, "n_ood_drop": 30, "n_largest": 2, "n_random": 2},
}


def load_data(rd: RunDir) -> dict[str, TaskData]:
    return {s: task_data_from_json(json.loads((rd.root / "data" / f"{s}.json").read_text()))
            for s in ("train", "probe", "ood")}


# --- the experiment ------------------------------------------------------------------------------
class RerankerExperiment:
    """Runs (or resumes) one reranker experiment into `out`; `run()` returns the RunDir."""

    def __init__(self, cfg: RerankerConfig, out: str | Path, quiet: bool = False, model_loader=None,
                 force: bool = False, jobs: int = 1):
        self.cfg = cfg
        self.force = force
        if int(jobs) < 1:
            raise ValueError(f"--jobs {jobs}: give 1 (serial) or more worker processes")
        self.jobs = int(jobs)  # runtime only (runtime.json), never in the config: it must not change results
        check_task(cfg.task)
        if cfg.seeds < 1:
            raise ValueError(f"--seeds {cfg.seeds}: give at least 1")
        self.rd = RunDir(out)
        self.quiet = quiet
        self.timer = StageTimer(self.rd, quiet)
        self._loader = model_loader
        self._base = None
        self._pm = None
        self._caches: dict[int, Any] = {}

    @functools.cached_property
    def dist(self) -> Dist:
        """The ranks of a torchrun launch (docs/scale.md); 1 process without one. Built on first use, so
        planning a run (e.g. for another device) needs no device."""
        return Dist(self.cfg.device)

    # model --------------------------------------------------------------------------------------
    def _load_base(self):
        if self._loader is not None:
            return self._loader()
        from hedonic_neurons.models.loading import load_model

        # the reranker trains a scalar head (LP-FT): a new head is what it asks for, not a silent fallback
        return load_model(self.cfg.model, target="head", num_labels=1, allow_new_head=True, seed=self.cfg.seed0)

    def _check_config(self) -> None:
        """Resolve the config; plan the stages, drop the stale ones and save config.json (StageRunner)."""
        self.resolve()
        cfg_path = self.rd.root / "config.json"
        if cfg_path.is_file() and not self.force:
            # an older run directory: load its config (flat keys of older versions map to their nested place)
            # or refuse in one line; what changed is then recomputed stage by stage, never silently reused
            from hedonic_neurons.configs import config_from_dict

            config_from_dict(RerankerConfig, json.loads(cfg_path.read_text()), RERANKER_MOVED)
        self.sr = self.plan()
        if self.dist.is_main:  # under torchrun the run directory is rank 0's to change
            self.sr.prepare(force=self.force)

    def resolve(self) -> None:
        """Resolve the sizes and layers against the model (one-line error when outside it)."""
        model, tok = self._load_base()
        from hedonic_neurons.models import get_adapter

        ad = get_adapter(model)
        self.cfg.resolve_sizes(sum(p.numel() for p in model.parameters()))
        if self.cfg.layers is None:
            self.cfg.layers = default_layers(ad.n_layers)
        bad = [x for x in self.cfg.layers if x not in ad.layer_range("mlp")]
        if bad:
            raise ValueError(f"layers {bad} are outside this model's {ad.n_layers} layers; use --layers within "
                             f"0-{ad.n_layers - 1} (e.g. {default_layers(ad.n_layers)[0]}-"
                             f"{default_layers(ad.n_layers)[-1]})")
        check_rank_loss(self.cfg.finetune.rank_loss)
        self.cfg.sync_finetune()
        self._base = (model, tok)

    def model(self):
        """The fine-tuned PEFT model and tokenizer (loaded from RUN/adapter once)."""
        if self._pm is None:
            base, tok = self._base if self._base is not None else self._load_base()
            self._base = None
            self._pm = (load_adapter(base, self.rd.root / "adapter").to(self.cfg.device), tok)
        return self._pm

    def plan(self) -> StageRunner:
        """Every stage with the config fields and upstream stages it reads (docs/reranker.md)."""
        c, sr = self.cfg, StageRunner(self.rd, self.cfg)
        sr.add("data", ("task", "seed0", "n_train", "n_probe", "n_ood", "per_query", "max_words", "data_dir"),
               outputs=("data",))
        sr.add("finetune", ("model", "seed0", "layers", "device", "max_length", "finetune"), ("data",),
               outputs=("adapter", "finetune.json"))
        evals = []
        for layer in c.layers:
            sr.add(f"valuations:{layer}", ("crossfit", "verify", "direct_pas_limit", "agreement_pairs"), ("finetune",),
                   outputs=(f"matrices/{layer}.safetensors", f"activations/{layer}.safetensors"))
            for seed in range(c.seeds):
                # version 1: the matched baselines' random state is drawn per layer (crossfit.layer_seed)
                sr.add(f"partitions:{layer}:{seed}", ("solver",), (f"valuations:{layer}",),
                       outputs=tuple(f"partitions/{layer}/{partition_name(m, h, seed)}.json" for m in METHODS
                                     for h in ("a", "b")), version=1)
            for seed in range(c.seeds):
                sr.add(f"evaluate:{layer}:{seed}", ("n_ood_drop", "n_largest", "n_random", "coalition_batch",
                                                    "eval_batch", "synergy_pairs"), (f"partitions:{layer}:{seed}",),
                       outputs=(f"eval/{layer}_s{seed}.json",))
                evals.append(f"evaluate:{layer}:{seed}")
        sr.add("tables", (), tuple(evals))
        last = "tables"
        if c.track:
            sr.add("tracking", (), ("tables",), outputs=("tracking",), version=TRACKING_VERSION)
            last = "tracking"
        if c.report:
            sr.add("report", (), (last,), outputs=("report.html",))
        return sr

    def _stage(self, name: str, fn) -> None:
        # under torchrun rank 0 runs the stage while the others wait, all ranks run the valuations (docs/scale.md)
        with self.dist.stage(lambda: self.sr.fresh(name), parallel=name.startswith("valuations:")) as go:
            if not go:
                return
            t = time.perf_counter()
            info = fn() or {}
            dt = time.perf_counter() - t
            if self.dist.is_main:
                self.sr.done(name, {**info, "seconds": round(dt, 2)})
                self.timer.record(name, dt)

    # stages -------------------------------------------------------------------------------------
    def stage_data(self) -> dict:
        from hedonic_neurons.ir.embedded import passage_texts, query_passage_pairs
        from hedonic_neurons.ir.features import IRFeatures

        c = self.cfg
        feat = IRFeatures().fit(passage_texts(c.data_dir))
        train_all = query_passage_pairs(c.n_train + c.n_probe, "train", seed=c.seed0, per_query=c.per_query,
                                        data_dir=c.data_dir)
        # Whole queries go to one side: the probe pairs are in distribution but unseen in fine-tuning.
        n_tr = min(len(train_all), -(-c.n_train // c.per_query) * c.per_query)
        train, norm = build_task_data(c.task, train_all.subset(np.arange(n_tr)), feat, c.max_words)
        probe, _ = build_task_data(c.task, train_all.subset(np.arange(n_tr, len(train_all))), feat, c.max_words,
                                   norm=norm)
        ood, _ = build_task_data(c.task, query_passage_pairs(c.n_ood, "ood", seed=c.seed0, per_query=c.per_query,
                                                             data_dir=c.data_dir), feat, c.max_words, norm=norm)
        if len(probe.texts) < 4:
            raise ValueError(f"only {len(probe.texts)} probe pairs; raise --n-probe or lower --n-train")
        probe_halves(c, probe.pairs.qids)  # too few probe pairs to split in two: one-line error, nothing written
        for name, d in (("train", train), ("probe", probe), ("ood", ood)):
            write_json(self.rd.root / "data" / f"{name}.json", task_data_to_json(d))
        write_json(self.rd.root / "data" / "norm.json", {"mean": norm[0], "sd": norm[1],
                                                         "relevance": "derived" if c.task == "relevance" else None})
        return {"n_train": len(train.texts), "n_probe": len(probe.texts), "n_ood": len(ood.texts)}

    def stage_finetune(self) -> dict:
        c = self.cfg
        data = load_data(self.rd)
        model, tok = self._base if self._base is not None else self._load_base()
        self._base = None
        c.sync_finetune()
        fc = c.finetune
        if fc.head_init_pairs is None:  # None: a quarter of the training pairs, within 100..800
            fc = dataclasses.replace(fc, head_init_pairs=min(800, max(100, c.n_train // 4)))
        pm, rep = finetune(model, tok, data["train"], data["ood"], fc, out_dir=self.rd.root / "adapter",
                           progress=not self.quiet)
        pm.eval()
        self._pm = (pm, tok)
        write_json(self.rd.root / "finetune.json", rep)
        finetune_table(self.rd, self.cfg, rep)
        return {"ood_before": rep["ood_before"], "ood_after": rep["ood_after"]}

    def halves(self) -> dict[str, np.ndarray]:
        """{half: probe-pair indices}: two seeded halves of whole queries, or {"a": all} without crossfit."""
        qids = json.loads((self.rd.root / "data" / "probe.json").read_text())["qids"]
        return probe_halves(self.cfg, qids)

    def _valuate(self, cache, prog: bool, verify_texts: list[str] | None = None,
                 verify_stem: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """OCA and PAS of one cache (`models.valuate.pas_valuations`: exact, or Hessian with its exact
        agreement). With `verify_texts` (the cache's own inputs, in order) the valuations are self-verified
        against direct ablation through the model (models.verify) and the check saved."""
        from hedonic_neurons.models.valuate import pas_valuations

        c = self.cfg
        v, mats, info = pas_valuations(cache, c.direct_pas_limit, c.agreement_pairs, progress=prog)
        if verify_texts is not None:
            from hedonic_neurons.models.extract import text_batches
            from hedonic_neurons.models.verify import save_verification, verify_valuations

            pm, tok = self.model()
            batches = text_batches(tok, verify_texts, batch_size=16, max_length=c.max_length)  # as the cache
            t = time.perf_counter()
            res = verify_valuations(pm, batches, v, device=c.device)
            info["verify_seconds"] = round(time.perf_counter() - t, 2)
            save_verification(res, self.rd.root / "verification", stem=verify_stem)
        return mats, info

    def stage_valuations(self, layer: int) -> dict:
        from hedonic_neurons.models.extract import layer_cache, text_batches

        c = self.cfg
        data = load_data(self.rd)
        pm, tok = self.model()
        prog = not self.quiet and not os.environ.get("TQDM_DISABLE")
        idx = self.halves()
        if self.dist.world > 1:  # each rank values its shard of both halves, rank 0 writes (docs/scale.md)
            from hedonic_neurons.models.distributed import sharded_half_valuations

            cache = sharded_half_valuations(
                pm, tok, data["probe"].texts, idx, layer, dist=self.dist, other_texts=[data["ood"].texts],
                max_length=c.max_length, device=c.device, direct_pas_limit=c.direct_pas_limit,
                agreement_pairs=c.agreement_pairs, verify_half="a" if c.verify else None,
                verify_dir=self.rd.root / "verification", verify_stem=str(layer), progress=prog)
            if cache is None:
                return {}
        else:
            cache = self._probe_cache(layer)
        mats: dict[str, np.ndarray] = {}
        info: dict[str, Any] = {}
        for h, ix in idx.items():
            # self-verify half a (the partitions under the plain method names are fitted on it)
            vt = [data["probe"].texts[i] for i in ix] if (c.verify and h == "a") else None
            m_h, info[h] = (cache.mats[h], cache.info[h]) if self.dist.world > 1 else self._valuate(
                subset_cache(cache, ix), prog, verify_texts=vt, verify_stem=str(layer))
            mats.update({f"{k}_{h}": v for k, v in m_h.items()})
            mats[f"half_{h}_idx"] = np.asarray(ix, dtype=np.int64)
        ood_acts = cache.other_acts[0] if self.dist.world > 1 else layer_cache(
            pm, text_batches(tok, data["ood"].texts, batch_size=16, max_length=c.max_length), layer,
            device=c.device, progress=prog).acts
        from hedonic_neurons.experiments.common import tracking_inputs

        # tracking follows the half-a partitions (plain method names): their evaluation half's activations
        mats.update(tracking_inputs(pm, layer, cache.W_down, cache.acts[idx[eval_half("a", self.cfg.crossfit)]]))
        pas_kind = info["a"]["pas"]
        self.rd.save_matrices(str(layer), mats, metadata={
            "task": c.task, "n_samples": cache.n_samples, "ablation": cache.ablation, "pas": pas_kind,
            "halves": ",".join(f"{h}:{ix.size}" for h, ix in idx.items()), "crossfit": c.crossfit})
        from safetensors.numpy import save_file

        path = self.rd.root / "activations" / f"{layer}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"acts_probe": np.ascontiguousarray(cache.acts), "acts_ood": np.ascontiguousarray(ood_acts)},
                  str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)
        out = {"n_players": cache.n_players, "pas": pas_kind, "halves": {h: int(ix.size) for h, ix in idx.items()},
               "per_half": info}
        if "agreement_pairs" in info["a"]:  # the Hessian path: its exact agreement, per half
            out["agreement_pairs"] = info["a"]["agreement_pairs"]
            out["agreement_pearson"] = {h: i["agreement_pearson"] for h, i in info.items()}
        return out

    def _probe_cache(self, layer: int):
        """The layer cache (H, coef, C, tail, acts) of the probe pairs, kept in memory for the run."""
        from hedonic_neurons.models.extract import layer_cache, text_batches

        if layer not in self._caches:
            pm, tok = self.model()
            data = load_data(self.rd)
            prog = not self.quiet and not os.environ.get("TQDM_DISABLE")
            self._caches = {layer: layer_cache(pm, text_batches(tok, data["probe"].texts, batch_size=16,
                                                                max_length=self.cfg.max_length),
                                               layer, device=self.cfg.device, progress=prog)}
        return self._caches[layer]

    def stage_partitions(self, layer: int, seed: int) -> dict:
        """On each half of the probe pairs: Hedonic-PAS, Hedonic-OCA, Leiden (positive part of the PAS phi)
        and the baselines matched to Hedonic-PAS on that half's activations (`experiments.common`)."""
        from hedonic_neurons.experiments.common import fit_half_partitions

        mats = self.rd.load_matrices(str(layer))
        acts = self._acts(layer)["acts_probe"]
        out = {h: fit_half_partitions(self.rd, layer, h, mats, acts, self.cfg.solver, seed, valuations=("pas", "oca"))
               for h in fit_halves(self.cfg.crossfit)}
        return {"n_coalitions": out}

    def _acts(self, layer: int) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        return load_file(str(self.rd.root / "activations" / f"{layer}.safetensors"))

    def _exact_pair_means(self, layer: int, half: str, coalitions: list[np.ndarray], seed: int) -> list[float]:
        """Pair of each coalition from exact pair ablations on the probe pairs of `half` (non-norm tails), at
        most `synergy_pairs` pairs per coalition (models.valuate.exact_pair_means)."""
        from hedonic_neurons.models.valuate import exact_pair_means

        return exact_pair_means(lambda: subset_cache(self._probe_cache(layer), self.halves()[half]), coalitions,
                                self.cfg.synergy_pairs, seed)

    def stage_evaluate(self, layer: int, seed: int) -> dict:
        c = self.cfg
        data = load_data(self.rd)
        acts = self._acts(layer)
        mats = self.rd.load_matrices(str(layer))
        pm, tok = self.model()
        ood = data["ood"]
        fit = fit_halves(self.cfg.crossfit)
        parts = {h: {m: self.rd.load_partition(str(layer), partition_name(m, h, seed))["labels"] for m in METHODS}
                 for h in fit}
        partitions = parts["a"]  # extrinsic metrics (OOD drop, alignment, predictivity): the half-a partitions
        subsets = {m: coalition_subset(lab, c.n_largest, c.n_random, seed) for m, lab in partitions.items()}
        n = acts["acts_probe"].shape[1]
        flat = [(m, coal) for m in METHODS for coal in subsets[m]]
        # The ablations (the run's dearest part: K coalitions x pairs through the later layers) use the first
        # `n_ood_drop` OOD pairs, whole queries; a coalition already ablated at this layer under another
        # seed (same members: Ward and often the Hedonic partitions repeat) is not ablated again.
        ood_d = drop_subset(ood, c.n_ood_drop)
        known, M0 = self._known_drops(layer)
        todo = [r for r, (_, coal) in enumerate(flat) if tuple(coal.tolist()) not in known]
        masks = np.zeros((len(todo), n), dtype=bool)
        for q, r in enumerate(todo):
            masks[q, flat[r][1]] = True
        if todo or M0 is None:
            base, abl = ablation_scores(pm, tok, ood_d.texts, layer, masks, batch_size=c.eval_batch,
                                        coalition_batch=c.coalition_batch, max_length=c.max_length,
                                        device=c.device, progress=not self.quiet)
            M0 = task_metric(c.task, base, ood_d)["M"]
            for q, r in enumerate(todo):
                known[tuple(flat[r][1].tolist())] = M0 - task_metric(c.task, abl[q], ood_d)["M"]
        exact = "pas_se_a" in mats  # the valuations stage saved exact PAS for all pairs
        # Pair / Ratio, cross-fitted (metrics.partition_metrics.synergy_by_half). Exact PAS: every coalition of
        # size >= 2; otherwise the evaluated subset (n_largest + n_random) from exact pair ablations on each half.
        sub = None if exact else {h: {m: coalition_subset(parts[h][m], c.n_largest, c.n_random, seed)
                                      for m in METHODS} for h in fit}
        syn = synergy_by_half(parts, mats, c.crossfit, METHODS, subsets=sub,
                              pair_means=lambda v, coals: self._exact_pair_means(layer, v, coals, seed))
        drops = [known[tuple(coal.tolist())] for _, coal in flat]
        rows = []
        per_method = {}
        for m in METHODS:
            d = [drops[r] for r, (mm, _) in enumerate(flat) if mm == m]
            per_method[m] = {
                **method_scores({h: parts[h][m] for h in fit}, {h: syn[h][m] for h in fit}, d,
                                acts_probe=acts["acts_probe"], acts_ood=acts["acts_ood"], y_probe=data["probe"].y_std,
                                y_ood=ood.y_std, features_ood=ood.features, crossfit=c.crossfit,
                                max_size=c.solver.max_size),
                "synergy_on": "all coalitions >= 2 (exact PAS)" if exact else
                f"evaluated subset (exact pair ablations, <= {c.synergy_pairs} pairs per coalition)",
                "scored_on": "the other half (cross-fitted)" if c.crossfit else "the same inputs (in-sample)",
            }
            for coal, dr in zip(subsets[m], d, strict=True):
                rows.append({"layer": layer, "seed": seed, "method": m, "size": int(coal.size), "ood_drop": dr,
                             "members": coal.tolist()})
        write_json(self.rd.root / "eval" / f"{layer}_s{seed}.json",
                   {"layer": layer, "seed": seed, "M_full": M0, "n_ood_drop": len(ood_d.texts),
                    "n_ablated": len(todo), "per_method": per_method, "coalitions": rows,
                    "subset_rule": subset_rule(self.cfg)})
        return {"M_full": M0, "n_ablated": len(todo), "n_reused": len(flat) - len(todo)}

    def _known_drops(self, layer: int) -> tuple[dict[tuple[int, ...], float], float | None]:
        """OOD drops already measured at `layer` under other seeds ({members: drop}) and M of the full model."""
        known: dict[tuple[int, ...], float] = {}
        M0 = None
        for f in sorted((self.rd.root / "eval").glob(f"{layer}_s*.json")):
            e = json.loads(f.read_text())
            M0 = e["M_full"]
            known.update({tuple(r["members"]): r["ood_drop"] for r in e["coalitions"]})
        return known, M0

    def stage_tables(self) -> dict:
        return write_tables(self.rd, self.cfg)

    def stage_tracking(self) -> dict:
        from hedonic_neurons.report.sankey import track_and_draw

        if len(self.cfg.layers) < 2:
            return {"skipped": "one layer"}
        # every method and seed on disk, with controls; the half-a partitions only (track_acts are read on
        # their evaluation half), not the half-b ones (`.b`) that exist for the split-half scores
        methods = sorted({m for by in self.rd.partitions().values() for m in by if not m.endswith(".b")})
        track_and_draw(self.rd.root, methods=methods or None, paper_task=self.cfg.task)
        return {}

    def stage_report(self) -> dict:
        from hedonic_neurons.report import build_report

        return {"path": str(build_report(self.rd.root, track=False))}

    def _partitions_in_pool(self) -> None:
        names = [f"partitions:{layer}:{seed}" for layer in self.cfg.layers for seed in range(self.cfg.seeds)]
        # under torchrun: rank 0 runs the pool while the others wait, as for any stage of its own
        with self.dist.stage(lambda: all(self.sr.fresh(n) for n in names)) as go:
            if not go:
                return
            ran = self.sr.run_parallel([((f"partitions:{layer}:{seed}",), (self.cfg, str(self.rd.root), layer, seed))
                                        for layer in self.cfg.layers for seed in range(self.cfg.seeds)],
                                       _partition_job, self.jobs)
            for _, infos in ran:
                for name, info in infos.items():
                    self.timer.record(name, info["seconds"])

    def run(self) -> RunDir:
        c = self.cfg
        t0 = time.perf_counter()
        self._check_config()
        self._stage("data", self.stage_data)
        self._stage("finetune", self.stage_finetune)
        # Layer by layer, so the probe cache of a layer (needed again by a non-norm tail's exact pair
        # ablations in evaluate) is built once and dropped before the next layer's.
        if self.dist.is_main:
            import torch

            record_runtime(self.rd, torch.get_num_threads(), self.jobs, world_size=self.dist.world)
        if self.jobs > 1:
            # per-layer parallelism (docs/scale.md): every layer's valuations, then the partition stages of
            # all layers and seeds side by side (they read only the matrices and activations); evaluate
            # needs the model, so it stays here, layer by layer
            for layer in c.layers:
                self._stage(f"valuations:{layer}", lambda layer=layer: self.stage_valuations(layer))
            self._partitions_in_pool()
        for layer in c.layers:
            self._stage(f"valuations:{layer}", lambda layer=layer: self.stage_valuations(layer))
            for seed in range(c.seeds):
                self._stage(f"partitions:{layer}:{seed}", lambda layer=layer, seed=seed:
                            self.stage_partitions(layer, seed))
            for seed in range(c.seeds):
                self._stage(f"evaluate:{layer}:{seed}", lambda layer=layer, seed=seed: self.stage_evaluate(layer, seed))
        self._stage("tables", self.stage_tables)
        if c.track:
            self._stage("tracking", self.stage_tracking)
        if c.report:
            self._stage("report", self.stage_report)
        if not self.dist.is_main:  # rank 0 writes the run directory
            return self.rd
        self.timer.record("total (this invocation)", time.perf_counter() - t0)
        rows = [{"stage": k, "seconds": v} for k, v in self.timer.times.items()]
        self.rd.save_table("timings", rows, title="Seconds per stage (as last run)")
        return self.rd


def _partition_job(arg: tuple) -> dict:
    """Worker of per-layer parallelism (`jobs` > 1): one partition stage, from the run directory's matrices and
    activations; the parent marks it done with the info returned, as `_stage` does."""
    cfg, root, layer, seed = arg
    exp = RerankerExperiment(cfg, root, quiet=True)
    t = time.perf_counter()
    info = exp.stage_partitions(layer, seed) or {}
    return {f"partitions:{layer}:{seed}": {**info, "seconds": round(time.perf_counter() - t, 2)}}


def probe_halves(cfg: RerankerConfig, qids: Sequence[str]) -> dict[str, np.ndarray]:
    """{half: probe-pair indices}: two seeded halves (seed `seed0`) of whole queries, so no query's pairs are
    on both sides; {"a": all} without cross-fitting. One-line error when a half gets < MIN_HALF pairs."""
    return crossfit_halves(len(qids), cfg.crossfit, cfg.seed0, min_half=MIN_HALF, groups=np.asarray(qids),
                           what="probe pairs")


def run_reranker(cfg: RerankerConfig, out: str | Path, quiet: bool = False, model_loader=None,
                 force: bool = False, jobs: int = 1) -> RunDir:
    """Run or resume the reranker experiment described by `cfg` into `out`: stages whose config fields and
    inputs are unchanged are reused, the others recomputed (`force`: all of them). `jobs` > 1: the partition
    stages of all layers and seeds on that many worker processes (same files)."""
    from hedonic_neurons import notices

    exp = RerankerExperiment(cfg, out, quiet=quiet, model_loader=model_loader, force=force, jobs=jobs)
    # joins the process group of a torchrun launch (nothing to join on one process); fallbacks that changed a
    # result go to warnings.txt, summary.md and report.html
    with exp.dist, notices.collect(exp.rd.root):
        return exp.run()
