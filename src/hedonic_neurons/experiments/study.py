"""`study`: from your model and your texts to coalitions, held-out scores, tracking, cards and a report.

The general pipeline; the MNIST and reranker experiments are special cases with their own data stages.
Stages (each writes its files atomically and a marker in RUN/stages/, so an interrupted run resumes from the
last finished one; a changed config field or a changed text file recomputes exactly the stages that read it):

1. ``data``: the texts (and labels) read and checked -> RUN/data/texts.json.
2. ``valuations:<layer>``: one forward pass over the texts reads every layer asked for at the target's
   samples (for a causal LM: (text, position) pairs read at the logit of the observed next token); the
   samples are split into two halves of whole texts (cross-fitting: no text has positions in both halves);
   per half OCA and exact PAS (+ standard errors, the singles psi) -> RUN/matrices/<layer>.safetensors
   (keys ending ``_a`` / ``_b``), with the tracking inputs; half a is self-verified against direct ablation
   through the model's own modules.
3. ``partitions:<layer>``: on each half, the default hedonic solver (``hedonic_pas``), Leiden on the positive
   part of the same PAS (``leiden``) and the baselines matched to the hedonic size histogram (``random``,
   ``kmeans``, ``ward``) -> RUN/partitions/<layer>/<method>[.b].json.
4. ``evaluate:<layer>``: held-out Pair (each half's partition scored with the other half's PAS, both
   directions), its 95 % CI over coalitions, in-sample Pair beside it (labelled), split-half ARI, coverage,
   the solver's Nash stability -> RUN/eval/<layer>.json.
5. ``tables``: tables/heldout.csv|md and summary.md.
6. ``tracking``: coalitions followed across consecutive layers (tracking/, views/).
7. ``cards``: one card per coalition of size >= 2 (RUN/cards.json).
8. ``report``: RUN/report.html.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np

from hedonic_neurons.layers import check_layers, format_layers, parse_layers
from hedonic_neurons.metrics.crossfit import (
    coalitions_of,
    coverage,
    crossfit_halves,
    eval_half,
    fit_halves,
    partition_name,
    split_half_ari,
)
from hedonic_neurons.partition import SolverConfig
from hedonic_neurons.rundir import RunDir, write_json
from hedonic_neurons.stages import StageRunner, StageTimer
from hedonic_neurons.tracking.events import RULE_VERSION as TRACKING_VERSION

log = logging.getLogger(__name__)

__all__ = ["StudyConfig", "Study", "study", "METHODS", "MIN_TEXTS", "default_study_layers"]

METHODS = ("hedonic_pas", "leiden", "random", "kmeans", "ward")
LABELS = {"hedonic_pas": "Hedonic-PAS", "leiden": "Leiden", "random": "Random", "kmeans": "k-means",
          "ward": "Ward"}
MIN_TEXTS = 8  # cross-fitting deals whole texts to two halves: at least 4 texts each
MIN_HALF_SAMPLES = 8


def default_study_layers(n_layers: int) -> tuple[int, ...]:
    """Four consecutive layers around the middle of the model (all of them for a model of <= 4 layers)."""
    if n_layers <= 4:
        return tuple(range(n_layers))
    mid = n_layers // 2
    return tuple(range(mid - 2, mid + 2))


@dataclasses.dataclass
class StudyConfig:
    """Everything that decides a study run (saved as RUN/config.json, loadable again)."""

    model: str = "smollm2"
    texts: str | None = None  # a text file (one text per line), a .jsonl ({"text", "label"}) or a .csv/.tsv
    texts_digest: str = ""  # sha256 of the texts and labels: a changed file recomputes what read it
    layers: tuple[int, ...] | None = None  # None: four layers around the middle (default_study_layers)
    target: str = "auto"  # auto | next-token | label | predicted | head (docs/study.md)
    positions: str = "all"  # next-token target: every position with an observed next token, or the last one
    max_samples: int | None = 4096  # (text, position) samples drawn at random (seeded) when there are more
    allow_new_head: bool = False  # measure a newly initialised classification head knowingly
    max_length: int = 64  # tokens per text (longer texts are truncated)
    batch_size: int = 16
    device: str = "cpu"
    seed: int = 0  # sample draw, halves, solver and baselines
    solver: SolverConfig = field(default_factory=SolverConfig)
    crossfit: bool = True
    baselines: bool = True  # random, k-means and Ward matched to the hedonic size histogram
    verify: bool = True  # self-verify each layer's valuations against the model's own modules
    track: bool = True
    cards: bool = True
    n_examples: int = 5  # top-activating examples per card
    n_tokens: int = 10  # promoted / suppressed output tokens per card
    report: bool = True

    def __post_init__(self) -> None:
        if self.layers is not None:
            self.layers = parse_layers(self.layers)
        if isinstance(self.solver, dict):
            self.solver = SolverConfig(**self.solver)
        if self.positions not in ("all", "last"):
            raise ValueError(f"positions {self.positions!r}: use 'all' or 'last'")
        if self.max_samples is not None and int(self.max_samples) < 2 * MIN_HALF_SAMPLES:
            raise ValueError(f"max_samples {self.max_samples}: give at least {2 * MIN_HALF_SAMPLES} (or none)")


def _digest(texts: Sequence[str], labels: Sequence[Any] | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([list(texts), None if labels is None else list(labels)]).encode())
    return h.hexdigest()[:16]


def read_study_texts(source: str | Sequence[str] | None, labels: Sequence[Any] | None = None
                     ) -> tuple[list[str], list[Any] | None, str]:
    """(texts, labels or None, description) from a file path, a list of texts, or None (the embedded pool)."""
    from hedonic_neurons.data.texts import read_texts

    if source is None:
        from hedonic_neurons.ir.embedded import passage_texts

        texts = list(passage_texts(None))
        return texts, None, "the embedded Wikipedia passage pool (hedonic-neurons fetch ir)"
    if isinstance(source, (str, Path)):
        texts, labels = read_texts(source, min_texts=0)  # the minimum is a study's own, checked below
        desc = str(source)
    else:
        texts = [str(t) for t in source]
        desc = f"{len(texts)} texts given in Python"
    if len(texts) < MIN_TEXTS:
        raise ValueError(f"{desc} holds {len(texts)} text(s): a study needs at least {MIN_TEXTS} (two halves of "
                         f"{MIN_TEXTS // 2} whole texts for cross-fitting)")
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"{len(labels)} labels for {len(texts)} texts: give one label per text")
    return texts, labels, desc


class Study:
    """Runs (or resumes) one study into `out`. After `run()`: `rd` (the RunDir), `heldout` (one row per layer
    and method), `partitions` ({layer: {method: labels}}), `cards` (list of card dicts) and `target`."""

    def __init__(self, cfg: StudyConfig, out: str | Path, *, texts: Sequence[str] | None = None,
                 labels: Sequence[Any] | None = None, quiet: bool = False, force: bool = False,
                 model_loader=None):
        self.cfg = cfg
        self.out = Path(out)
        self.quiet = quiet
        self.force = force
        self._loader = model_loader
        self._texts_in = texts
        self._labels_in = labels
        self._model = None
        self._batches = None
        self._caches: dict[int, Any] = {}
        self.target_kind = ""
        self.heldout: list[dict] = []
        self.partitions: dict[int, dict[str, np.ndarray]] = {}
        self.cards: list[dict] = []
        self.target: dict = {}

    # ---- set-up: everything checked before a file is written --------------------------------------
    def check(self) -> None:
        """Read the texts, check the layers against the model's config (before any weight loads), fill the
        digest: every bad input fails here, with one line, before the run directory exists."""
        c = self.cfg
        texts, labels, desc = read_study_texts(self._texts_in if self._texts_in is not None else c.texts,
                                               self._labels_in)
        self.texts, self.labels, self.texts_desc = texts, labels, desc
        c.texts_digest = _digest(texts, labels)
        if self._loader is None:
            from hedonic_neurons.models import precheck

            precheck.precheck_config(c.model, causal=c.target in ("auto", "next-token"))
            if c.layers is not None:  # from config.json alone, before any weight loads
                precheck.check_layers_config(c.model, c.layers)

    def _check_layers(self, n_layers: int) -> None:
        c = self.cfg
        if c.layers is None:
            c.layers = default_study_layers(n_layers)
        check_layers(c.layers, range(n_layers), f"this model ({n_layers} layers)")

    def model(self):
        """(model, tokenizer), loaded once for the target asked for; the target is resolved and checked."""
        if self._model is None:
            c = self.cfg
            labels_given = self.labels is not None
            if self._loader is not None:
                self._model = self._loader()
            else:
                from hedonic_neurons.models.loading import load_model

                self._model = load_model(c.model, target=None if c.target == "auto" else c.target,
                                         allow_new_head=c.allow_new_head, labels_given=labels_given, seed=c.seed)
            m, tok = self._model
            from hedonic_neurons.models import get_adapter
            from hedonic_neurons.models.targets import check_target, model_target

            self._check_layers(get_adapter(m).n_layers)
            self.target_kind = model_target(m, None if c.target == "auto" else c.target, labels_given)
            check_target(m, self.target_kind, self.labels, len(self.texts))
            if tok is None:
                raise ValueError(f"no tokenizer came with {c.model}: put its tokenizer files in the model directory")
            if c.device != "cpu":
                self._model = (m.to(c.device), tok)
        return self._model

    def samples(self):
        """The target's sample batches over all texts (tokenised once; next-token: the drawn positions)."""
        if self._batches is None:
            from hedonic_neurons.models.targets import target_batches

            c = self.cfg
            model, tok = self.model()
            self._batches = target_batches(tok, self.texts, target=self.target_kind, positions=c.positions,
                                           max_samples=c.max_samples, seed=c.seed, labels=self.labels,
                                           batch_size=c.batch_size, max_length=c.max_length, model=model,
                                           device=c.device)
        return self._batches

    # ---- stages --------------------------------------------------------------------------------
    def plan(self) -> StageRunner:
        c, sr = self.cfg, StageRunner(self.rd, self.cfg)
        sr.add("data", ("texts_digest",), outputs=("data",))
        val = ("model", "target", "positions", "max_samples", "allow_new_head", "max_length", "seed", "crossfit",
               "verify")
        evals = []
        for layer in c.layers:
            sr.add(f"valuations:{layer}", val, ("data",), outputs=(f"matrices/{layer}.safetensors",
                                                                  f"activations/{layer}.safetensors"))
            sr.add(f"partitions:{layer}", ("solver", "baselines"), (f"valuations:{layer}",),
                   outputs=tuple(f"partitions/{layer}/{partition_name(m, h)}.json" for m in METHODS
                                 for h in ("a", "b")))
            sr.add(f"evaluate:{layer}", (), (f"partitions:{layer}",), outputs=(f"eval/{layer}.json",))
            evals.append(f"evaluate:{layer}")
        sr.add("tables", (), tuple(evals), outputs=("tables/heldout.csv", "tables/heldout.md", "summary.md"))
        last = "tables"
        if c.track and len(c.layers) > 1:
            sr.add("tracking", (), (last,), outputs=("tracking",), version=TRACKING_VERSION)
            last = "tracking"
        if c.cards:
            sr.add("cards", ("n_examples", "n_tokens", "max_length", "batch_size"), (last,),
                   outputs=("cards.json", "cards.md"))
            last = "cards"
        if c.report:
            sr.add("report", (), (last,), outputs=("report.html",))
        return sr

    def _stage(self, name: str, fn) -> None:
        if self.sr.fresh(name):
            return
        t = time.perf_counter()
        info = fn() or {}
        dt = time.perf_counter() - t
        self.sr.done(name, {**info, "seconds": round(dt, 2)})
        self.timer.record(name, dt)

    def stage_data(self) -> dict:
        write_json(self.rd.root / "data" / "texts.json",
                   {"source": self.texts_desc, "texts": self.texts, "labels": self.labels,
                    "digest": self.cfg.texts_digest})
        return {"n_texts": len(self.texts)}

    def _progress(self) -> bool:
        return not self.quiet and not os.environ.get("TQDM_DISABLE")

    def _build_caches(self, layers: Sequence[int]) -> None:
        """One forward pass over the texts for every layer in `layers` (the target's samples)."""
        from hedonic_neurons.models.extract import layer_caches
        from hedonic_neurons.models.targets import describe_target

        c = self.cfg
        model, _ = self.model()
        self._caches.update(layer_caches(model, self.samples(), list(layers), device=c.device,
                                         progress=self._progress()))
        cache = self._caches[layers[0]]
        self.sample_text = np.asarray(cache.sample_text if cache.sample_text is not None
                                      else np.arange(cache.n_samples), dtype=np.int64)
        self.sample_pos = None if cache.sample_pos is None else np.asarray(cache.sample_pos, dtype=np.int64)
        self.target = describe_target(model, self.target_kind, positions=c.positions, n_samples=cache.n_samples,
                                      max_samples=c.max_samples, n_texts=len(self.texts), seed=c.seed)

    def cache(self, layer: int):
        if layer not in self._caches:
            todo = [x for x in self.cfg.layers if x not in self._caches and not self.sr.fresh(f"valuations:{x}")]
            self._build_caches(sorted(set(todo) | {layer}))
        return self._caches[layer]

    def halves(self) -> dict[str, np.ndarray]:
        """{half: sample indices}: two seeded halves of whole texts (positions of one text never split)."""
        return crossfit_halves(self.sample_text.size, self.cfg.crossfit, self.cfg.seed, min_half=MIN_HALF_SAMPLES,
                               groups=self.sample_text, what="samples (whole texts per half)")

    def stage_valuations(self, layer: int) -> dict:
        from hedonic_neurons.models.extract import subset_cache
        from hedonic_neurons.models.valuate import pas_valuations

        c = self.cfg
        cache = self.cache(layer)
        idx = self.halves()
        mats: dict[str, np.ndarray] = {}
        info: dict[str, Any] = {}
        for h, ix in idx.items():
            v, m_h, info[h] = pas_valuations(subset_cache(cache, ix), 2e7, 1000, progress=self._progress())
            if c.verify and h == "a":
                info[h]["verification"] = self._verify(layer, v, ix)
            mats.update({f"{k}_{h}": val for k, val in m_h.items()})
            mats[f"half_{h}_idx"] = np.asarray(ix, dtype=np.int64)
        from hedonic_neurons.experiments.common import tracking_inputs

        model, _ = self.model()
        mats.update(tracking_inputs(model, layer, cache.W_down, cache.acts[idx[eval_half("a", self.cfg.crossfit)]]))
        mats["sample_text"] = self.sample_text
        if self.sample_pos is not None:
            mats["sample_pos"] = self.sample_pos
        self.rd.save_matrices(str(layer), mats, metadata={
            "target": json.dumps(self.target), "n_samples": cache.n_samples, "ablation": cache.ablation,
            "pas": info["a"]["pas"], "halves": ",".join(f"{h}:{ix.size}" for h, ix in idx.items())})
        from safetensors.numpy import save_file

        path = self.rd.root / "activations" / f"{layer}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"acts": np.ascontiguousarray(cache.acts)}, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)
        write_json(self.rd.root / "valuations" / f"{layer}.json",
                   {"layer": layer, "target": self.target, "n_samples": cache.n_samples,
                    "n_players": cache.n_players, "halves": {h: int(ix.size) for h, ix in idx.items()},
                    "per_half": info})
        return {"n_players": cache.n_players, "n_samples": cache.n_samples, "pas": info["a"]["pas"]}

    def _verify(self, layer: int, v, ix: np.ndarray) -> dict:
        from hedonic_neurons.models.verify import save_verification, verify_valuations

        model, _ = self.model()
        from hedonic_neurons.models.targets import subset_sample_batches

        res = verify_valuations(model, subset_sample_batches(self.samples(), ix), v, device=self.cfg.device)
        save_verification(res, self.rd.root / "verification", stem=str(layer))
        return {"passed": bool(res.get("passed")), "tolerance": res.get("tolerance")}

    def stage_partitions(self, layer: int) -> dict:
        """On each half: the default solver on PAS, Leiden on the same PAS and the matched baselines, fitted and saved
        as the reranker experiment does (`experiments.common.fit_half_partitions`)."""
        from hedonic_neurons.experiments.common import fit_half_partitions

        c = self.cfg
        mats = self.rd.load_matrices(str(layer))
        # one partition per method and half, whatever the seed: files under the plain method names
        out = {h: fit_half_partitions(self.rd, layer, h, mats, self._acts(layer), c.solver, c.seed,
                                      baselines=c.baselines, name_seed=0) for h in fit_halves(c.crossfit)}
        return {"n_coalitions": out}

    def _acts(self, layer: int) -> np.ndarray:
        from safetensors.numpy import load_file

        return load_file(str(self.rd.root / "activations" / f"{layer}.safetensors"))["acts"]

    def methods(self) -> tuple[str, ...]:
        return METHODS if self.cfg.baselines else METHODS[:2]

    def stage_evaluate(self, layer: int) -> dict:
        """Held-out Pair and Ratio (each half's partition scored with the other half's PAS, both directions pooled;
        `metrics.partition_metrics.synergy_by_half`), 95 % CI over coalitions, in-sample Pair beside it."""
        from hedonic_neurons.metrics.partition_metrics import synergy_by_half
        from hedonic_neurons.metrics.stats import mean_lo_hi

        c = self.cfg
        mats = self.rd.load_matrices(str(layer))
        fit = fit_halves(c.crossfit)
        parts = {h: {m: self.rd.load_partition(str(layer), partition_name(m, h)) for m in self.methods()}
                 for h in fit}
        syn = synergy_by_half({h: {m: p["labels"] for m, p in by.items()} for h, by in parts.items()}, mats,
                              c.crossfit, self.methods())
        per_method: dict[str, dict] = {}
        for m in self.methods():
            rows = [r for h in fit for r in syn[h][m]]
            mean, lo, hi = mean_lo_hi([r["pair"] for r in rows])
            labels = {h: parts[h][m]["labels"] for h in fit}
            per_method[m] = {
                "pair": mean, "pair_lo": lo, "pair_hi": hi,
                "ratio": float(np.nanmean([r["ratio"] for r in rows])) if rows else float("nan"),
                "pair_in_sample": float(np.mean([r["pair_in_sample"] for r in rows])) if rows else float("nan"),
                "ari": split_half_ari(labels["a"], labels["b"]) if "b" in labels else float("nan"),
                "coverage": float(np.mean([coverage(labels[h], 2, c.solver.max_size) for h in fit])),
                "n_coalitions_ge2": int(np.mean([len(coalitions_of(labels[h], 2)) for h in fit])),
                "n_scored": len(rows),
                "nash_stable": _nash_stable(parts["a"][m].get("stability") or {}) if m == "hedonic_pas" else None,
                "scored_on": "the other half (cross-fitted)" if c.crossfit else "the same inputs (in-sample)",
            }
        write_json(self.rd.root / "eval" / f"{layer}.json", {"layer": layer, "per_method": per_method})
        return {"pair": {m: v["pair"] for m, v in per_method.items()}}

    def stage_tables(self) -> dict:
        rows = []
        for layer in self.cfg.layers:
            ev = json.loads((self.rd.root / "eval" / f"{layer}.json").read_text())["per_method"]
            for m in self.methods():
                r = ev[m]
                rows.append({"layer": layer, "method": LABELS[m], "heldout_pair": r["pair"],
                             "pair_ci_lo": r["pair_lo"], "pair_ci_hi": r["pair_hi"],
                             "in_sample_pair": r["pair_in_sample"], "split_half_ari": r["ari"],
                             "coverage_2_10": r["coverage"], "n_coalitions_ge2": r["n_coalitions_ge2"],
                             "nash_stable": "" if r["nash_stable"] is None else ("yes" if r["nash_stable"] else "no")})
        self.heldout = rows
        self.rd.save_table("heldout", rows, title="Held-out Pair (scored on the other half of the texts), "
                           "95 % CI over coalitions; in-sample Pair beside it, labelled; split-half ARI; share of "
                           "channels in coalitions of 2-10")
        (self.rd.root / "summary.md").write_text(self.summary(rows))
        return {"rows": len(rows)}

    def summary(self, rows: list[dict]) -> str:
        c = self.cfg
        t = self.target or _target_from_disk(self.rd.root, c.layers)
        lines = [f"# Study of {c.model}", "",
                 f"- **Texts**: {len(self.texts)} from {self.texts_desc}.",
                 f"- **Target**: {t.get('readout', t.get('kind', '?'))} "
                 f"({t.get('kind', '?')}; positions {t.get('positions', '-')}; {t.get('n_samples', '?')} samples).",
                 f"- **Layers**: {format_layers(c.layers)} (MLP channels).",
                 "- **Scoring**: each partition is fitted on one half of the texts and scored on the other "
                 "(held-out Pair); in-sample Pair is shown beside it and never used for a verdict.", ""]
        if t.get("head_is_new"):
            lines.insert(4, "- **Warning: the head is newly initialised** (asked for with --allow-new-head): "
                            "these valuations measure a random projection of the residual stream, not what the "
                            "model computes.")
        lines += ["## Held-out synergy, per layer", ""]
        for layer in c.layers:
            by = {r["method"]: r for r in rows if r["layer"] == layer}
            h, ld = by.get("Hedonic-PAS"), by.get("Leiden")
            if h is None or ld is None:
                continue
            verdict = _verdict(h, ld)
            stable = {"yes": "Nash stable", "no": "NOT Nash stable (the dynamics stopped in a cycle or at the sweep "
                      "limit; see the partition's stability record)", "": ""}[h["nash_stable"]]
            lines.append(f"- layer {layer}: Hedonic-PAS held-out Pair {h['heldout_pair']:.3g} "
                         f"[{h['pair_ci_lo']:.3g}, {h['pair_ci_hi']:.3g}] vs Leiden {ld['heldout_pair']:.3g} "
                         f"[{ld['pair_ci_lo']:.3g}, {ld['pair_ci_hi']:.3g}]: {verdict}; split-half ARI "
                         f"{h['split_half_ari']:.3f} vs {ld['split_half_ari']:.3f}; coverage "
                         f"{h['coverage_2_10']:.0%} vs {ld['coverage_2_10']:.0%}; {stable}.")
        lines += ["", "Table: tables/heldout.md. Cards: cards.json (one per coalition of size >= 2). "
                  "Report: report.html.", ""]
        from hedonic_neurons import notices

        return "\n".join(lines) + notices.markdown_section(self.rd.root)

    def stage_tracking(self) -> dict:
        from hedonic_neurons.report.sankey import track_and_draw

        track_and_draw(self.rd.root, methods=["hedonic_pas", "leiden"])
        return {}

    def stage_cards(self) -> dict:
        """A card per Hedonic-PAS coalition of size >= 2 (half-a partitions), its effects measured on the held-out
        half's samples, its top-activating examples over all texts, its direct effect and tracking partners."""
        from hedonic_neurons.models.extract import subset_cache
        from hedonic_neurons.report.cards import make_cards, write_cards

        c = self.cfg
        missing = [x for x in c.layers if x not in self._caches]
        if missing:
            self._build_caches(missing)
        model, tok = self.model()
        held = eval_half("a", c.crossfit)
        ix = self.halves()[held]
        labels, other, stable = {}, {}, {}
        for layer in c.layers:
            part = self.rd.load_partition(str(layer), "hedonic_pas")
            labels[layer] = part["labels"]
            stable[layer] = _nash_stable(part.get("stability") or {})
            if c.crossfit:
                other[layer] = self.rd.load_partition(str(layer), "hedonic_pas.b")["labels"]
        caches = {layer: subset_cache(self._caches[layer], ix) for layer in c.layers}
        self.cards = make_cards(model, tok, self.texts, labels, caches, other_labels=other or None,
                                run_dir=self.rd.root, stable=stable, target=self.target.get("readout", ""),
                                k_examples=c.n_examples, k_tokens=c.n_tokens, batch_size=c.batch_size,
                                max_length=c.max_length, device=c.device)
        write_cards(self.rd.root, self.cards)
        return {"n_cards": len(self.cards)}

    def stage_report(self) -> dict:
        from hedonic_neurons.report import build_report

        return {"path": str(build_report(self.rd.root, track=False))}

    # ---- run -----------------------------------------------------------------------------------
    def run(self) -> RunDir:
        """Run or resume every stage; `quiet` silences progress bars (the loaders' too) for the call."""
        before = os.environ.get("TQDM_DISABLE")
        if self.quiet:
            os.environ["TQDM_DISABLE"] = "1"
        try:
            return self._run()
        finally:
            if self.quiet and before is None:
                os.environ.pop("TQDM_DISABLE", None)

    def _run(self) -> RunDir:
        from hedonic_neurons import notices

        t0 = time.perf_counter()
        self.check()  # one line and no file written for bad input: texts and layers from the config first,
        self.samples()  # then the model, the target it can give and the samples the texts hold
        self.rd = RunDir(self.out)
        self.timer = StageTimer(self.rd, self.quiet, label="study")
        with notices.collect(self.rd.root):
            self.sr = self.plan()
            self.sr.prepare(force=self.force)
            self._stage("data", self.stage_data)
            for layer in self.cfg.layers:
                self._stage(f"valuations:{layer}", lambda layer=layer: self.stage_valuations(layer))
            for layer in self.cfg.layers:
                self._stage(f"partitions:{layer}", lambda layer=layer: self.stage_partitions(layer))
                self._stage(f"evaluate:{layer}", lambda layer=layer: self.stage_evaluate(layer))
            self._stage("tables", self.stage_tables)
            if "tracking" in self.sr.stages:
                self._stage("tracking", self.stage_tracking)
            if self.cfg.cards:
                self._stage("cards", self.stage_cards)
            if self.cfg.report:
                self._stage("report", self.stage_report)
        self.timer.record("total (this invocation)", time.perf_counter() - t0)
        self._load_results()
        return self.rd

    def _load_results(self) -> None:
        for layer in self.cfg.layers:
            self.partitions[layer] = {m: self.rd.load_partition(str(layer), m)["labels"] for m in self.methods()
                                      if self.rd.partition_path(str(layer), m).is_file()}
        p = self.rd.root / "tables" / "heldout.csv"
        if p.is_file() and not self.heldout:
            from hedonic_neurons.rundir import read_table

            self.heldout = read_table(p)
        if (self.rd.root / "cards.json").is_file() and not self.cards:
            self.cards = json.loads((self.rd.root / "cards.json").read_text())["cards"]
        if not self.target:
            self.target = _target_from_disk(self.rd.root, self.cfg.layers)


