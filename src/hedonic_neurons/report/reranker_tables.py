"""The reranker experiment's tables and summary prose (paper Tables 1, 2, 4-6): functions of the run
directory and the config, so `experiments.reranker` keeps only the orchestration.

`cfg` is an `experiments.reranker.RerankerConfig` (not imported: the report sits below the experiments)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from hedonic_neurons.models.finetune import TASK_NAMES
from hedonic_neurons.rundir import RunDir, write_json

METHODS = ("random", "kmeans", "ward", "leiden", "hedonic_oca", "hedonic_pas")
METHOD_LABELS = {"random": "Random", "kmeans": "K-means", "ward": "Hier. clustering", "leiden": "Leiden (CPM)",
                 "hedonic_oca": "Hedonic (OCA)", "hedonic_pas": "Hedonic (PAS)"}
BASELINES = ("random", "kmeans", "ward", "leiden")  # what Hedonic-PAS is compared with in the summary
NOT_IN_PAPER = "–"  # paper columns of methods the paper does not have (Leiden)

# The paper's numbers (Table 1: LLaMA-3.1 column; Table 2: average of three LLMs; Table 6: LLaMA-3.1).
PAPER_TABLE1 = {  # task -> method -> (OOD drop, Align R2)
    "cqtr": {"random": (0.01, 0.05), "kmeans": (0.02, 0.12), "ward": (0.03, 0.15), "hedonic_oca": (0.07, 0.41),
             "hedonic_pas": (0.11, 0.58)},
    "mtfl": {"random": (0.01, 0.04), "kmeans": (0.02, 0.11), "ward": (0.03, 0.14), "hedonic_oca": (0.06, 0.38),
             "hedonic_pas": (0.10, 0.55)},
    "relevance": {"random": (0.02, 0.06), "kmeans": (0.03, 0.13), "ward": (0.04, 0.17),
                  "hedonic_oca": (0.09, 0.47), "hedonic_pas": (0.14, 0.63)},
}
PAPER_TABLE2 = {"cqtr": {"random": 0.08, "kmeans": 0.16, "ward": 0.18, "hedonic_oca": 0.34, "hedonic_pas": 0.43},
                "mtfl": {"random": 0.09, "kmeans": 0.15, "ward": 0.17, "hedonic_oca": 0.33, "hedonic_pas": 0.42},
                "relevance": {"random": 0.12, "kmeans": 0.21, "ward": 0.21, "hedonic_oca": 0.38,
                              "hedonic_pas": 0.47}}
PAPER_TABLE6 = {  # task -> method -> (Pair, Ratio), LLaMA-3.1
    "cqtr": {"random": (0.01, 0.49), "kmeans": (-0.23, 0.32), "ward": (-0.11, 0.41), "hedonic_oca": (0.08, 0.74),
             "hedonic_pas": (0.12, 0.86)},
    "mtfl": {"random": (0.02, 0.41), "kmeans": (-0.22, 0.34), "ward": (-0.08, 0.43), "hedonic_oca": (0.01, 0.72),
             "hedonic_pas": (0.09, 0.85)},
    "relevance": {"random": (0.01, 0.42), "kmeans": (-0.13, 0.33), "ward": (-0.09, 0.42),
                  "hedonic_oca": (0.05, 0.77), "hedonic_pas": (0.11, 0.81)},
}


def finetune_table(rd: RunDir, cfg: Any, rep: dict) -> None:
    """Table `finetune`: untuned, linear-probe head only, fine-tuned, on the OOD set (Tables 4-5)."""
    c = cfg
    metric = "ndcg@10" if c.task == "relevance" else "mse"
    better = rep["ood_after"]["M"] > rep["ood_before"]["M"]
    head_only = rep.get("ood_head_only")
    rows = [{"model": c.model, "task": TASK_NAMES[c.task], "metric": f"OOD {metric}" + (
        " (derived labels)" if c.task == "relevance" else " (z units)"),
        "untuned": round(rep["ood_before"][metric], 4),
        "head only (linear probe)": round(head_only[metric], 4) if head_only else "n/a",
        "fine-tuned": round(rep["ood_after"][metric], 4),
        "fine-tuned better": "yes" if better else "no", "train pairs": rep["n_train"], "OOD pairs": rep["n_ood"],
        "steps": rep["steps"], "seconds": rep["train_seconds"]}]
    rd.save_table("finetune", rows, title="Fine-tuning: untuned vs fine-tuned on the OOD set "
                  "(TREC DL-19/20 queries x Wikipedia pool), as the paper's Tables 4-5; 'head only' is the "
                  "new head fitted by ridge before LoRA training (LP-FT), adapter off")


def subset_rule(cfg: Any) -> str:
    c = cfg
    return (f"OOD drop on the {c.n_largest} largest coalitions plus {c.n_random} drawn at random (seeded) from "
            f"the other coalitions of size >= 2, per method, layer and seed; alignment on every coalition of size "
            f">= 2; Pair and Ratio on every coalition of size >= 2 when exact PAS covers all pairs (norm + "
            f"linear tails), else on the evaluated subset from exact pair ablations (at most {c.synergy_pairs} "
            f"random pairs per coalition); predictivity on the whole "
            f"partition")


def crossfit_note(cfg: Any) -> str:
    if not cfg.crossfit:
        return ("Cross-fitting OFF: Pair and Ratio are IN-SAMPLE (scored on the probe pairs the partitions were "
                "fitted on).")
    return ("Cross-fitted: the probe pairs are split into two seeded halves of whole queries; partitions "
            "fitted on one half's valuation are scored (Pair, Ratio) on the other half's, both directions "
            "averaged; 'in-sample' columns score each partition on its own half (labelled, never used for a "
            "verdict); split-half ARI: adjusted Rand index between the two halves' partitions; % in 2-"
            f"{cfg.solver.max_size}: share of channels in coalitions of 2-{cfg.solver.max_size} "
            "(mean over halves). "
            "OOD drop, alignment and predictivity are measured on the OOD pairs (never used for fitting) for "
            "the half-a partitions; predictivity's ridge is trained on all probe pairs.")


def leiden_note(rd: RunDir, cfg: Any) -> str:
    rule = "n/a"
    for layer in cfg.layers:
        p = rd.partition_path(str(layer), "leiden")
        if p.is_file():
            rule = json.loads(p.read_text()).get("params", {}).get("resolution_rule", "n/a")
            rule = f"{rule} (e.g. layer {layer}, seed 0, half a; every partition's: partitions/<l>/leiden*.json)"
            break
    return (f"Leiden (CPM): leidenalg CPM on the positive part of the PAS phi of the same half, communities <= "
            f"{cfg.solver.max_size}; resolution rule: {rule}.")


def write_tables(rd: RunDir, cfg: Any) -> dict:
    """Tables 1, 2, 6, finetune and eval_per_layer (mean ± 95 % CI over seeds), summary.md, results.json."""
    from hedonic_neurons.metrics.stats import nanmean_noted, seed_cell

    c = cfg
    finetune_table(rd, cfg, json.loads((rd.root / "finetune.json").read_text()))
    keys = ("ood_drop", "align_r2", "predictivity_r2", "pair", "ratio", "pair_in_sample", "ratio_in_sample",
            "ari", "coverage")
    per_seed: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
    for seed in range(c.seeds):
        ev = [json.loads((rd.root / "eval" / f"{layer}_s{seed}.json").read_text()) for layer in c.layers]
        for m in METHODS:
            for key in keys:
                vals = [e["per_method"][m].get(key, float("nan")) for e in ev]
                # a NaN layer is left out of the seed's mean, visibly (ResultWarning -> summary, report)
                per_seed[m].setdefault(key, []).append(nanmean_noted(
                    vals, f"{key}, {METHOD_LABELS[m]}, seed {seed}", c.layers, unit="layer"))

    def cell(m, key, scale=1.0):
        # NaN seeds are named in a warning; tiny values keep 3 significant digits; 1 seed has no CI
        return seed_cell([scale * v for v in per_seed[m][key]], 3, what=f"{key}, {METHOD_LABELS[m]}",
                         labels=list(range(c.seeds)))

    def paper(table, m, i=None):
        v = table[c.task].get(m)
        return NOT_IN_PAPER if v is None else (v if i is None else v[i])

    label = "derived labels" if c.task == "relevance" else "z units"
    t1 = [{"task": TASK_NAMES[c.task], "algorithm": METHOD_LABELS[m], "OOD drop": cell(m, "ood_drop"),
           "Align R2": cell(m, "align_r2"), "paper OOD drop (LLaMA)": paper(PAPER_TABLE1, m, 0),
           "paper Align R2 (LLaMA)": paper(PAPER_TABLE1, m, 1)} for m in METHODS]
    t2 = [{"task": TASK_NAMES[c.task], "algorithm": METHOD_LABELS[m], "OOD R2": cell(m, "predictivity_r2"),
           "paper R2 (3-LLM mean)": paper(PAPER_TABLE2, m)} for m in METHODS]
    held = "held-out" if c.crossfit else "in-sample"
    t6 = [{"task": TASK_NAMES[c.task], "algorithm": METHOD_LABELS[m], f"Pairwise ({held})": cell(m, "pair"),
           f"Ratio ({held})": cell(m, "ratio"), "Pairwise (in-sample)": cell(m, "pair_in_sample"),
           "Ratio (in-sample)": cell(m, "ratio_in_sample"), "split-half ARI": cell(m, "ari"),
           f"% in 2-{c.solver.max_size}": cell(m, "coverage", 100.0),
           "paper Pairwise (LLaMA)": paper(PAPER_TABLE6, m, 0), "paper Ratio (LLaMA)": paper(PAPER_TABLE6, m, 1)}
          for m in METHODS]
    if not c.crossfit:
        for r in t6:
            del r["Pairwise (in-sample)"], r["Ratio (in-sample)"], r["split-half ARI"]
    where = (f"{c.model}, layers {c.layers[0]}-{c.layers[-1]}, mean ± 95 % CI over {c.seeds} seeds; "
             f"M = {'NDCG@10' if c.task == 'relevance' else '-MSE'} ({label})")
    rd.save_table("table1_extrinsic", t1, title=f"Table 1: OOD drop and feature alignment R2 ({where}). "
                  + subset_rule(cfg))
    rd.save_table("table2_predictivity", t2, title=f"Table 2: coalition predictivity, ridge R2 on OOD "
                  f"({where})")
    rd.save_table("table6_synergy", t6, title=f"Table 6: coalition synergy on exact PAS ({where}). "
                  f"{crossfit_note(cfg)} {leiden_note(rd, cfg)}")
    all_rows = []
    for seed in range(c.seeds):
        for layer in c.layers:
            e = json.loads((rd.root / "eval" / f"{layer}_s{seed}.json").read_text())
            for m in METHODS:
                all_rows.append({"layer": layer, "seed": seed, "method": m, **e["per_method"][m]})
    rd.save_table("eval_per_layer", all_rows, title="Per layer and seed (means over the evaluated "
                  "coalitions; pair / ratio held-out, *_in_sample beside, ari = split-half ARI)")
    means = {m: {k: nanmean_noted(per_seed[m][k]) for k in per_seed[m]} for m in METHODS}
    summary = summary_md(rd, cfg, means, per_seed, all_rows)
    from hedonic_neurons.notices import markdown_section

    (rd.root / "summary.md").write_text(summary + markdown_section(rd.root))
    write_json(rd.root / "results.json", {"per_seed": per_seed, "means": means})
    return {}


def summary_md(rd: RunDir, cfg: Any, means: dict, per_seed: dict | None = None,
               all_rows: list[dict] | None = None) -> str:
    """summary.md: the fine-tuning result and, claim by claim, whether the paper's ordering held."""
    from hedonic_neurons.metrics.crossfit import beats_all, fmt_mean_ci, has_ci, held_words, versus_best
    from hedonic_neurons.metrics.stats import mean_lo_hi

    c = cfg
    ft = json.loads((rd.root / "finetune.json").read_text())
    metric = "ndcg@10" if c.task == "relevance" else "mse"
    lines = [f"# Reranker run: {c.model}, task {TASK_NAMES[c.task]}, layers {c.layers[0]}-{c.layers[-1]}", ""]
    if c.task == "relevance":
        lines.append("Relevance labels on the embedded pool are DERIVED (BM25 rank and article identity), "
                     "not human judgments.")
    b, a = ft["ood_before"][metric], ft["ood_after"][metric]
    better = ft["ood_after"]["M"] > ft["ood_before"]["M"]
    lines.append(f"Fine-tuning: OOD {metric} {b:.4f} (untuned) -> {a:.4f} (fine-tuned): the fine-tuned model "
                 f"is {'better' if better else 'NOT better'} on the OOD set.")
    if ft.get("ood_head_only"):
        lines.append(f"The new head alone (ridge linear probe, LoRA off) scores {ft['ood_head_only'][metric]:.4f}: "
                     "what LoRA adds is the difference from the fine-tuned figure.")
    lines += ["", crossfit_note(cfg), ""]

    def lo_hi(m, key):
        return mean_lo_hi((per_seed or {}).get(m, {}).get(key, []))

    held = "held-out" if c.crossfit else "in-sample"
    claims = [("ood_drop", "OOD drop"), ("align_r2", "alignment R2"), ("predictivity_r2", "predictivity R2"),
              ("pair", f"Pairwise synergy ({held})"), ("ratio", f"Ratio synergy ({held})")]
    for key, name in claims:
        v = {m: means[m][key] for m in METHODS}
        # None (undecided) when a value is NaN: max() over NaN would depend on the list's order
        pas_ok = beats_all(v, "hedonic_pas", ("random", "kmeans", "ward"))
        oca_ok = beats_all(v, "hedonic_oca", ("random", "kmeans", "ward"))
        above_leiden = beats_all(v, "hedonic_pas", ("leiden",))
        order = " > ".join(f"{METHOD_LABELS[m]} ({v[m]:.3g})" for m in sorted(METHODS, key=lambda m: -v[m]
                                                                               if np.isfinite(v[m]) else 1e9))
        sep = ""
        if per_seed is not None and pas_ok:
            best = max(("random", "kmeans", "ward"), key=lambda m: v[m])
            if not (has_ci(lo_hi("hedonic_pas", key)) and has_ci(lo_hi(best, key))):
                sep = " (on the means only: with fewer than 2 seeds there is no 95 % CI, so beyond them undecided)"
            elif lo_hi("hedonic_pas", key)[1] > lo_hi(best, key)[2]:
                sep = " (the 95 % CIs of Hedonic-PAS and the best of them do not overlap)"
            else:
                sep = " (on the means only: the 95 % CIs of Hedonic-PAS and the best of them overlap)"
        lines.append(f"- {name}: {order}. The paper's ordering (Hedonic-PAS above the three paper baselines) "
                     f"{held_words(pas_ok, v, METHOD_LABELS)}{sep}; Hedonic-OCA above them "
                     f"{held_words(oca_ok, v, METHOD_LABELS)}; Hedonic-PAS above Leiden: "
                     f"{held_words(above_leiden, v, METHOD_LABELS, yes='yes', no='NO')}.")
    if per_seed is not None:
        lines += ["", f"## The default hedonic method against Leiden and every baseline (mean [95 % CI] over "
                  f"{c.seeds} seeds, layers {c.layers[0]}-{c.layers[-1]})", ""]
        for key, name in (("pair", f"{held} Pair"), ("ratio", f"{held} Ratio")):
            m0, lo0, hi0 = lo_hi("hedonic_pas", key)
            others = {m: lo_hi(m, key) for m in METHODS if m != "hedonic_pas"}
            others = {m: o for m, o in others.items() if np.isfinite(o[0])}
            if not others or not np.isfinite(m0):
                lines.append(f"- {name}: not finite for Hedonic-PAS or the others")
                continue
            best, verdict = versus_best((m0, lo0, hi0), others, METHOD_LABELS)
            lines.append(f"- {name}: Hedonic (PAS) {fmt_mean_ci((m0, lo0, hi0))} vs best other "
                         f"{METHOD_LABELS[best]} {fmt_mean_ci(others[best])}: {verdict}.")
        if c.crossfit:
            a0, al = means["hedonic_pas"]["ari"], means["leiden"]["ari"]
            lines.append(f"- Split-half ARI: Hedonic (PAS) {a0:.3f}, Leiden {al:.3f}: "
                         + ("at least Leiden's." if a0 >= al else f"BELOW Leiden's by {al - a0:.3f}."))
        cov = means["hedonic_pas"]["coverage"]
        lines.append(f"- Channels in coalitions of 2-{c.solver.max_size}: Hedonic (PAS) {100 * cov:.1f} % "
                     f"({'at least' if cov >= 0.5 else 'BELOW'} half), Leiden "
                     f"{100 * means['leiden']['coverage']:.1f} %.")
    if all_rows and c.crossfit:
        lines += ["", "Split-half ARI per method and layer (mean over seeds):", "",
                  "| method | " + " | ".join(str(la) for la in c.layers) + " |",
                  "|---|" + "---|" * len(c.layers)]
        for m in METHODS:
            cells = []
            for la in c.layers:
                v = [r["ari"] for r in all_rows if r["method"] == m and r["layer"] == la and np.isfinite(r["ari"])]
                cells.append(f"{np.mean(v):.3f}" if v else "n/a")
            lines.append(f"| {METHOD_LABELS[m]} | " + " | ".join(cells) + " |")
    lines += ["", leiden_note(rd, cfg), "", subset_rule(cfg) + "."]
    return "\n".join(lines) + "\n"
