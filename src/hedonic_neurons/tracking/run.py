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
``tables/tracking_events.csv|md`` (Table 3). The functions here return what they tracked
(``TrackedMethod``); the report draws it (``report.sankey.draw_tracking``: the Sankey views), so tracking
never imports the report.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hedonic_neurons.rundir import RunDir
from hedonic_neurons.tracking.controls import (
    CONTROLS,
    PAPER_TABLE3,
    PAPER_TASKS,
    method_seed,
    paper_mean,
    paper_table3,
    random_partition_like,
    shuffle_tracking_inputs,
    summarize_events,
)
from hedonic_neurons.tracking.events import (
    EVENTS,
    _check_thresholds,
    layer_group,
    layer_sort_key,
    track_layers,
    transition_table,
)
from hedonic_neurons.tracking.mass import coalition_write, mlp_interaction_mass, residual_interaction_mass

__all__ = ["TrackedMethod", "track_methods", "track_run", "write_tracking", "transition_mass", "layer_chains"]

log = logging.getLogger(__name__)

TRANSITION_COLUMNS = ["method", "transition", "from_layer", "to_layer", "source", "size", "target", "matched",
                      "event", "alpha", "beta", "mass", "expected", "out_mass", "in_mass", "best_target", "n_links"]
TABLE3_COLUMNS = ["method", "kind", "transition", "n_source", "n_matched", *(f"{e}_%" for e in EVENTS), "alpha_mean",
                  "beta_mean", "n_draws",
                  "base_method", "seed", "paper_source", *(f"paper_{e}_%" for e in EVENTS)]


@dataclass
class TrackedMethod:
    """What tracking one method produced: its transition rows, the inputs they came from and its Table-3
    rows (method and controls), everything the report needs to draw its views."""

    method: str
    rows: list[dict[str, Any]]
    labels: Mapping[Any, np.ndarray]
    masses: Mapping[tuple, np.ndarray]
    table: list[dict[str, Any]] = field(default_factory=list)
    lo: float = 0.1
    measure: str = "excess"
    null: str = "config"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


def layer_chains(layers: Sequence[str]) -> list[tuple[str, str]]:
    """Consecutive (layer, next layer) pairs, within each group of layer names.

    A name ``<group>_<layer>`` (``seed0_h2``, ``random_init1_h3``: one network per group, as the MNIST
    run names them) only pairs with names of the same group; plain names (``7``, ``h2``) form one group.
    """
    groups: dict[str, list[str]] = {}
    for name in layers:
        groups.setdefault(layer_group(name), []).append(str(name))
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


def _table3(method: str, kind: str, rows_by_draw: Sequence[list[dict[str, Any]]], paper_task: str | None,
            paper_model: str) -> list[dict[str, Any]]:
    """Table-3 rows of one method (or one of its controls, averaged over draws), one per transition."""
    tables = [transition_table(rows) for rows in rows_by_draw if rows]
    if not tables:
        return []
    out = []
    for j, t in enumerate(tables[0]):
        cells = [tab[j] for tab in tables]
        group = layer_group(t["transition"].split("->")[0])
        base, seed = method_seed(method, group)
        row: dict[str, Any] = {"method": method, "base_method": base, "seed": seed, "kind": kind,
                               "transition": t["transition"], "n_source": t["n_source"],
                               "n_matched": round(float(np.mean([c["n_matched"] for c in cells])), 1)}
        for e in EVENTS:
            row[f"{e}_%"] = round(float(np.mean([c[f"{e}_%"] for c in cells])), 1)
        # a graded reading beside the counts: the mean alpha and beta of the sources (events at hi
        # can all read "vanish" while the method's shares still differ from the control's)
        for q in ("alpha", "beta"):
            row[f"{q}_mean"] = float(np.mean([np.mean([r[q] for r in rows if r["transition"] == t["transition"]])
                                              for rows in rows_by_draw if rows]))
        row["n_draws"] = len(cells)
        paper = paper_table3(paper_task, t["transition"], paper_model) if paper_task else None
        if paper is not None and kind == "method":
            row["paper_source"] = f"paper Table 3 ({paper_model}, {PAPER_TASKS[paper_task]})"
            row.update({f"paper_{e}_%": paper[e] for e in EVENTS})
        out.append(row)
    return out


