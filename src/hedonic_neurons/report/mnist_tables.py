"""The MNIST experiment's tables, verdicts and summary prose (appendix I, Tables 7-9): pure functions of the
rows `experiments.mnist` measured and of its config, so the experiment module keeps only the orchestration.

`cfg` is an `experiments.mnist.MnistConfig` (not imported: the report sits below the experiments)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hedonic_neurons.metrics.stats import mean_lo_hi, nanmean_noted, seed_cell
from hedonic_neurons.rundir import RunDir

METHODS = ("random", "kmeans", "ward", "leiden", "hedonic_oca", "hedonic_pas")
METHOD_NAMES = {"random": "Random Partition", "kmeans": "Activation K-Means",
                "ward": "Activation Hierarchical", "leiden": "Leiden (CPM)", "hedonic_oca": "Hedonic-OCA",
                "hedonic_pas": "Hedonic-PAS"}
NOT_IN_PAPER = "–"  # paper columns of methods the paper does not have (Leiden)
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


class RowIndex:
    """Metric rows grouped by (setting, method, seed, half), in their original order, built once.

    Why: the tables ask ~2,500 questions of ~50,000 coalition rows; scanning the list for each took a minute
    of `make demo`. Grouping keeps each group's row order, so every mean is the same float as before."""

    def __init__(self, rows: list[dict]):
        self.groups: dict[tuple, list[dict]] = {}
        self.seeds: dict[str, set] = {}
        self.halves: set = set()
        self.method_seeds: set = set()
        self.methods: set = set()
        for r in rows:
            h = r.get("half", "a")
            self.groups.setdefault((r["setting"], r["method"], r["seed"], h), []).append(r)
            self.seeds.setdefault(r["setting"], set()).add(r["seed"])
            self.halves.add(h)
            self.method_seeds.add((r["method"], r["seed"]))
            self.methods.add(r["method"])


def _per_seed(rows: list[dict] | RowIndex, metric: str, method: str, layers, setting: str = "trained") -> list[float]:
    """One value per seed: the mean over the method's coalitions in `layers`, taken per fitting half and then
    averaged over the halves (cross-fitting: both directions count equally). Finite values only."""
    ix = rows if isinstance(rows, RowIndex) else RowIndex(rows)
    out = []
    for s in sorted(ix.seeds.get(setting, ())):
        per_half = []
        for h in sorted(ix.halves):
            v = [r[metric] for r in ix.groups.get((setting, method, s, h), ())
                 if r["layer"] in layers and r.get(metric) is not None and np.isfinite(r[metric])]
            if v:
                per_half.append(float(np.mean(v)))
            elif (method, s) in ix.method_seeds:
                _missing(f"{metric}, {METHOD_NAMES.get(method, method)} ({setting}, layers {', '.join(layers)}): "
                         f"seed {s} half {h} has no finite value: the seed's mean is over the other half")
        if per_half:
            out.append(float(np.mean(per_half)))
        elif method in ix.methods:
            _missing_seed(metric, method, setting, layers, s)
    return out


def _missing_seed(metric: str, method: str, setting: str, layers, seed: int) -> None:
    _missing(f"{metric}, {METHOD_NAMES.get(method, method)} ({setting}, layers {', '.join(layers)}): "
             f"seed {seed} has no finite value: the mean is over the other seeds")


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
            _missing_seed(metric, method, setting, layers, s)
    return out


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


def crossfit_note(cfg: Any) -> str:
    if not cfg.crossfit:
        return ("cross-fitting OFF: Pair, Ratio and every metric are IN-SAMPLE (scored on the digits and the "
                "valuation the partitions were fitted on)")
    return ("cross-fitted: the held-out digits are split in two seeded halves; partitions fitted on one half's "
            "valuation are scored (Pair, Ratio, dAcc, purity ...) on the other half, both directions averaged; "
            "*_in_sample columns score each partition on its own half (labelled, never used for a verdict); "
            "ARI_split_half: adjusted Rand index between the two halves' partitions")