def _nash_stable(stab: dict) -> bool | None:
    """Nash stable: the dynamics settled (no cycle, no sweep limit) and no player could still improve."""
    if "nash_stable" not in stab:
        return None
    cycled = bool(stab.get("cycle_detected")) or bool(stab.get("tier2_cycle_detected"))
    return bool(stab["nash_stable"]) and not cycled and int(stab.get("improving_at_stop", 0) or 0) == 0


def _verdict(h: dict, ld: dict) -> str:
    a, alo, ahi = float(h["heldout_pair"]), float(h["pair_ci_lo"]), float(h["pair_ci_hi"])
    b, blo, bhi = float(ld["heldout_pair"]), float(ld["pair_ci_lo"]), float(ld["pair_ci_hi"])
    if not all(np.isfinite(x) for x in (a, b, alo, ahi, blo, bhi)):
        return "undecided (a CI is undefined: too few coalitions)"
    if alo > bhi:
        return "above Leiden, CIs apart"
    if ahi < blo:
        return "BELOW Leiden, CIs apart"
    return f"{'above' if a > b else 'below'} Leiden on the means, CIs overlap"


def _target_from_disk(root: Path, layers: Sequence[int] | None) -> dict:
    for layer in layers or ():
        p = Path(root) / "valuations" / f"{layer}.json"
        if p.is_file():
            return json.loads(p.read_text()).get("target", {})
    return {}


def study(model: str, texts: str | Sequence[str] | None = None, *, layers: str | Sequence[int] | None = None,
          out: str | Path = "runs/study", labels: Sequence[Any] | None = None, quiet: bool = False,
          force: bool = False, **options: Any) -> Study:
    """Run (or resume) a study of `model` on `texts` (a file path or a list of strings) and return the `Study`
    (its `rd`, `heldout`, `partitions`, `cards`, `target`). `options` are `StudyConfig` fields
    (target, positions, max_samples, solver, ...)."""
    path = texts if isinstance(texts, (str, Path)) or texts is None else None
    cfg = StudyConfig(model=str(model), texts=None if path is None else str(path), layers=parse_layers(layers),
                      **options)
    s = Study(cfg, out, texts=None if path is not None else list(texts), labels=labels, quiet=quiet, force=force)
    s.run()
    return s
