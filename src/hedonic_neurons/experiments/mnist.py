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

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hedonic_neurons.partition import SolverConfig
from hedonic_neurons.rundir import RunDir, matrix_key, write_json
from hedonic_neurons.stages import StageRunner

log = logging.getLogger(__name__)

METHODS = ("random", "kmeans", "ward", "leiden", "hedonic_oca", "hedonic_pas")
METHOD_NAMES = {"random": "Random Partition", "kmeans": "Activation K-Means",
                "ward": "Activation Hierarchical", "leiden": "Leiden (CPM)", "hedonic_oca": "Hedonic-OCA",
                "hedonic_pas": "Hedonic-PAS"}
MIN_HALF = 32  # cross-fitting: fewest held-out digits per half (PAS, purity, dAcc over fewer mean little)
NOT_IN_PAPER = "–"  # paper columns of methods the paper does not have (Leiden)
ALL_LAYERS = ("h1", "h2", "h3", "h4", "h5")
TABLE_LAYERS = ("h2", "h3", "h4")  # the paper aggregates Tables 7-8 over h2-h4 (I.4)

# The paper's numbers (appendix I, Tables 7-9), printed beside ours.
PAPER_T7 = {  # dAcc mean, dAcc std, Pair, Ratio, avg |C|
    "random": (0.18, 0.09, 0.010, 0.06, 7.9), "kmeans": (0.29, 0.14, 0.018, 0.11, 8.1),
    "ward": (0.33, 0.15, 0.021, 0.13, 8.0), "hedonic_oca": (0.57, 0.23, 0.036, 0.21, 8.2),
    "hedonic_pas": (0.91, 0.31, 0.052, 0.29, 8.3),
}
PAPER_T8 = {  # purity, selectivity, sparsity (means)
    "random": (0.18, 0.05, 1.90), "kmeans": (0.48, 0.18, 1.62), "ward": (0.52, 0.20, 1.56),
    "hedonic_oca": (0.71, 0.31, 1.41), "hedonic_pas": (0.86, 0.45, 1.30),
}
PAPER_T9 = {  # (setting, method): stroke, purity, ratio
    ("trained", "hedonic_pas"): (0.42, 0.88, 0.31), ("trained", "ward"): (0.29, 0.55, 0.14),
    ("random_init", "hedonic_pas"): (0.17, 0.20, 0.05), ("shuffled", "hedonic_pas"): (0.19, 0.23, 0.06),
}
SETTING_NAMES = {"trained": "Trained MLP", "random_init": "Random Init", "shuffled": "Label-Shuffled"}


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
    # cross-fitting (DESIGN 3): the held-out digits are split into two seeded halves; partitions fitted on
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


@dataclass
class _Data:
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    images_test: np.ndarray


def load_data(cfg: MnistConfig) -> _Data:
    """The stratified train / held-out split (same for every seed), capped for tests."""
    from hedonic_neurons.data.mnist import load_images, stratified_split, to_input

    images, labels = load_images(cfg.data)
    tr, te = stratified_split(labels, cfg.test_fraction, cfg.split_seed)
    rng = np.random.default_rng(cfg.split_seed)
    if cfg.n_train is not None and cfg.n_train < tr.size:
        tr = np.sort(rng.choice(tr, cfg.n_train, replace=False))
    if cfg.n_test is not None and cfg.n_test < te.size:
        te = np.sort(rng.choice(te, cfg.n_test, replace=False))
    X = to_input(images)
    return _Data(X[tr], labels[tr], X[te], labels[te], images[te])


def _variants(cfg: MnistConfig) -> list[tuple[str, str, int]]:
    """(variant name, setting, seed): trained models per seed, then the negative controls."""
    out = [(f"seed{s}", "trained", s) for s in cfg.seeds]
    if cfg.controls:
        for s in (cfg.control_seeds if cfg.control_seeds is not None else cfg.seeds):
            out += [(f"random_init{s}", "random_init", s), (f"shuffled{s}", "shuffled", s)]
    return out


def _layers_of(cfg: MnistConfig, setting: str) -> list[str]:
    return list(cfg.layers) if setting == "trained" else [cfg.control_layer]


def stage_model(sr: StageRunner, cfg: MnistConfig, data: _Data, variant: str, setting: str, seed: int):
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


def _hidden(model, X: np.ndarray, layer: str) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.hidden_states(torch.as_tensor(X))[int(layer[1:]) - 1].numpy().astype(np.float32)


def _tail(model):
    """The local logit: the model's final LayerNorm and head, cloned and applied to h_l (I.3)."""
    from hedonic_neurons.valuations.tail import NormTail

    norm, head = model.norm, model.head
    return NormTail(kind="layer", head_w=head.weight.detach().double().numpy(),
                    head_b=head.bias.detach().double().numpy(), weight=norm.weight.detach().double().numpy(),
                    bias=norm.bias.detach().double().numpy(), eps=float(norm.eps))


def oca_weight(model, layer: str, how: str = "next") -> np.ndarray | None:
    """The weight term of OCA for residual coordinate i (DESIGN 3): column i of what reads h_l next.

    h1..h4: the next block's gate and up projections stacked, (2 d_ff, d); h5: the head with the final
    LayerNorm gain folded in, (n_classes, d). ``how="identity"`` returns None (no weight term).
    """
    if how == "identity":
        return None
    li = int(layer[1:])
    if li <= len(model.blocks):
        b = model.blocks[li - 1]
        return np.vstack([b.gate.weight.detach().numpy(), b.up.weight.detach().numpy()]).astype(np.float64)
    return (model.head.weight.detach().double() * model.norm.weight.detach().double()).numpy()