def write_tables(rd: RunDir, cfg: Any, rows: list[dict], prows: list[dict]) -> tuple[dict, dict]:
    """Tables 7, 8, 9 (ours beside the paper's), per-layer means; returns (means, per-seed values)."""
    layers = [la for la in TABLE_LAYERS if la in cfg.layers] or list(cfg.layers)
    span = f"{layers[0]}–{layers[-1]}" if len(layers) > 1 else layers[0]
    n_seeds = len(cfg.seeds)
    ci = f"mean ± 95 % CI over {n_seeds} seeds" if n_seeds > 1 else "one seed"
    note = crossfit_note(cfg)
    leiden = f"Leiden (CPM): leidenalg CPM on the positive part of the PAS phi, communities <= " \
             f"{cfg.solver.max_size}; " \
             f"resolution rule: {leiden_rule(rd)}"
    ix = RowIndex(rows)  # ~2,500 questions below: group the rows once
    t7, t8 = [], []
    means: dict[str, dict[str, float]] = {}
    per_seed: dict[str, dict[str, list[float]]] = {}
    for m in METHODS:
        d = {k: _per_seed(ix, k, m, layers) for k in ("dacc_pp", "pair", "ratio", "pair_in_sample",
                                                          "ratio_in_sample", "size", "purity", "selectivity",
                                                          "sparsity", "stroke", "stroke_lift")}
        d.update({k: _per_seed_part(prows, k, m, layers) for k in ("ari", "coverage")})
        per_seed[m] = d
        means[m] = {k: nanmean_noted(v) for k, v in d.items()}
        t7.append({"method": METHOD_NAMES[m], "dAcc_pp": seed_cell(d["dacc_pp"]),
                   "dAcc_sd_within": f"{_within_sd(rows, 'dacc_pp', m, layers):.3f}",
                   # the paper's ± is a standard deviation, ours a 95 % CI: the cell says which
                   "paper_dAcc": (f"{PAPER_T7[m][0]:.2f} ± {PAPER_T7[m][1]:.2f} (sd)" if m in PAPER_T7
                                  else NOT_IN_PAPER),
                   "Pair_heldout": seed_cell(d["pair"], 4), "Pair_in_sample": seed_cell(d["pair_in_sample"], 4),
                   "paper_Pair": _paper(PAPER_T7, m, 2, ".3f"), "Ratio_heldout": seed_cell(d["ratio"]),
                   "Ratio_in_sample": seed_cell(d["ratio_in_sample"]), "paper_Ratio": _paper(PAPER_T7, m, 3, ".2f"),
                   "ARI_split_half": seed_cell(d["ari"]),
                   f"pct_in_2_{cfg.solver.max_size}": seed_cell([100 * v for v in d["coverage"]], 1),
                   "avg_size": seed_cell(d["size"], 2), "paper_avg_size": _paper(PAPER_T7, m, 4, ".1f")})
        t8.append({"method": METHOD_NAMES[m], "purity": seed_cell(d["purity"]),
                   "paper_purity": _paper(PAPER_T8, m, 0, ".2f"),
                   "selectivity": seed_cell(d["selectivity"]), "paper_selectivity": _paper(PAPER_T8, m, 1, ".2f"),
                   "sparsity": seed_cell(d["sparsity"], 2), "paper_sparsity": _paper(PAPER_T8, m, 2, ".2f"),
                   "stroke": seed_cell(d["stroke"]), "stroke_lift": seed_cell(d["stroke_lift"])})
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
        d = {k: _per_seed(ix, k, m, [cl], setting) for k in ("stroke", "stroke_lift", "purity", "ratio")}
        if not d["purity"]:
            continue
        t9.append({"setting": f"{SETTING_NAMES[setting]}, {cl}", "method": METHOD_NAMES[m],
                   "stroke": seed_cell(d["stroke"]), "paper_stroke": f"{paper[0]:.2f}" if paper else NOT_IN_PAPER,
                   "stroke_lift": seed_cell(d["stroke_lift"]),
                   "purity": seed_cell(d["purity"]), "paper_purity": f"{paper[1]:.2f}" if paper else NOT_IN_PAPER,
                   "ratio_heldout": seed_cell(d["ratio"]),
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
                row[k] = seed_cell(_per_seed(ix, k, m, [layer]), 4 if k.startswith("pair") else 3)
            row["ari_split_half"] = seed_cell(_per_seed_part(prows, "ari", m, [layer]))
            row[f"pct_in_2_{cfg.solver.max_size}"] = seed_cell([100 * v for v in _per_seed_part(prows, "coverage", m,
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


def default_vs_all(per_seed: dict, metric: str = "pair", ref: str = "hedonic_pas") -> str:
    """Plain words: did `ref` beat every other method (Leiden included) on `metric`, with 95 % CIs apart?"""
    m0, lo0, hi0 = mean_lo_hi(per_seed[ref][metric])
    others = {m: mean_lo_hi(per_seed[m][metric]) for m in METHODS if m != ref and per_seed[m][metric]}
    if not others or not np.isfinite(m0):
        return f"{METHOD_NAMES[ref]}: no finite {metric}"
    from hedonic_neurons.metrics.crossfit import fmt_mean_ci, versus_best

    best, verdict = versus_best((m0, lo0, hi0), others, METHOD_NAMES)
    return (f"{METHOD_NAMES[ref]} {fmt_mean_ci((m0, lo0, hi0))} vs best other {METHOD_NAMES[best]} "
            f"{fmt_mean_ci(others[best])}: {verdict}")


def write_summary(rd: RunDir, cfg: Any, means: dict, per_seed: dict, rows: list[dict], prows: list[dict],
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
            cells = [nanmean_noted(_per_seed_part(prows, "ari", m, [la])) for la in cfg.layers]
            lines.append(f"| {METHOD_NAMES[m]} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    cl = cfg.control_layer
    ctrl = {s: nanmean_noted(_per_seed(rows, "purity", "hedonic_pas", [cl], s)) for s in SETTING_NAMES}
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


def draw_digit_grids(rd: RunDir, n_grids: int, rows: list[dict], variant: str, layer: str, H: np.ndarray,
                     images: np.ndarray, labels: np.ndarray) -> list[Path]:
    """Top-64 images (label above each) of the purest Hedonic-PAS coalitions of `layer` (Fig. 3-6), for the
    half-a partition; `H`, `images`, `labels`: the digits it is drawn from (the other half's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hedonic_neurons.metrics.mnist import coalition_activation, top_k

    cand = [r for r in rows if r["variant"] == variant and r["layer"] == layer and r["method"] == "hedonic_pas"
            and r.get("half", "a") == "a"]
    # real coalitions (two or more neurons) first, purest first; single neurons only if nothing else is left
    cand.sort(key=lambda r: (r["size"] < 2, -r["purity"], -r["selectivity"]))
    paths = []
    for rank, r in enumerate(cand[:n_grids]):
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
