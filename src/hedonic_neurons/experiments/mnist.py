"""The MNIST experiment of the paper's appendix I, end to end, stage by stage and resumable.

Per seed: train the gated MLP (`models.gated_mlp`), then for every hidden layer h1..h5, on each of two
disjoint halves of the held-out digits (cross-fitting, `metrics.crossfit`): activations, OCA and exact
PAS over all 256 x 256 pairs (I.4), Hedonic-OCA, Hedonic-PAS and Leiden partitions, the three size-matched
baselines (I.5); then every metric of I.6 for each half's partitions on the OTHER half's digits and
valuation (held-out Pair / Ratio, in-sample beside), and the split-half ARI of each method's two partitions.
Per-neuron loss deltas (I.3) use the first held-out digits.
Negative controls (Table 9): a randomly initialised network and a label-shuffled one, layer h3, same
pipeline. Everything lands in a `RunDir`; each stage writes its files atomically and a marker, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hedonic_neurons.data.mnist import MnistSplit
from hedonic_neurons.metrics.crossfit import crossfit_halves, eval_half, fit_halves
from hedonic_neurons.metrics.crossfit import partition_name as part_name
from hedonic_neurons.models.gated_reads import hidden_at as _hidden
from hedonic_neurons.partition import SolverConfig
from hedonic_neurons.report.mnist_tables import (
    METHODS,
    _write_coalitions_csv,
    draw_digit_grids,
    write_accuracy_table,
    write_stability_table,
    write_summary,
    write_tables,
)
from hedonic_neurons.rundir import RunDir, matrix_key, write_json
from hedonic_neurons.runtime import pick_threads, record_runtime
from hedonic_neurons.stages import StageRunner
from hedonic_neurons.tracking.events import RULE_VERSION as TRACKING_VERSION

log = logging.getLogger(__name__)

MIN_HALF = 32  # cross-fitting: fewest held-out digits per half (PAS, purity, dAcc over fewer mean little)
ALL_LAYERS = ("h1", "h2", "h3", "h4", "h5")


@dataclass
class MnistConfig:
    """Every knob of the MNIST experiment (saved as config.json beside the results)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    layers: list[str] = field(default_factory=lambda: list(ALL_LAYERS))
    data: str | None = None  # None: the fetched npz; else an npz or a directory of IDX files
    n_train: int | None = None  # cap on training images (tests); None = all of the split
    n_test: int | None = None  # cap on held-out images (tests)
    test_fraction: float = 0.2
    split_seed: int = 0
    epochs: int = 20
    lr: float = 1e-3
    d_model: int = 256
    d_ff: int = 1024
    # solver (appendix I.4: m = 8e4, omega = 8e3 for MNIST); random_state is set per seed
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(m=80_000, omega=8_000))
    # metrics
    top_k: int = 128
    loss_delta_images: int = 256  # held-out images used for the per-neuron loss deltas (I.3)
    oca_weight: str = "next"  # "next": the weights that read the residual next; "identity": Pearson only
    controls: bool = True
    verify: bool = True  # self-verify each valuation against direct ablation through the model (models.verify)
    control_layer: str = "h3"
    control_seeds: list[int] | None = None  # None: every seed
    n_grids: int = 4
    # cross-fitting: the held-out digits are split into two seeded halves; partitions fitted on
    # one half's valuation are scored on the other's (and every other metric uses the other half's digits)
    crossfit: bool = True
    crossfit_seed: int = 0  # the same split for every network

    def __post_init__(self) -> None:
        if isinstance(self.solver, dict):
            self.solver = SolverConfig(**self.solver)
        bad = [layer for layer in self.layers if layer not in ALL_LAYERS]
        if bad or not self.layers:
            raise ValueError(f"unknown layers {bad or self.layers}: choose from {', '.join(ALL_LAYERS)}")
        if not self.seeds:
            raise ValueError("give at least one seed (--seeds N)")
        if self.oca_weight not in ("next", "identity"):
            raise ValueError(f"oca_weight {self.oca_weight!r}: use 'next' or 'identity'")
        if self.control_layer not in ALL_LAYERS:
            raise ValueError(f"control_layer {self.control_layer!r}: choose from {', '.join(ALL_LAYERS)}")
        for name in ("epochs", "solver.m", "solver.omega", "loss_delta_images", "n_train", "n_test"):
            v = getattr(self.solver, name[7:]) if name.startswith("solver.") else getattr(self, name)
            name = name.removeprefix("solver.")
            if v is not None and not (isinstance(v, int) and v >= 1):
                raise ValueError(f"--{name.replace('_', '-')} {v!r}: give a positive integer")