def _verify(rd: RunDir, model, data: _Data, li: int, key: str, pas, ix: np.ndarray) -> None:
    """The same self-verification as every valuation run (models.verify): a few psi(i), psi(i, j) of this
    residual site, computed on the held-out digits `ix`, redone through the model's own modules; raises
    VerificationError when they disagree."""
    import torch

    from hedonic_neurons.models.extract import layer_cache
    from hedonic_neurons.models.valuate import Valuations
    from hedonic_neurons.models.verify import save_verification, verify_valuations

    X, y = torch.as_tensor(data.X_test[ix]), torch.as_tensor(data.y_test[ix])
    batches = [(X[s:s + 512], y[s:s + 512]) for s in range(0, len(X), 512)]
    cache = layer_cache(model, batches, li, site="residual", ablation="zero", progress=False)
    v = Valuations(layer=li, site="residual", ablation="zero", n_samples=cache.n_samples, n_players=cache.n_players,
                   phi_pas=pas.phi, psi=pas.psi, cache=cache)
    save_verification(verify_valuations(model, batches, v), rd.root / "verification", stem=key)


def halves(cfg: MnistConfig, n: int) -> dict[str, np.ndarray]:
    """{half: indices into the held-out digits}: two seeded disjoint halves, or {"a": all} without crossfit."""
    from hedonic_neurons.metrics.crossfit import split_halves

    if not cfg.crossfit:
        return {"a": np.arange(n)}
    a, b = split_halves(n, cfg.crossfit_seed, min_half=MIN_HALF, what="held-out digits")
    return {"a": a, "b": b}


def eval_half(cfg: MnistConfig, half: str) -> str:
    """The half whose digits and valuation score a partition fitted on `half` (itself without crossfit)."""
    from hedonic_neurons.metrics.crossfit import OTHER

    return OTHER[half] if cfg.crossfit else half


def part_name(method: str, half: str) -> str:
    """Partition file stem: half a under the plain method name (tracked, shown), half b as ``<method>.b``."""
    return method if half == "a" else f"{method}.b"


def stage_valuations(sr: StageRunner, cfg: MnistConfig, model, data: _Data, key: str, layer: str) -> dict:
    """OCA, exact PAS (+ standard errors, psi) on each half of the held-out digits, per-neuron loss deltas
    for one layer; saved as safetensors with the half in the key (``phi_pas_a``, ``phi_pas_b``,
    ``oca_se_a`` ...: the keys of rundir.MATRIX_KEYS)."""
    from hedonic_neurons.metrics.ablation import neuron_loss_delta
    from hedonic_neurons.valuations.oca import oca, oca_se
    from hedonic_neurons.valuations.pas import exact_pas

    rd = sr.rd
    stage = f"valuations_{key}"
    if sr.fresh(stage) and rd.matrices_path(key).exists():
        return rd.load_matrices(key)
    H_all = _hidden(model, data.X_test, layer)
    idx = halves(cfg, H_all.shape[0])
    li = int(layer[1:])
    W = oca_weight(model, layer, cfg.oca_weight)
    mats: dict[str, np.ndarray] = {}
    info: dict[str, float] = {"oca_s": 0.0, "pas_s": 0.0}
    logit_mean = {}
    pas_of = {}
    for h, ix in idx.items():
        H = H_all[ix]
        t0 = time.time()
        phi_oca = oca(H, W, dtype=np.float64)
        oca_err = oca_se(W, H.shape[0])
        if np.isscalar(oca_err):
            oca_err = np.full(phi_oca.shape, float(oca_err))
            np.fill_diagonal(oca_err, 0.0)
        t1 = time.time()
        # residual site, zero ablation: delta_i(x) = h_i(x) e_i, so coef = H and C = identity (None)
        pas = exact_pas(H.astype(np.float64), H.astype(np.float64), None, _tail(model), targets=data.y_test[ix],
                        dtype=np.float32, progress=False)
        t2 = time.time()
        mats.update({matrix_key("phi_oca", h): phi_oca,
                     matrix_key("oca_se", h): np.asarray(oca_err, dtype=np.float64),
                     matrix_key("phi_pas", h): pas.phi, matrix_key("pas_se", h): pas.se,
                     matrix_key("psi", h): pas.psi, matrix_key("psi_se", h): pas.psi_se,
                     matrix_key("half_idx", h): np.asarray(ix, dtype=np.int64)})
        info["oca_s"] += t1 - t0
        info["pas_s"] += t2 - t1
        logit_mean[h] = pas.logit_mean
        pas_of[h] = pas
    t2 = time.time()
    if cfg.verify:  # half a: the partitions under the plain method names are fitted on it
        _verify(rd, model, data, li, key, pas_of["a"], idx["a"])
    n_ld = min(cfg.loss_delta_images, H_all.shape[0])
    loss_delta = neuron_loss_delta(model, H_all[:n_ld], li, data.y_test[:n_ld])
    info["loss_delta_s"] = time.time() - t2
    # tracking follows the half-a partitions (the ones under the plain method names): read it on their
    # evaluation half's digits
    H_track = H_all[idx[eval_half(cfg, "a")]]
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


def _solver(cfg: MnistConfig, seed: int):
    return cfg.solver.to_estimator(random_state=seed)


def _fit_halves(cfg: MnistConfig) -> tuple[str, ...]:
    return ("a", "b") if cfg.crossfit else ("a",)