def write_tracking(
    run_dir: str | Path, method: str, labels_by_layer: Mapping[Any, np.ndarray],
    mass_by_transition: Mapping[tuple, np.ndarray], hi: float = 0.7, lo: float = 0.1, *,
    measure: str = "excess", null: str = "config", control_rows: Mapping[str, Sequence[list[dict]]] | None = None,
    paper_task: str | None = None, paper_model: str = "LLaMA",
) -> TrackedMethod:
    """Track one method's layers from masses already computed and write its tables (see module doc).

    ``control_rows`` maps a control name (``CONTROLS``) to the ``track_layers`` rows of each of its
    draws; they become Table-3 rows beside the method's and the captions of its views.
    ``paper_task`` ("cqtr", "mtfl", "relevance") puts the paper's Table-3 percentages (model
    ``paper_model``) beside ours for transitions 7->8 .. 13->14.

    Returns a ``TrackedMethod`` whose ``rows`` are the ``track_layers`` rows with a ``method`` column
    (``report.sankey.draw_tracking`` draws it). The transitions and Table-3 files keep
    the rows of other methods already on disk, so methods can be written one after another.
    """
    from safetensors.numpy import save_file

    from hedonic_neurons.rundir import read_table, write_table

    rd = RunDir(run_dir)
    rows = [{"method": method, **r} for r in track_layers(labels_by_layer, mass_by_transition, hi, lo,
                                                          measure=measure, null=null)]
    tdir = rd.root / "tracking"
    tdir.mkdir(parents=True, exist_ok=True)
    tmp = tdir / f"mass_{_safe(method)}.safetensors.tmp"
    save_file({f"{a}->{b}": np.ascontiguousarray(m, dtype=np.float64)
               for (a, b), m in mass_by_transition.items()}, str(tmp),
              metadata={"method": method, "hi": str(hi), "lo": str(lo), "measure": measure, "null": null})
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

    rule = (f"measure = {measure}" + (f", null = {null}" if measure == "excess" else "") + f", hi = {hi}, lo = {lo}")
    all_rows = merge(tdir / "transitions.csv", rows)
    write_table(all_rows, tdir / "transitions", TRANSITION_COLUMNS, title=f"Coalition transitions ({rule})")
    table = _table3(method, "method", [rows], paper_task, paper_model)
    for kind, draws in (control_rows or {}).items():
        table += _table3(method, kind, list(draws), paper_task, paper_model)
    table_rows = merge(rd.root / "tables" / "tracking_events.csv", table)
    rd.save_table("tracking_events", table_rows, TABLE3_COLUMNS,
                  title=f"Table 3, coalition dynamics across layers: % of source coalitions per event ({rule}); "
                        "kind = the method's partition or a control tracked the same way (random_partition: "
                        "size-matched random partitions; shuffled_weights: the partition with the weights "
                        "shuffled within each matrix), n_draws control draws averaged; paper_*: the paper's "
                        "own Table 3 numbers, for comparison only")
    summary = summarize_events(table_rows)
    ref = paper_mean(paper_task, paper_model) if paper_task in PAPER_TABLE3 else paper_mean()
    ref_label = (f"paper Table 3 ({paper_model}, {PAPER_TASKS[paper_task]}), mean of 7->14"
                 if paper_task in PAPER_TABLE3 else
                 "paper Table 3, mean of its 3 tasks x 3 LLMs, 7->14 (no task given; the paper tracks no MNIST "
                 "network)")
    summary.append({"method": ref_label, "kind": "paper", "n_seeds": "", "n_transitions": 7,
                    **{f"{e}_%": round(ref[e], 1) for e in EVENTS}, **{f"{e}_sd": "" for e in EVENTS}})
    rd.save_table("tracking_summary", summary,
                  title=f"Table 3 summarised: mean % of source coalitions per event over transitions, mean and sd "
                        f"over seeds, per method and control ({rule}); the last row is the paper's, for comparison")
    log.info("tracked %s over %d transitions", method, len(mass_by_transition))
    return TrackedMethod(method, rows, labels_by_layer, mass_by_transition, table, lo=lo, measure=measure,
                         null=null)