# flat keys of config.json files written before MnistConfig.solver existed -> their nested place
MNIST_MOVED = {k: f"solver.{k}" for k in ("k", "min_size", "max_size", "m", "omega", "epsilon", "delta")}


def _progress() -> bool:
    return os.environ.get("TQDM_DISABLE", "") in ("", "0")


# ---------------------------------------------------------------------------------------------------
# data and models
# ---------------------------------------------------------------------------------------------------


def load_data(cfg: MnistConfig) -> MnistSplit:
    """The stratified train / held-out split of `cfg.data` (same for every seed), capped for tests."""
    from hedonic_neurons.data.mnist import load_split

    return load_split(cfg.data, test_fraction=cfg.test_fraction, split_seed=cfg.split_seed, n_train=cfg.n_train,
                      n_test=cfg.n_test)


def _variants(cfg: MnistConfig) -> list[tuple[str, str, int]]:
    """(variant name, setting, seed): trained models per seed, then the negative controls."""
    out = [(f"seed{s}", "trained", s) for s in cfg.seeds]
    if cfg.controls:
        for s in (cfg.control_seeds if cfg.control_seeds is not None else cfg.seeds):
            out += [(f"random_init{s}", "random_init", s), (f"shuffled{s}", "shuffled", s)]
    return out


def _layers_of(cfg: MnistConfig, setting: str) -> list[str]:
    return list(cfg.layers) if setting == "trained" else [cfg.control_layer]


def stage_model(sr: StageRunner, cfg: MnistConfig, data: MnistSplit, variant: str, setting: str, seed: int):
    """Train (or just initialise) one model and save it as safetensors; reload it when already done."""
    import torch

    from hedonic_neurons.models.gated_mlp import (
        GatedMLPClassifier,
        accuracy,
        build_classifier,
        train_classifier,
    )

    rd = sr.rd
    path = rd.root / "models" / f"{variant}.safetensors"
    stage = f"model_{variant}"
    if sr.fresh(stage) and path.exists():
        return GatedMLPClassifier.load(path)
    torch.manual_seed(seed)
    model = build_classifier(seed, d_model=cfg.d_model, d_ff=cfg.d_ff)
    t0 = time.time()
    hist: dict = {"loss": []}
    if setting != "random_init":
        hist = train_classifier(model, data.X_train, data.y_train, epochs=cfg.epochs, lr=cfg.lr, seed=seed,
                                shuffle_labels=(setting == "shuffled"), progress=_progress())
    model.eval()
    info = {"variant": variant, "setting": setting, "seed": seed, "train_seconds": time.time() - t0,
            "train_loss": hist["loss"], "n_train": int(len(data.y_train)), "n_test": int(len(data.y_test)),
            "train_accuracy": accuracy(model, data.X_train, data.y_train),
            "test_accuracy": accuracy(model, data.X_test, data.y_test)}
    model.save(path, metadata={"variant": variant, "setting": setting, "seed": seed})
    write_json(rd.root / "models" / f"{variant}.json", info)
    sr.done(stage, info)
    log.info("%s: held-out accuracy %.4f (%.0f s)", variant, info["test_accuracy"], info["train_seconds"])
    return model


# ---------------------------------------------------------------------------------------------------
# valuations, partitions, metrics for one (variant, layer)
# ---------------------------------------------------------------------------------------------------


def halves(cfg: MnistConfig, n: int) -> dict[str, np.ndarray]:
    """{half: indices into the held-out digits}: two seeded disjoint halves, or {"a": all} without crossfit."""
    return crossfit_halves(n, cfg.crossfit, cfg.crossfit_seed, min_half=MIN_HALF, what="held-out digits")