def stage_partitions(sr: StageRunner, cfg: MnistConfig, model, data: _Data, mats: dict, key: str, layer: str,
                     seed: int, methods: tuple[str, ...] = METHODS) -> dict[str, dict[str, np.ndarray]]:
    """{half: {method: labels}}: on each half, Hedonic-OCA, Hedonic-PAS, Leiden (positive part of the PAS
    phi) and the baselines matched to Hedonic-PAS (I.4-I.5) on that half's activation profiles."""
    from hedonic_neurons.baselines import LeidenPartition, matched_baselines
    from hedonic_neurons.metrics.crossfit import half_seed

    rd = sr.rd
    stage = f"partitions_{key}"
    fit = _fit_halves(cfg)
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
            hp = _solver(cfg, hseed).fit(np.asarray(phi, dtype=np.float64), np.asarray(se, dtype=np.float64))
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
        for method, labels in matched_baselines(H_all[mats[f"half_{h}_idx"]].T, res["hedonic_pas"],
                                                random_state=hseed).items():
            rd.save_partition(key, part_name(method, h), labels,
                              params={"matched_to": "hedonic_pas", "seed": hseed, "fitted_on": f"half {h}"})
            res[method] = labels
        out[h] = {m: res[m] for m in methods}
    sr.done(stage)
    return out


