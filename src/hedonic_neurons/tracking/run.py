"""Tracking over a run directory: read partitions and the saved tracking inputs, write tables and views.

Inputs (per layer, in ``matrices/<layer>.safetensors``; see docs/tracking.md):

* MLP sites: ``track_W_down`` (d, n) LoRA-merged down projection and ``track_acts`` (N, n) the players'
  activations of this layer (or ``track_R_<method>`` (n_coal, d), the coalition writes already
  computed); ``track_W_up`` (n, d), optionally ``track_W_gate`` (n, d) and ``track_norm_gain`` (d,),
  the LoRA-merged input side of this layer, read when the layer is the target of a transition.
* residual sites: ``track_J_abs`` (d_next, d), the mean absolute Jacobian of the next layer's h with
  respect to this one, and ``track_acts`` (N, d) or ``track_abs_mean`` (d,).

Outputs: ``tracking/transitions.csv|md`` (one row per source coalition and method),
``tracking/mass_<method>.safetensors`` (one matrix per transition, key "l->l2"),
``tables/tracking_events.csv|md`` (Table 3), ``views/sankey_<method>_<l>_to_<l2>.html|json`` and
``views/sankey_<method>_all.html|json``, ``figures/sankey_<method>_all.png``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hedonic_neurons.experiments.rundir import RunDir
from hedonic_neurons.tracking.events import layer_sort_key, track_layers, transition_table
from hedonic_neurons.tracking.mass import coalition_write, mlp_interaction_mass, residual_interaction_mass

__all__ = ["track_run", "write_tracking", "transition_mass", "layer_chains"]

log = logging.getLogger(__name__)

TRANSITION_COLUMNS = ["method", "transition", "from_layer", "to_layer", "source", "size", "target", "event",
                      "alpha", "beta", "mass", "out_mass", "in_mass", "best_target", "n_links"]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


def _group_of(name: Any) -> str:
    """The network part of a layer name: "seed0" for "seed0_h2", "" for "7" or "h2"."""
    import re

    m = re.match(r"^(.*?)_?([A-Za-z]*\d+)$", str(name))
    return m.group(1) if m else str(name)


def layer_chains(layers: Sequence[str]) -> list[tuple[str, str]]:
    """Consecutive (layer, next layer) pairs, within each group of layer names.

    A name ``<group>_<layer>`` (``seed0_h2``, ``random_init1_h3``: one network per group, as the MNIST
    run names them) only pairs with names of the same group; plain names (``7``, ``h2``) form one group.
    """
    groups: dict[str, list[str]] = {}
    for name in layers:
        groups.setdefault(_group_of(name), []).append(str(name))
    pairs = []
    for members in groups.values():
        members = sorted(members, key=layer_sort_key)
        pairs.extend(zip(members[:-1], members[1:], strict=True))
    return pairs


def transition_mass(method: str, mats: Mapping[str, np.ndarray], mats_next: Mapping[str, np.ndarray],
                    labels: np.ndarray, labels_next: np.ndarray) -> np.ndarray:
    """M for one transition from the saved tracking inputs of the two layers (MLP or residual site)."""
    if "track_J_abs" in mats:
        acts = mats.get("track_acts", mats.get("track_abs_mean"))
        if acts is None:
            raise ValueError("residual tracking needs track_acts (N, d) or track_abs_mean (d,) beside "
                             "track_J_abs; save them with RunDir.save_matrices")
        return residual_interaction_mass(mats["track_J_abs"], acts, labels, labels_next)
    if f"track_R_{method}" in mats:
        R = mats[f"track_R_{method}"]
    elif "track_W_down" in mats and "track_acts" in mats:
        R = coalition_write(mats["track_W_down"], mats["track_acts"], labels)
    else:
        raise ValueError(f"no tracking inputs for method {method!r}: save track_W_down + track_acts "
                         f"(or track_R_{method}, or track_J_abs for residual sites) in "
                         "matrices/<layer>.safetensors")
    if "track_W_up" not in mats_next:
        raise ValueError("the next layer's matrices lack track_W_up (its LoRA-merged up projection, "
                         "(d_ff, d_model)); save it (and track_W_gate, track_norm_gain) with save_matrices")
    return mlp_interaction_mass(R, mats_next["track_W_up"], mats_next.get("track_W_gate"),
                                mats_next.get("track_norm_gain"), labels, labels_next)


def write_tracking(
    run_dir: str | Path, method: str, labels_by_layer: Mapping[Any, np.ndarray],
    mass_by_transition: Mapping[tuple, np.ndarray], hi: float = 0.7, lo: float = 0.1, *,
    views: bool = True, max_nodes_all: int | None = 120, max_nodes_transition: int | None = 200,
) -> list[dict[str, Any]]:
    """Track one method's layers from masses already computed and write its outputs (see module doc).

    The Sankey views keep the largest ``max_nodes_transition`` coalitions per layer in a transition's
    view and ``max_nodes_all`` in the all-layers view (None: all); the tables always hold every one.

    Returns the ``track_layers`` rows with a ``method`` column. The transitions and Table-3 files keep
    the rows of other methods already on disk, so methods can be written one after another.
    """
    from safetensors.numpy import save_file

    from hedonic_neurons.report.sankey import sankey_data, sankey_figure, sankey_png, save_view
    from hedonic_neurons.report.tables import read_table, write_table

    rd = RunDir(run_dir)
    rows = [{"method": method, **r} for r in track_layers(labels_by_layer, mass_by_transition, hi, lo)]
    tdir = rd.root / "tracking"
    tdir.mkdir(parents=True, exist_ok=True)
    tmp = tdir / f"mass_{_safe(method)}.safetensors.tmp"
    save_file({f"{a}->{b}": np.ascontiguousarray(m, dtype=np.float64)
               for (a, b), m in mass_by_transition.items()}, str(tmp),
              metadata={"method": method, "hi": str(hi), "lo": str(lo)})
    tmp.replace(tdir / f"mass_{_safe(method)}.safetensors")

    def num(v: str) -> Any:  # rows read back from CSV are strings: keep numbers formatted as numbers
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
        return v

    def merge(path: Path, new_rows: list[dict]) -> list[dict]:
        old = ([{k: num(v) for k, v in r.items()} for r in read_table(path) if r.get("method") != method]
               if path.exists() else [])
        return old + new_rows

    all_rows = merge(tdir / "transitions.csv", rows)
    write_table(all_rows, tdir / "transitions", TRANSITION_COLUMNS,
                title=f"Coalition transitions (hi = {hi}, lo = {lo})")
    table = [{"method": method, **t} for t in transition_table(rows)]
    table_rows = merge(rd.root / "tables" / "tracking_events.csv", table)
    rd.save_table("tracking_events", table_rows,
                  title=f"Coalition dynamics across layers: % of source coalitions (hi = {hi}, lo = {lo})")
    if views:
        keys = sorted(mass_by_transition, key=lambda k: (layer_sort_key(k[0]), layer_sort_key(k[1])))
        for a, b in keys:
            data = sankey_data(labels_by_layer, {(a, b): mass_by_transition[(a, b)]}, rows, lo,
                               max_nodes_per_layer=max_nodes_transition)
            n_max = max(np.unique(np.asarray(labels_by_layer[x])).size for x in (a, b))
            note = (f" (largest {max_nodes_transition} coalitions per layer)"
                    if max_nodes_transition and n_max > max_nodes_transition else "")
            save_view(sankey_figure(data, f"{method}: coalition flow {a} → {b}{note}"),
                      rd.view_path(f"sankey_{_safe(method)}_{_safe(a)}_to_{_safe(b)}"))
        # one across-layers view (and its static PNG for papers) per chain of layers (per network)
        by_group: dict[str, dict[tuple, np.ndarray]] = {}
        for a, b in keys:
            by_group.setdefault(_group_of(a), {})[(a, b)] = mass_by_transition[(a, b)]
        for group, masses in by_group.items():
            stem = f"sankey_{_safe(method)}" + (f"_{_safe(group)}" if len(by_group) > 1 and group else "")
            name = f"{method} {group}".strip()
            data = sankey_data(labels_by_layer, masses, rows, lo, max_nodes_per_layer=max_nodes_all)
            if len(masses) > 1:
                note = f" (largest {max_nodes_all} coalitions per layer)" if max_nodes_all else ""
                save_view(sankey_figure(data, f"{name}: coalition flow across layers{note}"),
                          rd.view_path(f"{stem}_all"))
            sankey_png(data, rd.figure_path(f"{stem}_all"), f"{name}: coalition flow")
    log.info("tracked %s over %d transitions", method, len(mass_by_transition))
    return rows


def track_run(
    run_dir: str | Path, methods: Sequence[str] | None = None, hi: float = 0.7, lo: float = 0.1, *,
    views: bool = True, max_nodes_all: int | None = 120, max_nodes_transition: int | None = 200,
) -> dict[str, list[dict[str, Any]]]:
    """Track every method that has partitions on >= 2 layers with saved tracking inputs; returns
    {method: rows}. Methods without inputs are skipped with a log line (not an error), so the report
    can call this on any run directory."""
    rd = RunDir(run_dir)
    parts = rd.partitions()
    layers = sorted(parts, key=layer_sort_key)
    all_methods = sorted({m for by in parts.values() for m in by})
    methods = list(methods) if methods is not None else all_methods
    unknown = [m for m in methods if m not in all_methods]
    if unknown and len(unknown) == len(methods):
        raise ValueError(f"no partitions on disk for method(s) {unknown}; known: {all_methods}")
    if unknown:  # a partial run (some methods not partitioned yet): track the others
        log.warning("tracking: no partitions on disk for %s; tracking %s", unknown,
                    [m for m in methods if m not in unknown])
        methods = [m for m in methods if m not in unknown]
    mats_cache: dict[str, dict[str, np.ndarray] | None] = {}

    def mats(layer: str):
        if layer not in mats_cache:
            p = rd.matrices_path(layer)
            mats_cache[layer] = rd.load_matrices(layer) if p.exists() else None
        return mats_cache[layer]

    out: dict[str, list[dict[str, Any]]] = {}
    for method in methods:
        mlayers = [lay for lay in layers if method in parts[lay]]
        if len(mlayers) < 2:
            log.info("tracking: %s has partitions on %d layer(s); need 2", method, len(mlayers))
            continue
        labels = {lay: rd.load_partition(lay, method)["labels"] for lay in mlayers}
        masses: dict[tuple, np.ndarray] = {}
        # read the env here: tqdm's own TQDM_DISABLE handling is fixed when tqdm is first imported
        for a, b in tqdm(layer_chains(mlayers), desc=f"tracking {method}", leave=False,
                         disable=bool(os.environ.get("TQDM_DISABLE"))):
            ma, mb = mats(a), mats(b)
            if ma is None or mb is None or not any(k.startswith("track_") for k in ma):
                log.info("tracking: no tracking inputs for %s -> %s; skipped", a, b)
                continue
            try:
                masses[(a, b)] = transition_mass(method, ma, mb, labels[a], labels[b])
            except ValueError as exc:
                log.warning("tracking %s %s->%s skipped: %s", method, a, b, exc)
        if masses:
            out[method] = write_tracking(rd.root, method, labels, masses, hi, lo, views=views,
                                         max_nodes_all=max_nodes_all,
                                         max_nodes_transition=max_nodes_transition)
    return out