def stage_valuations(sr: StageRunner, cfg: MnistConfig, model, data: MnistSplit, key: str, layer: str) -> dict:
    """OCA, exact PAS (+ standard errors, psi) on each half of the held-out digits, per-neuron loss deltas
    for one layer; saved as safetensors with the half in the key (``phi_pas_a``, ``phi_pas_b``,
    ``oca_se_a`` ...: the keys of rundir.MATRIX_KEYS). The valuations take the language models' path:
    `layer_cache` at the residual site of `GatedMLPAdapter` (zero ablation, the net's LayerNorm + head as
    the tail, OCA weighted by what reads h_l next), `valuations_from_cache` per half."""
    import dataclasses

    from hedonic_neurons.metrics.ablation import neuron_loss_delta
    from hedonic_neurons.models.extract import layer_cache, subset_cache
    from hedonic_neurons.models.valuate import valuations_from_cache
    from hedonic_neurons.valuations.oca import oca_se

    rd = sr.rd
    stage = f"valuations_{key}"
    if sr.fresh(stage) and rd.matrices_path(key).exists():
        return rd.load_matrices(key)
    li = int(layer[1:])
    cache = layer_cache(model, [(data.X_test, data.y_test)], li, site="residual", ablation="zero", progress=False)
    if cfg.oca_weight == "identity":
        cache = dataclasses.replace(cache, W_oca=None)
    H_all = cache.H
    idx = halves(cfg, H_all.shape[0])
    mats: dict[str, np.ndarray] = {}
    info: dict[str, float] = {"oca_s": 0.0, "pas_s": 0.0}
    logit_mean = {}
    for h, ix in idx.items():
        v = valuations_from_cache(subset_cache(cache, ix), ("oca", "pas"), pas_dtype=np.float32,
                                  oca_dtype=np.float64, progress=False)
        oca_err = oca_se(cache.W_oca, ix.size)
        if np.isscalar(oca_err):
            oca_err = np.full(v.phi_oca.shape, float(oca_err))
            np.fill_diagonal(oca_err, 0.0)
        mats.update({matrix_key("phi_oca", h): v.phi_oca,
                     matrix_key("oca_se", h): np.asarray(oca_err, dtype=np.float64),
                     matrix_key("phi_pas", h): v.phi_pas, matrix_key("pas_se", h): v.pas_se,
                     matrix_key("psi", h): v.psi, matrix_key("psi_se", h): v.psi_se,
                     matrix_key("half_idx", h): np.asarray(ix, dtype=np.int64)})
        info["oca_s"] += v.timings["oca"]
        info["pas_s"] += v.timings["pas_exact"]
        logit_mean[h] = v.meta["logit_mean"]
        if cfg.verify and h == "a":  # half a: the partitions under the plain method names are fitted on it
            # the same self-verification as every valuation run (models.verify): a few psi(i), psi(i, j)
            # redone through the model's own modules; raises VerificationError when they disagree
            from hedonic_neurons.models.verify import save_verification, verify_valuations

            t2 = time.time()
            batches = [(data.X_test[ix[s:s + 512]], data.y_test[ix[s:s + 512]]) for s in range(0, ix.size, 512)]
            save_verification(verify_valuations(model, batches, v), rd.root / "verification", stem=key)
            info["verify_s"] = time.time() - t2
    t2 = time.time()
    n_ld = min(cfg.loss_delta_images, H_all.shape[0])
    loss_delta = neuron_loss_delta(model, H_all[:n_ld], li, data.y_test[:n_ld])
    info["loss_delta_s"] = time.time() - t2
    # tracking follows the half-a partitions (the ones under the plain method names): read it on their
    # evaluation half's digits
    H_track = H_all[idx[eval_half("a", cfg.crossfit)]]
    mats.update({"loss_delta": loss_delta.astype(np.float64), "track_acts": H_track})
    if li <= len(model.blocks):
        # cross-layer tracking at a residual site: E_x |d h_{l+1} / d h_l| through the next block
        from hedonic_neurons.tracking.jacobian import residual_jacobian_abs

        mats["track_J_abs"] = residual_jacobian_abs(model.blocks[li - 1], H_track)
    rd.save_matrices(key, mats, metadata={"layer": layer, "n_samples": H_all.shape[0],
                                          "halves": ",".join(f"{h}:{ix.size}" for h, ix in idx.items()),
                                          "crossfit_seed": cfg.crossfit_seed, "pas_logit_mean": logit_mean,
                                          "oca_weight": cfg.oca_weight})
    sr.done(stage, info)
    log.debug("%s valuations: %s", key, info)
    return rd.load_matrices(key)


