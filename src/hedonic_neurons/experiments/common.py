"""What the experiments share: one half's partitions (the hedonic solver, Leiden and the matched baselines), fitted
and saved the same way by `study` and the reranker experiment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hedonic_neurons.metrics.crossfit import half_seed, layer_seed, partition_name
from hedonic_neurons.partition import SolverConfig
from hedonic_neurons.rundir import RunDir

__all__ = ["fit_half_partitions", "tracking_inputs", "mlp_input_norm_gain"]


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


# where a pre-norm block keeps the norm in front of its MLP (LLaMA / Mistral / Qwen / GPT-NeoX, Gemma-2, GPT-2 style)
_MLP_INPUT_NORMS = ("post_attention_layernorm", "pre_feedforward_layernorm", "ln_2", "ffn_norm",
                    "post_attention_norm")


def mlp_input_norm_gain(adapter, layer: int) -> np.ndarray | None:
    """The effective gain of the norm in front of `layer`'s MLP (1 + w for Gemma's RMSNorm), or None where the MLP
    reads the residual without one (post-LN models) or the layout is not one we know."""
    from hedonic_neurons.valuations.tail import norm_params

    for name in _MLP_INPUT_NORMS:
        try:
            norm = adapter.module(f"{adapter.layer_path(layer)}.{name}")
        except (AttributeError, KeyError, ValueError):
            continue
        w = getattr(norm, "weight", None)
        if w is None:
            return None
        try:
            _, gain, _, _ = norm_params(norm)
        except ValueError:
            gain = w.detach().double().cpu().numpy()
        return np.asarray(gain, dtype=np.float32)
    return None


def tracking_inputs(model, layer: int, W_down: np.ndarray, acts: np.ndarray) -> dict[str, np.ndarray]:
    """What tracking reads of one MLP layer (docs/tracking.md): ``track_W_down``, ``track_acts`` (the samples the
    tracked partitions are scored on), the LoRA-merged ``track_W_up`` / ``track_W_gate`` read when the layer is
    the target of a transition, and ``track_norm_gain``, the gain of the norm in front of the MLP that tracking
    folds into those weights. A decoder whose MLP norm is not found is tracked without it, with a warning."""
    from hedonic_neurons.models import get_adapter
    from hedonic_neurons.models.lora import merged_weight

    ad = get_adapter(model)
    mods = ad.mlp_modules(layer)
    out = {"track_W_down": W_down, "track_acts": acts,
           "track_W_up": merged_weight(mods["up"]).detach().float().cpu().numpy()}
    if "gate" in mods:
        out["track_W_gate"] = merged_weight(mods["gate"]).detach().float().cpu().numpy()
    gain = mlp_input_norm_gain(ad, layer)
    if gain is not None:
        out["track_norm_gain"] = gain
    elif ad.pooling == "last":  # a pre-norm decoder: the gain exists, and was not found
        from hedonic_neurons.notices import warn

        warn(f"layer {layer}: the MLP's input norm was not found (looked for {', '.join(_MLP_INPUT_NORMS)}): "
             "tracking runs without its gain (track_norm_gain), every residual dimension weighted 1")
    return out