def _masses(method: str, labels: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]],
            mats: Any, run_dir: Path | None = None) -> dict[tuple, np.ndarray]:
    masses: dict[tuple, np.ndarray] = {}
    for a, b in pairs:
        ma, mb = mats(a), mats(b)
        if ma is None or mb is None or not any(k.startswith("track_") for k in ma):
            log.info("tracking: no tracking inputs for %s -> %s; skipped", a, b)
            continue
        try:
            masses[(a, b)] = transition_mass(method, ma, mb, labels[a], labels[b])
        except ValueError as exc:
            # Table 3 is then over the other transitions: say so where the tables are read
            from hedonic_neurons import notices

            msg = f"tracking {method} {a}->{b} failed and was left out of Table 3 ({exc})"
            if run_dir is not None:
                notices.record(run_dir, msg)
            notices.warn(msg)
    return masses


def track_run(run_dir: str | Path, methods: Sequence[str] | None = None, hi: float = 0.7, lo: float = 0.1,
              **kw: Any) -> dict[str, list[dict[str, Any]]]:
    """``track_methods`` returning {method: transition rows} only (the tables are written either way)."""
    return {m: t.rows for m, t in track_methods(run_dir, methods, hi, lo, **kw).items()}


def track_methods(
    run_dir: str | Path, methods: Sequence[str] | None = None, hi: float = 0.7, lo: float = 0.1, *,
    measure: str = "excess", null: str = "config", controls: Sequence[str] = CONTROLS, n_control: int = 1,
    seed: int = 0, paper_task: str | None = None, paper_model: str = "LLaMA",
) -> dict[str, TrackedMethod]:
    """Track every method that has partitions on >= 2 layers with saved tracking inputs; returns
    {method: TrackedMethod}. Methods without inputs are skipped with a log line (not an error), so the
    report can call this on any run directory.

    ``methods=None`` tracks every method found on disk (seed variants ``<method>.s<k>`` included).
    Each method is also tracked under ``controls`` (``n_control`` seeded draws each, random state
    ``seed``): size-matched random partitions and the partition on shuffled weights
    (``tracking.controls``). ``paper_task`` prints the paper's Table 3 beside ours.
    """
    _check_thresholds(hi, lo)  # before anything is read or written
    unknown_controls = [c for c in controls if c not in CONTROLS]
    if unknown_controls:
        raise ValueError(f"unknown control(s) {unknown_controls}; use any of {CONTROLS} (or none)")
    if n_control < 1 and controls:
        raise ValueError(f"n_control must be >= 1 when controls are asked for; got {n_control}")
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

    shuffled_cache: dict[tuple[str, int], dict[str, np.ndarray] | None] = {}

    def shuffled(draw: int):
        def get(layer: str):  # one shuffle per layer and draw, shared by every method
            if (layer, draw) not in shuffled_cache:
                m = mats(layer)
                rng = np.random.default_rng([seed, draw, zlib.crc32(layer.encode())])
                shuffled_cache[(layer, draw)] = None if m is None else shuffle_tracking_inputs(m, rng)
            return shuffled_cache[(layer, draw)]
        return get

    out: dict[str, TrackedMethod] = {}
    for method in tqdm(methods, desc="tracking", leave=False, disable=bool(os.environ.get("TQDM_DISABLE"))):
        mlayers = [lay for lay in layers if method in parts[lay]]
        if len(mlayers) < 2:
            log.info("tracking: %s has partitions on %d layer(s); need 2", method, len(mlayers))
            continue
        labels = {lay: rd.load_partition(lay, method)["labels"] for lay in mlayers}
        pairs = layer_chains(mlayers)
        masses = _masses(method, labels, pairs, mats, rd.root)
        if not masses:
            continue
        tracked = sorted({x for k in masses for x in k}, key=layer_sort_key)
        control_rows: dict[str, list[list[dict]]] = {}
        for kind in controls:
            for draw in range(n_control):
                if kind == "random_partition":
                    rng = np.random.default_rng([seed, draw, zlib.crc32(method.encode())])
                    lab = {lay: random_partition_like(labels[lay], rng) for lay in tracked}
                    cm = _masses(method, lab, list(masses), mats)
                else:
                    lab = labels
                    cm = _masses(method, lab, list(masses), shuffled(draw))
                if cm:
                    control_rows.setdefault(kind, []).append(
                        track_layers(lab, cm, hi, lo, measure=measure, null=null))
        out[method] = write_tracking(rd.root, method, labels, masses, hi, lo, measure=measure, null=null,
                                     control_rows=control_rows, paper_task=paper_task, paper_model=paper_model)
    return out