def stage_partitions(sr: StageRunner, cfg: MnistConfig, model, data: MnistSplit, mats: dict, key: str, layer: str,
                     seed: int, methods: tuple[str, ...] = METHODS) -> dict[str, dict[str, np.ndarray]]:
    """{half: {method: labels}}: on each half, Hedonic-OCA, Hedonic-PAS, Leiden (positive part of the PAS
    phi) and the baselines matched to Hedonic-PAS (I.4-I.5) on that half's activation profiles."""
    from hedonic_neurons.baselines import LeidenPartition, matched_baselines
    from hedonic_neurons.metrics.crossfit import half_seed, layer_seed

    rd = sr.rd
    stage = f"partitions_{key}"
    fit = fit_halves(cfg.crossfit)
    if sr.fresh(stage):
        return {h: {m: rd.load_partition(key, part_name(m, h))["labels"] for m in methods} for h in fit}
    H_all = _hidden(model, data.X_test, layer)
    out: dict[str, dict[str, np.ndarray]] = {}
    for h in fit:
        res: dict[str, np.ndarray] = {}
        hseed = half_seed(seed, h)  # its own random state per half (see half_seed)
        for method, phi, se in (("hedonic_oca", mats[f"phi_oca_{h}"], mats[f"oca_se_{h}"]),
                                ("hedonic_pas", mats[f"phi_pas_{h}"], mats[f"pas_se_{h}"])):
            t0 = time.time()
            hp = cfg.solver.to_estimator(random_state=hseed)
            hp.fit(np.asarray(phi, dtype=np.float64), np.asarray(se, dtype=np.float64))
            params = dict(getattr(hp, "params_", {}) or {})
            params.setdefault("threshold_rule", str(getattr(hp, "threshold_rule_", "")))
            params["seconds"] = time.time() - t0
            params["fitted_on"] = f"half {h}"
            rd.save_partition(key, part_name(method, h), hp.labels_,
                              stability=dict(getattr(hp, "stability_", {}) or {}), params=params)
            res[method] = np.asarray(hp.labels_)
        t0 = time.time()
        # until convergence (n_iterations=-1): cheap at 256 players, and the strongest Leiden to compare with
        ld = LeidenPartition(max_size=cfg.solver.max_size, n_iterations=-1, random_state=hseed).fit(
            np.asarray(mats[f"phi_pas_{h}"], dtype=np.float64))
        rd.save_partition(key, part_name("leiden", h), ld.labels_,
                          params={"resolution_rule": str(getattr(ld, "resolution_rule_", "")),
                                  "resolution": float(getattr(ld, "resolution_", float("nan"))),
                                  "max_size": cfg.solver.max_size, "valuation": "positive part of PAS",
                                  "fitted_on": f"half {h}", "seed": hseed, "seconds": time.time() - t0})
        res["leiden"] = np.asarray(ld.labels_)
        # the baselines draw afresh on every layer: one random state for all layers would give the random
        # baseline (nearly) the same coalitions of residual dimensions at every layer
        bseed = layer_seed(hseed, layer)
        for method, labels in matched_baselines(H_all[mats[f"half_{h}_idx"]].T, res["hedonic_pas"],
                                                random_state=bseed).items():
            rd.save_partition(key, part_name(method, h), labels,
                              params={"matched_to": "hedonic_pas", "seed": bseed, "fitted_on": f"half {h}"})
            res[method] = labels
        out[h] = {m: res[m] for m in methods}
    sr.done(stage)
    return out


