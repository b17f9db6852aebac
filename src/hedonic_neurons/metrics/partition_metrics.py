"""Extrinsic metrics of a partition's coalitions (paper Tables 1-2): the evaluated subset, coalition mean
activations, feature alignment R^2 and OOD predictivity, and the per-method scores of the reranker's
evaluate stage built from them (moved here from experiments/reranker.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from hedonic_neurons.metrics.crossfit import (
    _nanmean,
    coalitions_of,
    coverage,
    eval_half,
    fit_halves,
    split_half_ari,
    synergy_rows,
)

SYNERGY_KEYS = ("pair", "ratio", "pair_in_sample", "ratio_in_sample")


def coalition_subset(labels: np.ndarray, n_largest: int, n_random: int, seed: int) -> list[np.ndarray]:
    """The evaluated subset: the `n_largest` largest coalitions (ties: lowest member first) plus `n_random`
    drawn uniformly (seeded) from the remaining coalitions of size >= 2."""
    coals = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    coals = [c for c in coals if c.size >= 2]
    coals.sort(key=lambda c: (-c.size, c[0]))
    top = coals[:n_largest]
    rest = coals[n_largest:]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rest), size=min(n_random, len(rest)), replace=False) if rest else []
    return top + [rest[i] for i in sorted(pick)]


def coalition_means(acts: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coalition ids, (N, k) mean activation of each coalition's members)."""
    ids = np.unique(labels)
    ind = (labels[None, :] == ids[:, None]).astype(np.float64)
    ind /= ind.sum(1, keepdims=True)
    return ids, acts @ ind.T


def alignment_r2(a: np.ndarray, F: np.ndarray) -> np.ndarray:
    """max_j corr^2(a_C, f_j) for each column of a (N, k) against the features F (N, m); constant -> 0."""
    def z(x):
        x = x - x.mean(0)
        sd = np.sqrt((x ** 2).sum(0))
        return np.where(sd > 1e-12, x / np.where(sd > 1e-12, sd, 1.0), 0.0)

    C = z(a).T @ z(F)
    return (C ** 2).max(axis=1)


def predictivity_r2(A_train: np.ndarray, y_train: np.ndarray, A_test: np.ndarray, y_test: np.ndarray) -> float:
    """OOD R^2 of a ridge regression (alpha by internal CV) on coalition macro-features (paper Table 2)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    model.fit(A_train, y_train)
    return float(r2_score(y_test, model.predict(A_test)))


def synergy_by_half(parts: Mapping[str, Mapping[str, np.ndarray]], mats: Mapping[str, np.ndarray], crossfit: bool,
                    methods: Sequence[str], *, subsets: Mapping[str, Mapping[str, list[np.ndarray]]] | None = None,
                    pair_means: Callable[[str, list[np.ndarray]], list[float]] | None = None) -> dict:
    """{half: {method: rows}}: Pair / Ratio (eq. 8) of each half's partitions, cross-fitted: the partition of
    half h scored with the valuation of the other half (held-out) and, beside it, with its own (in-sample).

    Without `subsets`: every coalition of size >= 2, from the exact PAS matrices in `mats` (``phi_pas_<h>``,
    ``psi_<h>``). With `subsets` ({half: {method: coalitions}}, non-norm tails): only those coalitions, their
    Pair from `pair_means(v, coalitions)` (exact pair ablations on valuation half v), one call per half.
    """
    fit = fit_halves(crossfit)
    syn: dict[str, dict[str, list[dict]]] = {h: {} for h in fit}
    if subsets is None:
        for h in fit:
            e = eval_half(h, crossfit)
            for m in methods:
                syn[h][m] = synergy_rows(coalitions_of(parts[h][m], 2), mats[f"phi_pas_{e}"], mats[f"psi_{e}"],
                                         mats[f"phi_pas_{h}"], mats[f"psi_{h}"])
        return syn
    # per valuation half v: every coalition scored on it (held-out for the other half's partitions,
    # in-sample for its own), in one batched call
    on: dict[str, list[float]] = {}
    jobs: dict[str, list[tuple[str, str, int]]] = {}
    for v in fit:
        items = [(h, m, k) for h in fit for m in methods for k in range(len(subsets[h][m]))]
        jobs[v] = items
        on[v] = pair_means(v, [subsets[h][m][k] for h, m, k in items])
    for h in fit:
        e = eval_half(h, crossfit)
        for m in methods:
            rows_hm = []
            for k, coal in enumerate(subsets[h][m]):
                p_e = on[e][jobs[e].index((h, m, k))]
                p_h = on[h][jobs[h].index((h, m, k))]
                npairs = coal.size * (coal.size - 1)

                def ratio(p, v, coal=coal, npairs=npairs):
                    den = float(mats[f"psi_{v}"][coal].sum())
                    return p * npairs / den if den != 0 else float("nan")

                rows_hm.append({"size": int(coal.size), "pair": p_e, "ratio": ratio(p_e, e),
                                "pair_in_sample": p_h, "ratio_in_sample": ratio(p_h, h)})
            syn[h][m] = rows_hm
    return syn


def method_scores(parts: Mapping[str, np.ndarray], syn: Mapping[str, list[dict]], drops: Sequence[float], *,
                  acts_probe: np.ndarray, acts_ood: np.ndarray, y_probe: np.ndarray, y_ood: np.ndarray,
                  features_ood: np.ndarray, crossfit: bool, max_size: int) -> dict:
    """One method's scores (paper Tables 1-2): `parts` {half: labels}, `syn` {half: synergy rows} of that
    method, `drops` the OOD drops of its evaluated coalitions. The extrinsic metrics (OOD drop, alignment,
    predictivity) are of the half-a partition; Pair / Ratio are both directions averaged; the split-half
    ARI and coverage compare / average the halves."""
    lab = parts["a"]
    ids, a_ood = coalition_means(acts_ood, lab)
    _, a_probe = coalition_means(acts_probe, lab)
    sizes = np.array([(lab == i).sum() for i in ids])
    big = sizes >= 2
    align = alignment_r2(a_ood[:, big], features_ood) if big.any() else np.zeros(0)
    fit = tuple(parts)
    dirs = {h: {k: _nanmean(r[k] for r in syn[h]) for k in SYNERGY_KEYS} for h in fit}
    both = {k: _nanmean(dirs[h][k] for h in fit) for k in SYNERGY_KEYS}
    return {
        "ood_drop": float(np.mean(drops)) if len(drops) else float("nan"), "n_drop": len(drops),
        "align_r2": float(np.mean(align)) if align.size else float("nan"),
        "predictivity_r2": predictivity_r2(a_probe, y_probe, a_ood, y_ood),
        **both,
        **{f"pair_{h}_on_{eval_half(h, crossfit)}": dirs[h]["pair"] for h in fit},
        "ari": split_half_ari(parts["a"], parts["b"]) if "b" in parts else float("nan"),
        "coverage": float(np.mean([coverage(parts[h], 2, max_size) for h in fit])),
        "n_coalitions": int(ids.size), "n_coalitions_ge2": int(big.sum()),
    }
