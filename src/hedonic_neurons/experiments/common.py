"""What the experiments share: one half's partitions (the hedonic solver, Leiden and the matched baselines), fitted
and saved the same way by `study` and the reranker experiment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hedonic_neurons.metrics.crossfit import half_seed, layer_seed, partition_name
from hedonic_neurons.partition import SolverConfig
from hedonic_neurons.rundir import RunDir

__all__ = ["fit_half_partitions"]


def fit_half_partitions(rd: RunDir, layer: int | str, half: str, mats: Mapping[str, np.ndarray], acts: np.ndarray,
                        solver: SolverConfig, seed: int = 0, *, valuations: Sequence[str] = ("pas",),
                        baselines: bool = True, name_seed: int | None = None) -> dict[str, int]:
    """Fit and save, on valuation half `half` of `layer`: the hedonic solver on each of `valuations` ("pas",
    "oca": ``hedonic_pas`` / ``hedonic_oca``), Leiden on the positive part of the same PAS, and (``baselines``)
    random, k-means and Ward partitions with Hedonic-PAS's size histogram on that half's activation profiles
    (`acts`: every sample's activations; the half's rows are ``mats["half_<half>_idx"]``). Returns
    {method: number of coalitions}. Files are named for `name_seed` (default `seed`: `crossfit.partition_name`).

    Each half has its own random state (`half_seed`), and the baselines draw afresh on every layer
    (`layer_seed`): one random state for all layers would give the random baseline nearly the same coalitions at
    every layer, which tracking would read as persisting.
    """
    from hedonic_neurons.baselines import LeidenPartition, matched_baselines

    hseed = half_seed(seed, half)
    stem = seed if name_seed is None else name_seed
    out: dict[str, int] = {}
    labels: dict[str, np.ndarray] = {}
    for v in valuations:
        method = f"hedonic_{v}"
        phi, se = mats[f"phi_{v}_{half}"], mats.get(f"{v}_se_{half}")
        hp = solver.to_estimator(random_state=hseed)
        hp.fit(np.asarray(phi, dtype=np.float64), None if se is None else np.asarray(se, dtype=np.float64))
        labels[method] = hp.labels_
        rd.save_partition(str(layer), partition_name(method, half, stem), hp.labels_, stability=hp.stability_,
                          params=hp.params_, extra={"seed": seed, "half": half, "threshold": float(hp.threshold_)})
        out[method] = int(np.unique(hp.labels_).size)
    ld = LeidenPartition(max_size=solver.max_size, random_state=hseed).fit(
        np.asarray(mats[f"phi_pas_{half}"], dtype=np.float64))
    rd.save_partition(str(layer), partition_name("leiden", half, stem), ld.labels_,
                      params={"resolution_rule": ld.resolution_rule_, "resolution": ld.resolution_,
                              "max_size": solver.max_size, "valuation": "positive part of PAS"},
                      extra={"seed": seed, "half": half})
    out["leiden"] = int(ld.n_coalitions_)
    if baselines:
        for method, lab in matched_baselines(acts[mats[f"half_{half}_idx"]].T, labels["hedonic_pas"],
                                             random_state=layer_seed(hseed, layer)).items():
            rd.save_partition(str(layer), partition_name(method, half, stem), lab,
                              params={"matched_to": "hedonic_pas"}, extra={"seed": seed, "half": half})
            out[method] = int(np.unique(lab).size)
    return out