def stage_metrics(sr: StageRunner, cfg: MnistConfig, model, data: _Data, mats: dict, parts: dict, key: str,
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
        e = eval_half(cfg, h)
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


def _per_seed(rows: list[dict], metric: str, method: str, layers, setting: str = "trained") -> list[float]:
    """One value per seed: the mean over the method's coalitions in `layers`, taken per fitting half and then
    averaged over the halves (cross-fitting: both directions count equally). Finite values only."""
    out = []
    for s in sorted({r["seed"] for r in rows if r["setting"] == setting}):
        per_half = []
        for h in sorted({r.get("half", "a") for r in rows}):
            v = [r[metric] for r in rows if r["setting"] == setting and r["seed"] == s and r["method"] == method
                 and r.get("half", "a") == h and r["layer"] in layers and r.get(metric) is not None
                 and np.isfinite(r[metric])]
            if v:
                per_half.append(float(np.mean(v)))
            elif any(r["method"] == method and r["seed"] == s for r in rows):
                _missing(f"{metric}, {METHOD_NAMES.get(method, method)} ({setting}, layers {', '.join(layers)}): "
                         f"seed {s} half {h} has no finite value: the seed's mean is over the other half")
        if per_half:
            out.append(float(np.mean(per_half)))
        elif any(r["method"] == method for r in rows):
            _missing(f"{metric}, {METHOD_NAMES.get(method, method)} ({setting}, layers {', '.join(layers)}): "
                     f"seed {s} has no finite value: the mean is over the other seeds")
    return out


def _missing(message: str) -> None:
    from hedonic_neurons.notices import warn

    warn(message)


def _per_seed_part(prows: list[dict], metric: str, method: str, layers, setting: str = "trained") -> list[float]:
    """One value per seed: a per-partition figure (split-half ARI, coverage) averaged over `layers`."""
    out = []
    for s in sorted({r["seed"] for r in prows if r["setting"] == setting}):
        v = [r[metric] for r in prows if r["setting"] == setting and r["seed"] == s and r["method"] == method
             and r["layer"] in layers and r.get(metric) is not None and np.isfinite(r[metric])]
        if v:
            out.append(float(np.mean(v)))
        elif any(r["method"] == method for r in prows):
            _missing(f"{metric}, {METHOD_NAMES.get(method, method)} ({setting}, layers {', '.join(layers)}): "
                     f"seed {s} has no finite value: the mean is over the other seeds")
    return out


def _cell(values: list[float], digits: int = 3) -> str:
    from hedonic_neurons.metrics.stats import fmt_ci

    # one seed left has no interval: fmt_ci says so rather than printing "± 0.000"
    return fmt_ci(values, digits, unit="seed")


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _within_sd(rows: list[dict], metric: str, method: str, layers) -> float:
    v = [r[metric] for r in rows if r["setting"] == "trained" and r["method"] == method and r["layer"] in layers
         and r[metric] is not None and np.isfinite(r[metric])]
    return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")


def _paper(table: dict, m: str, i: int, fmt: str) -> str:
    return format(table[m][i], fmt) if m in table else NOT_IN_PAPER


def leiden_rule(rd: RunDir) -> str:
    """The resolution rule Leiden stated (first trained partition on disk), for the tables' notes."""
    for key, methods in rd.partitions().items():
        if "leiden" in methods:
            rule = rd.load_partition(key, "leiden").get("params", {}).get("resolution_rule", "")
            if rule:
                return f"{rule} (e.g. {key}; every partition's rule and value: partitions/<net>_<layer>/leiden.json)"
    return "n/a"


def crossfit_note(cfg: MnistConfig) -> str:
    if not cfg.crossfit:
        return ("cross-fitting OFF: Pair, Ratio and every metric are IN-SAMPLE (scored on the digits and the "
                "valuation the partitions were fitted on)")
    return ("cross-fitted: the held-out digits are split in two seeded halves; partitions fitted on one half's "
            "valuation are scored (Pair, Ratio, dAcc, purity ...) on the other half, both directions averaged; "
            "*_in_sample columns score each partition on its own half (labelled, never used for a verdict); "
            "ARI_split_half: adjusted Rand index between the two halves' partitions")


def write_tables(rd: RunDir, cfg: MnistConfig, rows: list[dict], prows: list[dict]) -> tuple[dict, dict]:
    """Tables 7, 8, 9 (ours beside the paper's), per-layer means; returns (means, per-seed values)."""
    layers = [la for la in TABLE_LAYERS if la in cfg.layers] or list(cfg.layers)
    span = f"{layers[0]}–{layers[-1]}" if len(layers) > 1 else layers[0]
    n_seeds = len(cfg.seeds)
    ci = f"mean ± 95 % CI over {n_seeds} seeds" if n_seeds > 1 else "one seed"
    note = crossfit_note(cfg)
    leiden = f"Leiden (CPM): leidenalg CPM on the positive part of the PAS phi, communities <= " \
             f"{cfg.solver.max_size}; " \
             f"resolution rule: {leiden_rule(rd)}"
    t7, t8 = [], []
    means: dict[str, dict[str, float]] = {}
    per_seed: dict[str, dict[str, list[float]]] = {}
    for m in METHODS:
        d = {k: _per_seed(rows, k, m, layers) for k in ("dacc_pp", "pair", "ratio", "pair_in_sample",
                                                          "ratio_in_sample", "size", "purity", "selectivity",
                                                          "sparsity", "stroke", "stroke_lift")}
        d.update({k: _per_seed_part(prows, k, m, layers) for k in ("ari", "coverage")})
        per_seed[m] = d
        means[m] = {k: _mean(v) for k, v in d.items()}
        t7.append({"method": METHOD_NAMES[m], "dAcc_pp": _cell(d["dacc_pp"]),
                   "dAcc_sd_within": f"{_within_sd(rows, 'dacc_pp', m, layers):.3f}",
                   # the paper's ± is a standard deviation, ours a 95 % CI: the cell says which
                   "paper_dAcc": (f"{PAPER_T7[m][0]:.2f} ± {PAPER_T7[m][1]:.2f} (sd)" if m in PAPER_T7
                                  else NOT_IN_PAPER),
                   "Pair_heldout": _cell(d["pair"], 4), "Pair_in_sample": _cell(d["pair_in_sample"], 4),
                   "paper_Pair": _paper(PAPER_T7, m, 2, ".3f"), "Ratio_heldout": _cell(d["ratio"]),
                   "Ratio_in_sample": _cell(d["ratio_in_sample"]), "paper_Ratio": _paper(PAPER_T7, m, 3, ".2f"),
                   "ARI_split_half": _cell(d["ari"]),
                   f"pct_in_2_{cfg.solver.max_size}": _cell([100 * v for v in d["coverage"]], 1),
                   "avg_size": _cell(d["size"], 2), "paper_avg_size": _paper(PAPER_T7, m, 4, ".1f")})
        t8.append({"method": METHOD_NAMES[m], "purity": _cell(d["purity"]),
                   "paper_purity": _paper(PAPER_T8, m, 0, ".2f"),
                   "selectivity": _cell(d["selectivity"]), "paper_selectivity": _paper(PAPER_T8, m, 1, ".2f"),
                   "sparsity": _cell(d["sparsity"], 2), "paper_sparsity": _paper(PAPER_T8, m, 2, ".2f"),
                   "stroke": _cell(d["stroke"]), "stroke_lift": _cell(d["stroke_lift"])})
    rd.save_table("table7_synergy", t7, title=f"Table 7 (MNIST, layers {span}): accuracy drop (percentage "
                  f"points) when one coalition is ablated, Pair and Ratio synergy (held-out), split-half ARI, "
                  f"% of neurons in coalitions of 2-{cfg.solver.max_size}, average size; {ci} "
                  f"(dAcc_sd_within: sd over all coalitions and seeds); paper columns beside ours (paper_dAcc: "
                  f"the paper's mean ± sd, not a CI). {note}. "
                  f"{leiden}")
    rd.save_table("table8_interpretability", t8, title=f"Table 8 (MNIST, layers {span}): digit purity, "
                  f"selectivity, sparsity ||a_C||_1/||a_C||_2 over the held-out images, stroke alignment; "
                  f"{ci}; paper columns beside ours. {note}")
    t9 = []
    cl = cfg.control_layer
    t9_keys = list(PAPER_T9) + [(s, "leiden") for s in SETTING_NAMES]
    for setting, m in t9_keys:
        paper = PAPER_T9.get((setting, m))
        d = {k: _per_seed(rows, k, m, [cl], setting) for k in ("stroke", "stroke_lift", "purity", "ratio")}
        if not d["purity"]:
            continue
        t9.append({"setting": f"{SETTING_NAMES[setting]}, {cl}", "method": METHOD_NAMES[m],
                   "stroke": _cell(d["stroke"]), "paper_stroke": f"{paper[0]:.2f}" if paper else NOT_IN_PAPER,
                   "stroke_lift": _cell(d["stroke_lift"]),
                   "purity": _cell(d["purity"]), "paper_purity": f"{paper[1]:.2f}" if paper else NOT_IN_PAPER,
                   "ratio_heldout": _cell(d["ratio"]),
                   "paper_ratio": f"{paper[2]:.2f}" if paper else NOT_IN_PAPER})
    if t9:
        rd.save_table("table9_controls", t9, title=f"Table 9 (MNIST, layer {cl}): stroke alignment, purity "
                      "and Ratio (held-out) for the trained network and the negative controls; paper columns "
                      f"beside ours. {note}")
    per_layer = []
    for layer in cfg.layers:
        for m in METHODS:
            row = {"layer": layer, "method": METHOD_NAMES[m]}
            for k in ("dacc_pp", "pair", "pair_in_sample", "ratio", "ratio_in_sample", "purity", "selectivity",
                      "sparsity", "stroke", "stroke_lift", "size"):
                row[k] = _cell(_per_seed(rows, k, m, [layer]), 4 if k.startswith("pair") else 3)
            row["ari_split_half"] = _cell(_per_seed_part(prows, "ari", m, [layer]))
            row[f"pct_in_2_{cfg.solver.max_size}"] = _cell([100 * v for v in _per_seed_part(prows, "coverage", m,
                                                                                         [layer])], 1)
            per_layer.append(row)
    rd.save_table("per_layer", per_layer, title=f"Every metric per layer and method (trained networks, {ci}; "
                  f"pair / ratio held-out, *_in_sample beside). {note}")
    return means, per_seed


def write_stability_table(rd: RunDir, max_size: int = 10) -> None:
    """The stability certificate of every hedonic partition (both halves), with the share of neurons in
    coalitions of 2..max_size (baselines and Leiden are not certified)."""
    from hedonic_neurons.metrics.crossfit import coverage

    rows = []
    for key, methods in rd.partitions().items():
        for stem in sorted(methods):
            method, _, half = stem.partition(".")
            if method not in ("hedonic_oca", "hedonic_pas"):
                continue
            p = rd.load_partition(key, stem)
            st, pa = p.get("stability", {}), p.get("params", {})
            sizes = np.bincount(np.unique(p["labels"], return_inverse=True)[1])
            rows.append({"network_layer": key, "method": METHOD_NAMES[method],
                         "fitted_on": f"half {half or 'a'}", "n_coalitions": p["n_coalitions"],
                         "mean_size": f"{sizes.mean():.2f}", "singletons": int((sizes == 1).sum()),
                         "largest": int(sizes.max()),
                         f"pct_in_2_{max_size}": f"{100 * coverage(p['labels'], 2, max_size):.1f}",
                         "threshold_rule": pa.get("threshold_rule", "n/a"),
                         "nash_stable": st.get("nash_stable", "n/a"),
                         "blocking_rate": st.get("rate", "n/a"), "upper_bound": st.get("upper", "n/a"),
                         "n_samples": st.get("n_samples", "n/a"), "seconds": f"{pa.get('seconds', 0):.1f}"})
    if rows:
        rd.save_table("stability", rows, title="Stability certificate of every hedonic partition: share of "
                      "fresh sampled coalitions that block it, with its one-sided upper confidence bound; "
                      f"pct_in_2_{max_size}: share of neurons in coalitions of 2-{max_size}")


def write_accuracy_table(rd: RunDir, variants) -> None:
    rows = []
    for variant, setting, seed in variants:
        p = rd.root / "models" / f"{variant}.json"
        if p.exists():
            info = json.loads(p.read_text())
            rows.append({"network": variant, "setting": SETTING_NAMES[setting], "seed": seed,
                         "train_accuracy": f"{info['train_accuracy']:.4f}",
                         "heldout_accuracy": f"{info['test_accuracy']:.4f}",
                         "n_train": info["n_train"], "n_heldout": info["n_test"],
                         "train_seconds": f"{info['train_seconds']:.1f}"})
    rd.save_table("accuracy", rows, title="Accuracy of every network on the held-out digits (the paper's 98.8 % "
                  "is on the official 10k test set, which is not available offline; ours is a stratified 20 % "
                  "of the first 10,000 training digits)")


def digit_grids(rd: RunDir, cfg: MnistConfig, data: _Data, rows: list[dict], variant: str) -> list[Path]:
    """Top-64 images (label above each) of the purest Hedonic-PAS coalitions of the control layer (Fig. 3-6),
    for the half-a partition, drawn from the other half's digits (those its purity was measured on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hedonic_neurons.metrics.mnist import coalition_activation, top_k

    layer = cfg.control_layer if cfg.control_layer in cfg.layers else cfg.layers[len(cfg.layers) // 2]
    cand = [r for r in rows if r["variant"] == variant and r["layer"] == layer and r["method"] == "hedonic_pas"
            and r.get("half", "a") == "a"]
    # real coalitions (two or more neurons) first, purest first; single neurons only if nothing else is left
    cand.sort(key=lambda r: (r["size"] < 2, -r["purity"], -r["selectivity"]))
    model_path = rd.root / "models" / f"{variant}.safetensors"
    from hedonic_neurons.models.gated_mlp import GatedMLPClassifier

    ix = halves(cfg, len(data.y_test))[eval_half(cfg, "a")]
    H = _hidden(GatedMLPClassifier.load(model_path), data.X_test[ix], layer)
    images, labels = data.images_test[ix], data.y_test[ix]
    paths = []
    for rank, r in enumerate(cand[: cfg.n_grids]):
        idx = top_k(coalition_activation(H, r["members"]), 64)
        side = int(np.ceil(np.sqrt(len(idx))))
        # one montage in one axes (8 x 8 digits, 10-pixel label strip above each): 64 sub-axes cost seconds
        cell_h, cell_w = 38, 30
        canvas = np.zeros((side * cell_h, side * cell_w))
        fig, ax = plt.subplots(figsize=(side * 0.8, side * 1.0))
        for pos, n in enumerate(idx):
            rr, cc = divmod(pos, side)
            canvas[rr * cell_h + 10: rr * cell_h + 38, cc * cell_w + 1: cc * cell_w + 29] = images[n]
            ax.text(cc * cell_w + 15, rr * cell_h + 5, str(int(labels[n])), ha="center", va="center",
                    fontsize=8, color="black")
        ax.imshow(canvas, cmap="gray_r", interpolation="nearest")
        ax.axis("off")
        ax.set_title(f"{variant} {layer} Hedonic-PAS coalition {r['coalition']} (|C|={r['size']}): purity "
                     f"{r['purity']:.2f}, top digit {r['top_digit']},\nbest stroke template "
                     f"{r.get('stroke_template', '')} ({r.get('stroke', float('nan')):.2f}); top-64 digits of the "
                     "half it was not fitted on, true label above each", fontsize=8)
        fig.tight_layout()
        path = rd.figure_path(f"grid_{layer}_hedonic_pas_{rank + 1}")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


ORDER = ("hedonic_pas", "hedonic_oca", "ward", "kmeans", "random")  # the paper's (Leiden is not in it)
LOWER_IS_BETTER = {"sparsity"}
METRIC_NAMES = {"dacc_pp": "accuracy drop (dAcc)", "pair": "Pair synergy (held-out)",
                "ratio": "Ratio synergy (held-out)", "purity": "digit purity", "selectivity": "digit selectivity",
                "sparsity": "activation sparsity", "stroke": "stroke alignment",
                "stroke_lift": "stroke alignment relative to an average digit (lift)"}


def ordering_verdict(means: dict[str, dict[str, float]], metric: str) -> tuple[bool | None, str]:
    """Whether Hedonic-PAS > Hedonic-OCA > hierarchical > k-means > random held for one metric (Leiden, not in
    the paper, is left out of the verdict), and our order of all six methods."""
    from hedonic_neurons.metrics.crossfit import ordering_holds

    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    vals = {m: means[m][metric] for m in METHODS}
    # NaN means last, in METHODS order (sorted is stable), and the verdict undecided (None) when one is in ORDER
    ours = sorted(METHODS, key=lambda m: -sign * vals[m] if np.isfinite(vals[m]) else np.inf)
    held = ordering_holds(vals, ORDER, higher_is_better=sign > 0)
    return held, " > ".join(f"{METHOD_NAMES[m]} ({vals[m]:.3g})" for m in ours)


def _lo_hi(values: list[float]) -> tuple[float, float, float]:
    from hedonic_neurons.metrics.stats import mean_ci95

    if not values:
        return float("nan"), float("nan"), float("nan")
    m, h = mean_ci95(values)
    return m, m - h, m + h


def default_vs_all(per_seed: dict, metric: str = "pair", ref: str = "hedonic_pas") -> str:
    """Plain words: did `ref` beat every other method (Leiden included) on `metric`, with 95 % CIs apart?"""
    m0, lo0, hi0 = _lo_hi(per_seed[ref][metric])
    others = {m: _lo_hi(per_seed[m][metric]) for m in METHODS if m != ref and per_seed[m][metric]}
    if not others or not np.isfinite(m0):
        return f"{METHOD_NAMES[ref]}: no finite {metric}"
    from hedonic_neurons.metrics.crossfit import versus_best

    best, verdict = versus_best((m0, lo0, hi0), others, METHOD_NAMES)
    mb, lob, hib = others[best]
    return (f"{METHOD_NAMES[ref]} {m0:.3g} [{lo0:.3g}, {hi0:.3g}] vs best other {METHOD_NAMES[best]} "
            f"{mb:.3g} [{lob:.3g}, {hib:.3g}]: {verdict}")


def write_summary(rd: RunDir, cfg: MnistConfig, means: dict, per_seed: dict, rows: list[dict], prows: list[dict],
                  variants, seconds: float) -> Path:
    """summary.md: metric by metric, in plain words, whether the paper's ordering held (held-out scores)."""
    accs = []
    for variant, setting, _ in variants:
        p = rd.root / "models" / f"{variant}.json"
        if p.exists() and setting == "trained":
            accs.append(json.loads(p.read_text())["test_accuracy"])
    layers = [la for la in TABLE_LAYERS if la in cfg.layers] or list(cfg.layers)
    lines = ["# MNIST experiment: summary", "",
             f"Networks: gated MLP 784-256, 4 gated blocks (d_ff {cfg.d_ff}), LayerNorm, head; {len(cfg.seeds)} "
             f"seed(s), {cfg.epochs} epochs of AdamW. Held-out accuracy "
             f"{100 * np.mean(accs):.2f} % (range {100 * min(accs):.2f}-{100 * max(accs):.2f} %) on "
             f"{_n_test(rd, variants)} held-out digits (the paper reports "
             "98.8 % on the official test set, which is not available offline).",
             "", f"Evaluation: {crossfit_note(cfg)}.",
             "", f"Tables 7-8 aggregate layers {', '.join(layers)} (as the paper does); every number is the mean "
             "over seeds of the mean over coalitions (and over the two fitting halves). The paper's ordering is "
             "Hedonic-PAS > Hedonic-OCA > hierarchical > k-means > random (lower is better for sparsity); Leiden "
             "(CPM), not in the paper, is placed in our order but left out of that verdict.", ""]
    from hedonic_neurons.metrics.crossfit import held_words

    n_held = 0
    for metric in ("dacc_pp", "pair", "ratio", "purity", "selectivity", "sparsity", "stroke", "stroke_lift"):
        held, order = ordering_verdict(means, metric)
        n_held += bool(held)
        best = "Hedonic-PAS is best" if order.startswith("Hedonic-PAS") else "Hedonic-PAS is NOT best"
        verdict = held_words(held, {m: means[m][metric] for m in ORDER}, METHOD_NAMES, no="did not hold")
        lines.append(f"- **{METRIC_NAMES[metric]}**: the paper's ordering {verdict}"
                     f" ({best}). Ours: {order}.")
    lines += ["", f"The full ordering held for {n_held} of 8 metrics.", "",
              "## The default hedonic method against Leiden and every baseline (layers "
              f"{', '.join(layers)}, mean [95 % CI] over seeds)", "",
              f"- Held-out Pair: {default_vs_all(per_seed, 'pair')}.",
              f"- Held-out Ratio: {default_vs_all(per_seed, 'ratio')}."]
    if cfg.crossfit:
        a0, al = means["hedonic_pas"]["ari"], means["leiden"]["ari"]
        lines.append(f"- Split-half ARI: Hedonic-PAS {a0:.3f}, Leiden {al:.3f}: "
                     + ("at least Leiden's." if a0 >= al else f"BELOW Leiden's by {al - a0:.3f}."))
    cov = means["hedonic_pas"]["coverage"]
    lines.append(f"- Neurons in coalitions of 2-{cfg.solver.max_size}: Hedonic-PAS {100 * cov:.1f} % "
                 f"({'at least' if cov >= 0.5 else 'BELOW'} half), Leiden {100 * means['leiden']['coverage']:.1f} %.")
    if cfg.crossfit:
        lines += ["", "Split-half ARI per method and layer (trained networks, mean over seeds):", "",
                  "| method | " + " | ".join(cfg.layers) + " |", "|---|" + "---|" * len(cfg.layers)]
        for m in METHODS:
            cells = [_mean(_per_seed_part(prows, "ari", m, [la])) for la in cfg.layers]
            lines.append(f"| {METHOD_NAMES[m]} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    cl = cfg.control_layer
    ctrl = {s: _mean(_per_seed(rows, "purity", "hedonic_pas", [cl], s)) for s in SETTING_NAMES}
    if np.isfinite(ctrl.get("random_init", np.nan)):
        lines += ["", f"Negative controls (layer {cl}, Hedonic-PAS digit purity): trained {ctrl['trained']:.3f}, "
                  f"random init {ctrl['random_init']:.3f}, label-shuffled {ctrl['shuffled']:.3f}. "
                  + ("The trained network's coalitions are purer than both controls', as the paper says."
                     if ctrl["trained"] > max(ctrl["random_init"], ctrl["shuffled"]) else
                     "The trained network's coalitions are NOT purer than both controls'.")]
    for m in ("hedonic_pas", "hedonic_oca", "leiden"):
        sizes = [r["size"] for r in rows if r["setting"] == "trained" and r["method"] == m]
        if sizes:
            sizes_a = np.asarray(sizes)
            lines.append(f"- {METHOD_NAMES[m]} coalitions (all trained layers, both halves): {sizes_a.size} "
                         f"coalitions, {int((sizes_a == 1).sum())} single neurons, largest {int(sizes_a.max())}, "
                         f"median {float(np.median(sizes_a)):.0f}.")
    lines.append("- The size-matched baselines copy Hedonic-PAS's size histogram on the same half.")
    lines += ["", "Notes on reading the numbers:",
              "- Sparsity is ||a_C||_1/||a_C||_2 over the evaluation digits as the paper writes it; it lies in "
              "[1, sqrt(N)], so the paper's values near 1.3-1.9 cannot come from this formula over hundreds of "
              "images; compare methods, not magnitudes.",
              "- Ratio divides by the summed single effects psi(i), which can be close to zero for some coalitions; "
              "a few such coalitions can dominate its mean.",
              "- Selectivity is in the residual stream's own units (differences of mean activations).",
              f"- Wall time of this invocation: {seconds / 60:.1f} min (a resumed run counts only what it "
              "recomputed; per-stage times are in stages/*.done and models/*.json)."]
    path = rd.root / "summary.md"
    tmp = path.with_suffix(".tmp")
    from hedonic_neurons.notices import markdown_section

    tmp.write_text("\n".join(lines) + "\n" + markdown_section(rd.root))
    tmp.replace(path)
    return path


def _n_test(rd: RunDir, variants) -> int:
    for variant, _, _ in variants:
        p = rd.root / "models" / f"{variant}.json"
        if p.exists():
            return int(json.loads(p.read_text())["n_test"])
    return 0



# ---------------------------------------------------------------------------------------------------
# driver and CLI
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
            sr.add(f"partitions_{key}", ("solver",), (f"valuations_{key}",), outputs=(f"partitions/{key}",))
            sr.add(f"metrics_{key}", ("top_k",), (f"partitions_{key}",), outputs=(f"metrics/{key}.json",))
            metrics.append(f"metrics_{key}")
    # the tables read every metrics file (so a new seed or layer rebuilds them) and the first seed's
    # network for the digit grids
    sr.add("tables", ("n_grids", "control_layer"), tuple(metrics))
    if report:
        if len(cfg.layers) > 1:
            sr.add("tracking", (), ("tables",), outputs=("tracking",))
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


def _threads(threads: int | None) -> int:
    """Torch threads: as asked, else the core count, or 1 when the cores are already busy.

    On an oversubscribed machine torch's intra-op thread barriers make 2 threads several times slower
    than 1 (measured here: one training epoch 8x slower), so the automatic choice backs off.
    """
    cores = os.cpu_count() or 1
    if threads:
        return max(1, int(threads))
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return 1 if load >= cores - 0.5 else cores


def record_runtime(rd: RunDir, threads: int, jobs: int = 1) -> None:
    """Append how this invocation ran (threads, worker processes, MKL reproducibility mode, torch) to
    RUN/runtime.json.

    Recorded, not configured: the results are the same for any thread count (README "Reproducibility"), so
    a run may be resumed with another one, and config.json does not hold it.
    """
    import torch

    path = rd.root / "runtime.json"
    runs = json.loads(path.read_text()) if path.is_file() else []
    runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "threads": int(threads), "jobs": int(jobs),
                 "MKL_CBWR": os.environ.get("MKL_CBWR", ""), "torch": torch.__version__})
    write_json(path, runs)


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
    torch.set_num_threads(_threads(threads))
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