def stage_metrics(sr: StageRunner, cfg: MnistConfig, model, data: MnistSplit, mats: dict, parts: dict, key: str,
                  layer: str, variant: str, setting: str, seed: int, stroke: np.ndarray) -> dict:
    """Every I.6 metric for every coalition of every method and half in one layer, each on the digits
    and the valuation of the *other* half (cross-fitting); per partition the split-half ARI and the share
    of neurons in coalitions of 2..max_size. Returns {"coalitions": rows, "partitions": rows} (saved)."""
    from hedonic_neurons.metrics.ablation import ablation_effects
    from hedonic_neurons.metrics.crossfit import coalitions_of, coverage, split_half_ari, synergy_rows
    from hedonic_neurons.metrics.mnist import coalition_metrics

    rd = sr.rd
    path = rd.root / "metrics" / f"{key}.json"
    stage = f"metrics_{key}"
    if sr.fresh(stage) and path.exists():
        return json.loads(path.read_text())
    H_all = _hidden(model, data.X_test, layer)
    li = int(layer[1:])
    rows: list[dict] = []
    base = {"variant": variant, "setting": setting, "seed": seed, "layer": layer}
    acc_base = {}
    for h, by_method in parts.items():
        e = eval_half(h, cfg.crossfit)
        ix = mats[f"half_{e}_idx"]
        H, y, st = H_all[ix], data.y_test[ix], stroke[ix]
        all_coal = [(m, coalitions_of(lab)) for m, lab in by_method.items()]
        # dAcc for coalitions of two or more neurons only (like Pair / Ratio; single neurons get NaN and
        # are left out of its means): partitions with many single neurons would otherwise cost one
        # propagated ablation pass per neuron and dilute the mean with single-neuron drops
        flat = [c for _, cs in all_coal for c in cs if c.size >= 2]
        abl = ablation_effects(model, H, li, y, flat)
        acc_base[e] = abl["acc_base"]
        drops = iter((abl["acc_base"] - abl["acc"]) * 100.0)  # percentage points
        for method, coalitions in all_coal:
            # top-K images of the evaluation half; at most half of them, so purity is never the class share
            # of every image (only small test runs have fewer than 2 x top_k digits per half)
            interp = coalition_metrics(H, y, coalitions, stroke=st, k=min(cfg.top_k, max(1, H.shape[0] // 2)),
                                       stroke_baseline=st.mean(0))
            syn = synergy_rows(coalitions, mats[f"phi_pas_{e}"], mats[f"psi_{e}"], mats[f"phi_pas_{h}"],
                               mats[f"psi_{h}"])
            for cid, (members, row, sy) in enumerate(zip(coalitions, interp, syn, strict=True)):
                rows.append({**base, "method": method, "half": h, "scored_on": e, "coalition": cid,
                             "size": int(members.size), "members": members.tolist(),
                             "dacc_pp": float(next(drops)) if members.size >= 2 else float("nan"),
                             "pair": sy["pair"], "ratio": sy["ratio"], "pair_in_sample": sy["pair_in_sample"],
                             "ratio_in_sample": sy["ratio_in_sample"],
                             **{k: v for k, v in row.items() if k != "size"}})
    prows = []
    for method in next(iter(parts.values())):
        labs = {h: parts[h][method] for h in parts}
        cov = [coverage(lab, 2, cfg.solver.max_size) for lab in labs.values()]
        sizes = [np.bincount(np.unique(lab, return_inverse=True)[1]) for lab in labs.values()]
        prows.append({**base, "method": method,
                      "ari": split_half_ari(labs["a"], labs["b"]) if "b" in labs else float("nan"),
                      "coverage": float(np.mean(cov)), "n_coalitions": float(np.mean([s.size for s in sizes])),
                      "singletons": float(np.mean([(s == 1).sum() for s in sizes])),
                      "largest": int(max(s.max() for s in sizes))})
    out = {"coalitions": rows, "partitions": prows}
    write_json(path, out)
    sr.done(stage, {"acc_base": acc_base})
    return out


# ---------------------------------------------------------------------------------------------------
# tables, figures, summary
# ---------------------------------------------------------------------------------------------------


def digit_grids(rd: RunDir, cfg: MnistConfig, data: MnistSplit, rows: list[dict], variant: str) -> list[Path]:
    """Top-64 digit grids of the purest Hedonic-PAS coalitions of the control layer (Fig. 3-6), for the half-a
    partition, drawn from the other half's digits (those its purity was measured on): report.mnist_tables."""
    from hedonic_neurons.models.gated_mlp import GatedMLPClassifier

    layer = cfg.control_layer if cfg.control_layer in cfg.layers else cfg.layers[len(cfg.layers) // 2]
    model_path = rd.root / "models" / f"{variant}.safetensors"
    ix = halves(cfg, len(data.y_test))[eval_half("a", cfg.crossfit)]
    H = _hidden(GatedMLPClassifier.load(model_path), data.X_test[ix], layer)
    return draw_digit_grids(rd, cfg.n_grids, rows, variant, layer, H, data.images_test[ix], data.y_test[ix])



# ---------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------


# config fields read by every stage through the data (the split and its caps)
DATA_FIELDS = ("data", "n_train", "n_test", "test_fraction", "split_seed")


def plan_stages(rd: RunDir, cfg: MnistConfig, report: bool = False) -> StageRunner:
    """Every stage of the run with the config fields and upstream stages it reads (docs/mnist.md)."""
    sr = StageRunner(rd, cfg)
    metrics = []
    for variant, setting, _seed in _variants(cfg):
        train = ("epochs", "lr") if setting != "random_init" else ()
        sr.add(f"model_{variant}", (*DATA_FIELDS, "d_model", "d_ff", *train),
               outputs=(f"models/{variant}.safetensors", f"models/{variant}.json"))
        for layer in _layers_of(cfg, setting):
            key = f"{variant}_{layer}"
            sr.add(f"valuations_{key}", ("crossfit", "crossfit_seed", "oca_weight", "verify", "loss_delta_images"),
                   (f"model_{variant}",), outputs=(f"matrices/{key}.safetensors", f"verification/{key}.json",
                                                   f"verification/{key}.md"))
            # version 1: the matched baselines' random state is drawn per layer (crossfit.layer_seed)
            sr.add(f"partitions_{key}", ("solver",), (f"valuations_{key}",), outputs=(f"partitions/{key}",),
                   version=1)
            sr.add(f"metrics_{key}", ("top_k",), (f"partitions_{key}",), outputs=(f"metrics/{key}.json",))
            metrics.append(f"metrics_{key}")
    # the tables read every metrics file (so a new seed or layer rebuilds them) and the first seed's
    # network for the digit grids
    sr.add("tables", ("n_grids", "control_layer"), tuple(metrics))
    if report:
        if len(cfg.layers) > 1:
            sr.add("tracking", (), ("tables",), outputs=("tracking",), version=TRACKING_VERSION)
        sr.add("report", (), ("tracking",) if len(cfg.layers) > 1 else ("tables",), outputs=("report.html",))
    return sr


class FinishFailed(RuntimeError):
    """Tracking or the report failed after every result was written (the CLI exits non-zero, naming it)."""


def _track(rd: RunDir) -> dict:
    # track the partitions under the plain method names only (half a); the half-b ones (<method>.b)
    # exist for cross-fitting and would double the Sankey views
    from hedonic_neurons.report.sankey import track_and_draw

    try:
        track_and_draw(rd.root, methods=list(METHODS))
    except Exception as exc:  # not marked done: a re-run retries it; the CLI exits non-zero saying so
        raise FinishFailed(f"cross-layer tracking failed ({type(exc).__name__}: {exc})") from exc
    return {}


def _report(rd: RunDir) -> dict:
    from hedonic_neurons.report import build_report

    try:
        return {"path": str(build_report(rd.root))}
    except Exception as exc:  # not marked done: a re-run retries it; the CLI exits non-zero saying so
        raise FinishFailed(f"building report.html failed ({type(exc).__name__}: {exc})") from exc


def _layer_job(arg: tuple) -> dict:
    """Worker of per-layer parallelism (`jobs` > 1): the partition and metric stages of one (network, layer),
    with the network and matrices read back from the run directory; files and markers as in the serial path."""
    import torch

    from hedonic_neurons.metrics.mnist import stroke_scores
    from hedonic_neurons.models.gated_mlp import GatedMLPClassifier

    cfg, root, report, variant, setting, seed, layer = arg
    torch.set_num_threads(1)  # one thread per worker: the pool is the parallelism
    sr = plan_stages(RunDir(root), cfg, report=report)
    data = load_data(cfg)
    model = GatedMLPClassifier.load(sr.rd.root / "models" / f"{variant}.safetensors")
    key = f"{variant}_{layer}"
    mats = sr.rd.load_matrices(key)
    parts = stage_partitions(sr, cfg, model, data, mats, key, layer, seed, METHODS)
    stroke = stroke_scores(data.images_test)
    stage_metrics(sr, cfg, model, data, mats, parts, key, layer, variant, setting, seed, stroke)
    return {}  # both stages marked done above, by this worker's own StageRunner


def run_mnist(cfg: MnistConfig, out: str | Path, threads: int | None = None, force: bool = False,
              report: bool = False, jobs: int = 1) -> RunDir:
    """Run (or resume) the whole experiment into `out`; returns the RunDir. `threads`: torch threads.

    Resuming reuses exactly the stages whose fingerprint (config fields + upstream stages, `plan_stages`)
    is unchanged; `force` recomputes everything. `report`: then cross-layer tracking and report.html.
    `jobs` > 1: the partition and metric stages of different layers run on that many worker processes
    (docs/scale.md, per-layer parallelism); same files as jobs = 1, recorded in runtime.json only."""
    import torch
    from tqdm.auto import tqdm

    from hedonic_neurons.configs import config_from_dict
    from hedonic_neurons.metrics.mnist import stroke_scores

    if int(jobs) < 1:
        raise ValueError(f"--jobs {jobs}: give 1 (serial) or more worker processes")
    t_start = time.time()
    data = load_data(cfg)  # first, so that bad input leaves no half-made run directory behind
    halves(cfg, len(data.y_test))  # too few digits to split in two: one-line error before anything is written
    rd = RunDir(out)
    cfg_path = rd.root / "config.json"
    if cfg_path.exists() and not force:
        # an older run directory: load its config (flat keys of older versions map to their nested place)
        # or refuse in one line; what changed is then recomputed stage by stage, never silently reused
        config_from_dict(MnistConfig, json.loads(cfg_path.read_text()), MNIST_MOVED)
    sr = plan_stages(rd, cfg, report=report)
    sr.prepare(force=force)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(pick_threads(threads))
    record_runtime(rd, torch.get_num_threads(), jobs=int(jobs))
    try:
        stroke = stroke_scores(data.images_test)
        variants = _variants(cfg)
        todo = [(v, s, seed, layer) for v, s, seed in variants for layer in _layers_of(cfg, s)]
        rows: list[dict] = []
        prows: list[dict] = []
        models: dict[str, object] = {}
        if jobs > 1:
            # models and valuations here (they train / run the network with all threads), then the
            # partitions and metrics of every layer side by side; the loop below reads them back
            for variant, setting, seed in variants:
                models[variant] = stage_model(sr, cfg, data, variant, setting, seed)
            for variant, _, _, layer in todo:
                stage_valuations(sr, cfg, models[variant], data, f"{variant}_{layer}", layer)
            sr.run_parallel([((f"partitions_{v}_{layer}", f"metrics_{v}_{layer}"),
                              (cfg, str(rd.root), report, v, s, seed, layer)) for v, s, seed, layer in todo],
                            _layer_job, jobs)
        bar = tqdm(todo, desc="mnist", disable=not _progress())
        for variant, setting, seed, layer in bar:
            bar.set_postfix_str(f"{variant} {layer}")
            if variant not in models:
                models[variant] = stage_model(sr, cfg, data, variant, setting, seed)
            model = models[variant]
            key = f"{variant}_{layer}"
            mats = stage_valuations(sr, cfg, model, data, key, layer)
            parts = stage_partitions(sr, cfg, model, data, mats, key, layer, seed, METHODS)
            res = stage_metrics(sr, cfg, model, data, mats, parts, key, layer, variant, setting, seed, stroke)
            rows += res["coalitions"]
            prows += res["partitions"]
        if not sr.fresh("tables"):
            write_json(rd.root / "coalitions.json", rows)
            _write_coalitions_csv(rd.root / "coalitions.csv", rows)
            rd.save_table("partitions", [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                                         for r in prows],
                          title="Per network, layer and method: split-half ARI (partitions fitted on the two halves), "
                          f"share of neurons in coalitions of 2-{cfg.solver.max_size} (mean over halves), coalitions, "
                          "single neurons (mean over halves), largest coalition")
            means, per_seed = write_tables(rd, cfg, rows, prows)
            write_stability_table(rd, cfg.solver.max_size)
            write_accuracy_table(rd, variants)
            digit_grids(rd, cfg, data, rows, f"seed{cfg.seeds[0]}")
            write_summary(rd, cfg, means, per_seed, rows, prows, variants, time.time() - t_start)
            sr.done("tables")
        if report:
            if "tracking" in sr.stages:
                sr.run("tracking", lambda: _track(rd))
            sr.run("report", lambda: _report(rd))
    finally:
        torch.set_num_threads(prev_threads)
    return rd