def _write_coalitions_csv(path: Path, rows: list[dict]) -> None:
    import csv

    cols = ["variant", "setting", "seed", "layer", "method", "half", "scored_on", "coalition", "size", "dacc_pp",
            "pair", "ratio", "pair_in_sample", "ratio_in_sample", "purity", "selectivity", "sparsity", "stroke",
            "stroke_template", "stroke_lift", "stroke_lift_template",
            "top_digit", "members"]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "members": " ".join(map(str, r["members"]))})
    tmp.replace(path)


def _parse_layers(text: str) -> list[str]:
    text = text.strip()
    if ".." in text:
        a, b = text.split("..")
        lo, hi = int(a.strip().lstrip("h")), int(b.strip().lstrip("h"))
        return [f"h{i}" for i in range(lo, hi + 1)]
    return [f"h{t.strip().lstrip('h')}" for t in text.split(",") if t.strip()]


def run(args: argparse.Namespace) -> int:
    from hedonic_neurons.configs import config_from_args

    if getattr(args, "mnist_quiet", False):
        os.environ["TQDM_DISABLE"] = "1"
        logging.getLogger().setLevel(logging.WARNING)
    cfg = MnistConfig(seeds=list(range(args.seeds)), layers=_parse_layers(args.layers), data=args.data,
                      n_train=args.n_train, n_test=args.n_test, epochs=args.epochs,
                      solver=config_from_args(MnistConfig().solver, args, args.solver_fields),
                      controls=not args.no_controls, control_layer=args.control_layer,
                      control_seeds=(list(range(min(args.control_seeds, args.seeds))) if args.control_seeds
                                     else None),
                      loss_delta_images=args.loss_delta_images, verify=not args.no_verify,
                      crossfit=not args.no_crossfit)
    from hedonic_neurons import notices

    t0 = time.time()
    failures: list[str] = []
    with notices.collect(args.out):  # fallbacks that changed a result go to warnings.txt and summary.md
        try:
            rd = run_mnist(cfg, args.out, threads=args.threads, force=args.force, report=True,
                             jobs=args.jobs)
        except FinishFailed as exc:  # tracking or the report: the results are on disk, the run is not finished
            failures.append(str(exc))
            rd = RunDir(args.out)
    report = rd.root / "report.html" if (rd.root / "report.html").is_file() else None
    print(f"MNIST run finished in {(time.time() - t0) / 60:.1f} min; summary: {rd.root / 'summary.md'}")
    print(f"report: {report if report is not None else rd.root / 'summary.md'}")
    if failures:  # the results are on disk, but the run is not finished: say so, and exit non-zero
        for f in failures:
            notices.record(rd.root, f)
        raise RuntimeError(f"{'; '.join(failures)}; the tables and summary.md are in {rd.root}: fix the cause and "
                           "re-run the same command (finished stages are skipped)")
    return 0


def register(subparsers) -> None:
    from hedonic_neurons.configs import add_config_flags

    p = subparsers.add_parser("mnist", help="the paper's MNIST experiment (appendix I): 3 seeds, h1..h5, 6 methods, "
                              "negative controls, Tables 7-9")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1), default 3")
    p.add_argument("--layers", default="h1..h5", help="layers, e.g. h1..h5 or h2,h3 (default h1..h5)")
    p.add_argument("--out", default="runs/mnist", help="run directory (resumed when it exists)")
    p.add_argument("--data", default=None, help="an npz or a directory of IDX files (full MNIST, Fashion-MNIST); "
                   "default: the fetched 10k digits")
    p.add_argument("--n-train", type=int, default=None, help="use at most this many training images (tests)")
    p.add_argument("--n-test", type=int, default=None, help="use at most this many held-out images (tests)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the core count, or 1 "
                   "when the machine is already busy)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes for the partition and metric stages "
                   "of different layers (default 1; same results, docs/scale.md)")
    p.add_argument("--control-layer", default="h3", help="layer of the negative controls and digit grids (h3)")
    p.add_argument("--control-seeds", type=int, default=1,
                   help="negative-control networks (random init, label-shuffled) for seeds 0..N-1; default 1, "
                   "0 = one per seed (docs/mnist.md: why one by default)")
    p.add_argument("--loss-delta-images", type=int, default=256,
                   help="held-out images for the per-neuron loss deltas (I.3)")
    p.add_argument("--no-controls", action="store_true", help="skip the random-init and label-shuffled controls")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the self-verification of each valuation against the model's own modules")
    p.add_argument("--no-crossfit", action="store_true", help="fit and score on all held-out digits (in-sample "
                   "scores); default: fit on one half, score on the other")
    p.add_argument("--quiet", dest="mnist_quiet", action="store_true", help="no progress bars or log lines")
    p.add_argument("--force", action="store_true", help="recompute every stage of an existing --out (default: "
                   "reuse the stages whose config fields and inputs are unchanged)")
    g = p.add_argument_group("solver (SolverConfig; MNIST defaults m = 8e4, omega = 8e3 as in appendix I.4)")
    p.set_defaults(func=run, solver_fields=add_config_flags(g, MnistConfig().solver, exclude=["random_state"]))
