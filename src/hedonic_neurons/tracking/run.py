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
    EXPECTED,
    MIN_SIZE,
    PAPER_TABLE3,
    PAPER_TASKS,
    POSITIVE_CONTROLS,
    best_jaccard,
    coalitions_only,
    expected_min_size,
    merge_partition,
    method_seed,
    paper_mean,
    paper_table3,
    random_partition_like,
    shuffle_tracking_inputs,
    split_partition,
    summarize_events,
)
from hedonic_neurons.tracking.events import (
    CHANCE_DRAWS,
    CHANCE_GATE,
    CHANCE_P,
    EVENTS,
    FLOOR,
    Z_MIN,
    _check_thresholds,
    layer_group,
    layer_sort_key,
    mass_matrix,
    track_layers,
    transition_table,
)
from hedonic_neurons.tracking.mass import coalition_ids, coalition_write, mlp_transition, residual_transition

__all__ = ["TrackedMethod", "track_methods", "track_run", "write_tracking", "transition_mass", "layer_chains",
           "add_overlap", "overlap_agrees", "overlap_note", "controls_summary", "rule_text"]

log = logging.getLogger(__name__)

TRANSITION_COLUMNS = ["method", "transition", "from_layer", "to_layer", "source", "size", "target", "matched",
                      "event", "event_link", "beyond_chance", "p_chance", "alpha", "beta", "z_alpha", "z_beta",
                      "jaccard", "mass", "expected", "out_mass",
                      "in_mass", "best_target", "n_links"]
TABLE3_COLUMNS = ["method", "kind", "transition", "n_source", "n_matched", *(f"{e}_%" for e in EVENTS), "alpha_mean",
                  "beta_mean", "beyond_chance_%", *(f"{e}_link_%" for e in EVENTS), "n_draws", "expected_event",
                  "n_expected", "expected_%", "expected_link_%", "overlap_agree_%",
                  "base_method", "seed", "paper_source", *(f"paper_{e}_%" for e in EVENTS)]
# the direct-overlap check: a coalition is tracked by overlap when its best Jaccard reaches this
OVERLAP_JACCARD = 0.5


@dataclass
class TrackedMethod:
    """What tracking one method produced: its transition rows, the inputs they came from and its Table-3
    rows (method and controls), everything the report needs to draw its views."""

    method: str
    rows: list[dict[str, Any]]
    labels: Mapping[Any, np.ndarray]
    masses: Mapping[tuple, Any]
    table: list[dict[str, Any]] = field(default_factory=list)
    lo: float = 0.1
    measure: str = "relative"
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
                    labels: np.ndarray, labels_next: np.ndarray) -> dict[str, np.ndarray]:
    """The mass of one transition from the saved tracking inputs of the two layers (MLP or residual site):
    the dict of ``mass.residual_transition`` / ``mass.mlp_transition`` (M and the player-level mass)."""
    if "track_J_abs" in mats:
        acts = mats.get("track_acts", mats.get("track_abs_mean"))
        if acts is None:
            raise ValueError("residual tracking needs track_acts (N, d) or track_abs_mean (d,) beside "
                             "track_J_abs; save them with RunDir.save_matrices")
        return residual_transition(mats["track_J_abs"], acts, labels, labels_next)
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
    kw = {}
    if "track_W_down" in mats and "track_acts" in mats:
        kw = {"W_down": mats["track_W_down"], "acts_abs_mean": np.abs(np.asarray(mats["track_acts"])).mean(axis=0)}
    return mlp_transition(R, mats_next["track_W_up"], mats_next.get("track_W_gate"),
                          mats_next.get("track_norm_gain"), labels, labels_next, **kw)


def gated_event(row: Mapping[str, Any]) -> str | None:
    """The row's event read against chance: its event when beyond chance, else vanish (None: no chance gate
    was computed)."""
    bc = row.get("beyond_chance", "")
    if bc in ("", None):
        return None
    return row["event_link"] if bc in (True, "True") else "vanish"


def overlap_agrees(row: Mapping[str, Any]) -> bool:
    """Whether a transition row's event agrees with direct overlap: best Jaccard >= OVERLAP_JACCARD exactly
    when the event is persist, split or merge."""
    return (float(row["jaccard"]) >= OVERLAP_JACCARD) == (row["event"] != "vanish")


def add_overlap(rows: list[dict[str, Any]], labels_by_layer: Mapping[Any, np.ndarray]) -> list[dict[str, Any]]:
    """Give every row its source's best Jaccard with a next-layer coalition (``controls.best_jaccard``),
    where both layers partition the same players (residual sites); rows are changed in place."""
    cache: dict[str, dict[int, float]] = {}
    for r in rows:
        tr = r["transition"]
        if tr not in cache:
            a, b = np.asarray(labels_by_layer[r["from_layer"]]), np.asarray(labels_by_layer[r["to_layer"]])
            cache[tr] = ({} if a.shape != b.shape else
                         dict(zip(coalition_ids(a).tolist(), best_jaccard(a, b).tolist(), strict=True)))
        if cache[tr]:
            r["jaccard"] = cache[tr][int(r["source"])]
    return rows


def _table3(method: str, kind: str, rows_by_draw: Sequence[list[dict[str, Any]]], paper_task: str | None,
            paper_model: str, min_size: int = MIN_SIZE) -> list[dict[str, Any]]:
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
        trs = [[r for r in rows if r["transition"] == t["transition"]] for rows in rows_by_draw if rows]
        chance = all(gated_event(r) is not None for rs in trs for r in rs)
        if chance:  # which events stand against random redraws of the next layer's partition
            row["beyond_chance_%"] = round(float(np.mean([100.0 * np.mean([gated_event(r) != "vanish" for r in rs])
                                                          for rs in trs])), 1)
            for e in EVENTS:  # the link rule alone, before the chance gate
                row[f"{e}_link_%"] = round(float(np.mean([100.0 * np.mean([r["event_link"] == e for r in rs])
                                                          for rs in trs])), 1)
        expected = EXPECTED.get(kind)
        if expected is not None:  # the control's known answer, over the sources it applies to
            big = [[r for r in rs if int(r["size"]) >= expected_min_size(kind, min_size)] for rs in trs]
            row["expected_event"] = expected
            row["n_expected"] = round(float(np.mean([len(b) for b in big])), 1)
            if row["n_expected"] > 0:
                row["expected_%"] = round(float(np.mean([100.0 * np.mean([r["event"] == expected for r in b])
                                                         for b in big if b])), 1)
                if chance:
                    row["expected_link_%"] = round(float(np.mean(
                        [100.0 * np.mean([r["event_link"] == expected for r in b]) for b in big if b])), 1)
        if all(r.get("jaccard", "") != "" for rs in trs for r in rs):
            row["overlap_agree_%"] = round(float(np.mean([100.0 * np.mean([overlap_agrees(r) for r in rs])
                                                          for rs in trs])), 1)
        paper = paper_table3(paper_task, t["transition"], paper_model) if paper_task else None
        if paper is not None and kind == "method":
            row["paper_source"] = f"paper Table 3 ({paper_model}, {PAPER_TASKS[paper_task]})"
            row.update({f"paper_{e}_%": paper[e] for e in EVENTS})
        out.append(row)
    return out


def write_tracking(
    run_dir: str | Path, method: str, labels_by_layer: Mapping[Any, np.ndarray],
    mass_by_transition: Mapping[tuple, Any], hi: float = 0.7, lo: float = 0.1, *,
    measure: str = "relative", null: str = "config", control_rows: Mapping[str, Sequence[list[dict]]] | None = None,
    paper_task: str | None = None, paper_model: str = "LLaMA", z_min: float | None = Z_MIN, floor: float | None = None,
    overlap: bool = False, chance_draws: int = CHANCE_DRAWS, chance_gate: bool = CHANCE_GATE, seed: int = 0,
    min_size: int = MIN_SIZE, fresh: bool = False,
) -> TrackedMethod:
    """Track one method's layers from masses already computed and write its tables (see module doc).

    ``control_rows`` maps a control name (``CONTROLS``) to the ``track_layers`` rows of each of its
    draws; they become Table-3 rows beside the method's and the captions of its views.
    ``paper_task`` ("cqtr", "mtfl", "relevance") puts the paper's Table-3 percentages (model
    ``paper_model``) beside ours for transitions 7->8 .. 13->14. A mass is an M matrix or the dict of
    ``mass.*_transition`` (``measure="relative"`` needs the latter); ``z_min``, ``floor``,
    ``chance_draws``, ``chance_gate`` as in ``events.track_transition`` (``seed`` seeds the chance draws).
    ``min_size``: the smallest coalition tracked; the labels must already mark smaller groups as in no
    coalition (``controls.coalitions_only``, which ``track_methods`` applies); it sets which sources a
    control's expected event is counted over and goes into the table titles.
    ``overlap``: both layers partition the same players (residual sites),
    so every row gets its direct-overlap ``jaccard`` and Table 3 the agreement with it.

    Returns a ``TrackedMethod`` whose ``rows`` are the ``track_layers`` rows with a ``method`` column
    (``report.sankey.draw_tracking`` draws it). The transitions and Table-3 files keep
    the rows of other methods already on disk, so methods can be written one after another; ``fresh``
    drops them instead (a run re-tracked as a whole starts its tables over, so no rows of an older rule or
    of methods no longer tracked stay behind).
    """
    from safetensors.numpy import save_file

    from hedonic_neurons.rundir import read_table, write_table

    rd = RunDir(run_dir)
    rows = [{"method": method, **r} for r in track_layers(labels_by_layer, mass_by_transition, hi, lo,
                                                          measure=measure, null=null, z_min=z_min, floor=floor,
                                                          chance_draws=chance_draws, chance_gate=chance_gate,
                                                          random_state=seed)]
    if overlap:
        add_overlap(rows, labels_by_layer)
    tdir = rd.root / "tracking"
    tdir.mkdir(parents=True, exist_ok=True)
    tmp = tdir / f"mass_{_safe(method)}.safetensors.tmp"
    save_file({f"{a}->{b}": np.ascontiguousarray(mass_matrix(m), dtype=np.float64)
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
               if path.exists() and not fresh else [])
        return old + new_rows

    rule = rule_text(measure, hi, lo, null=null, z_min=z_min, floor=floor, chance_draws=chance_draws,
                     chance_gate=chance_gate, min_size=min_size)
    all_rows = merge(tdir / "transitions.csv", rows)
    write_table(all_rows, tdir / "transitions", TRANSITION_COLUMNS, title=f"Coalition transitions ({rule})")
    table = _table3(method, "method", [rows], paper_task, paper_model, min_size)
    for kind, draws in (control_rows or {}).items():
        table += _table3(method, kind, list(draws), paper_task, paper_model, min_size)
    table_rows = merge(rd.root / "tables" / "tracking_events.csv", table)
    agreement = overlap_note(table_rows)
    rd.save_table("tracking_events", table_rows, TABLE3_COLUMNS,
                  title=f"Table 3, coalition dynamics across layers: % of source coalitions per event ({rule})"
                        f"{agreement}; "
                        "kind = the method's partition or a control tracked the same way (negative, should "
                        "read vanish: random_partition, size-matched random partitions drawn per layer; "
                        "shuffled_weights, the partition with the weights shuffled within each matrix; "
                        "positive, residual sites only: same_partition, the source partition carried to "
                        "the next layer unchanged, should read persist; split_partition, each coalition "
                        "cut in two, split; merge_partition, coalitions merged in pairs, merge), n_draws "
                        "control draws averaged; expected_%: % of the sources a control applies to "
                        "(n_expected: coalitions of >= min_size players; split_partition: those cut into two "
                        "coalitions) that read the control's expected_event, expected_link_% the same by the "
                        "link rule before the chance gate; <event>_link_%: the link rule alone; "
                        "beyond_chance_%: sources whose event stands against random redraws of the next "
                        "partition; overlap_agree_%: % of sources whose event agrees "
                        "with direct overlap of members (best Jaccard >= 0.5 exactly when persist, split "
                        "or merge; residual sites); paper_*: the paper's own Table 3 numbers, for "
                        "comparison only")
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
                        f"over seeds, per method and control ({rule}){agreement}; beyond_chance_%: sources whose "
                        "event stands against random redraws of the next partition; overlap_agree_%: agreement "
                        "with direct overlap; the last row is the paper's, for comparison")
    log.info("tracked %s over %d transitions", method, len(mass_by_transition))
    write_controls_table(rd, table_rows, rule)
    return TrackedMethod(method, rows, labels_by_layer, mass_by_transition, table, lo=lo, measure=measure,
                         null=null)


def overlap_note(table_rows: Sequence[Mapping[str, Any]]) -> str:
    """'; events agree with direct overlap on: m1 x %, ...' (mean over the method's rows) for the methods
    that have the agreement (residual sites), else ''."""
    per: dict[str, list[float]] = {}
    for r in table_rows:
        if r.get("kind") == "method" and r.get("overlap_agree_%", "") not in ("", None):
            per.setdefault(str(r["base_method"]), []).append(float(r["overlap_agree_%"]))
    if not per:
        return ""
    return ("; events agree with direct overlap (best Jaccard >= 0.5 exactly when persist / split / merge) on "
            + ", ".join(f"{m} {np.mean(v):.1f} %" for m, v in sorted(per.items())) + " of source coalitions")


def rule_text(measure: str, hi: float, lo: float, *, null: str = "config", z_min: float | None = Z_MIN,
              floor: float | None = None, chance_draws: int = CHANCE_DRAWS, chance_gate: bool = CHANCE_GATE,
              min_size: int = MIN_SIZE) -> str:
    """The event rule in one line, for table titles."""
    ms = f", coalitions of >= {min_size} players" if min_size > 1 else ", every group including lone players"
    if measure == "relative":
        f = FLOOR if floor is None else floor
        z = "Bonferroni at 0.05 over a source's / target's links" if z_min is None else z_min
        ch = (f"; chance: {chance_draws} redraws of the next partition, p <= {CHANCE_P}"
              + (", an event must be beyond chance" if chance_gate else ", not gating the events")
              if chance_draws else "")
        return f"measure = relative, hi = {hi}, floor = {f}, z_min = {z}, lo = {lo}{ms}{ch}"
    return (f"measure = {measure}" + (f", null = {null}" if measure == "excess" else "") + f", hi = {hi}, lo = {lo}"
            + ms)


SUMMARY_COLS = ("expected_%", "expected_link_%", "overlap_agree_%", "beyond_chance_%")


def controls_summary(table_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per base method and kind: the mean over seeds (and transitions) of ``SUMMARY_COLS``, with their sd
    over seeds; the control figures."""
    per: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = {}
    for r in table_rows:
        kind = str(r["kind"])
        if kind != "method" and kind not in EXPECTED:
            continue
        vals = tuple(float(r[q]) if r.get(q, "") not in ("", None) else np.nan for q in SUMMARY_COLS)
        per.setdefault((str(r["base_method"]), kind), {}).setdefault(str(r["seed"]), []).append(vals)
    out = []
    order = {"method": 0, **{c: i + 1 for i, c in enumerate(CONTROLS + POSITIVE_CONTROLS)}}
    for (method, kind), by_seed in sorted(per.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9))):
        seeds = np.array([[np.mean(c[~np.isnan(c)]) if np.any(~np.isnan(c)) else np.nan
                           for c in np.asarray(v, dtype=np.float64).T] for v in by_seed.values()])
        row: dict[str, Any] = {"method": method, "kind": kind, "expected_event": EXPECTED.get(kind, ""),
                               "n_seeds": len(by_seed)}
        for j, q in enumerate(SUMMARY_COLS):
            col = seeds[:, j]
            col = col[~np.isnan(col)]
            row[q] = round(float(col.mean()), 1) if col.size else ""
            row[q.replace("_%", "_sd")] = round(float(col.std(ddof=1)), 1) if col.size > 1 else ("" if not col.size
                                                                                            else 0.0)
        out.append(row)
    return out


def write_controls_table(rd: RunDir, table_rows: Sequence[Mapping[str, Any]], rule: str) -> list[dict[str, Any]]:
    """tables/tracking_controls.csv|md: the control figures (``controls_summary``)."""
    rows = controls_summary(table_rows)
    if rows:
        rd.save_table("tracking_controls", rows,
                      title=f"Tracking controls ({rule}): per method and control, the % of the source "
                            "coalitions a control applies to (split_partition: those cut into two coalitions) "
                            "that read its expected event (same_partition persist, split_partition split, "
                            "merge_partition merge, random_partition and shuffled_weights vanish): expected_% by "
                            "the events, expected_link_% by the link rule before the chance gate; "
                            "overlap_agree_%: the % of source coalitions whose event agrees with direct overlap "
                            "(best Jaccard >= 0.5 exactly when persist / split / merge; residual sites only); "
                            "beyond_chance_%: the % of sources with an event beyond chance; mean over "
                            "transitions, mean and sd over seeds")
    return rows


def _masses(method: str, labels: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]],
            mats: Any, run_dir: Path | None = None) -> dict[tuple, dict[str, np.ndarray]]:
    masses: dict[tuple, dict[str, np.ndarray]] = {}
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


def _layer_rng(seed: int, draw: int, *names: str) -> np.random.Generator:
    """A generator of its own for every (seed, draw, method, layer...): controls draw independently per layer."""
    return np.random.default_rng([seed, draw, *(zlib.crc32(str(n).encode()) for n in names)])


def track_run(run_dir: str | Path, methods: Sequence[str] | None = None, hi: float = 0.7, lo: float = 0.1,
              **kw: Any) -> dict[str, list[dict[str, Any]]]:
    """``track_methods`` returning {method: transition rows} only (the tables are written either way)."""
    return {m: t.rows for m, t in track_methods(run_dir, methods, hi, lo, **kw).items()}


def track_methods(
    run_dir: str | Path, methods: Sequence[str] | None = None, hi: float = 0.7, lo: float = 0.1, *,
    measure: str = "relative", null: str = "config", controls: Sequence[str] = CONTROLS + POSITIVE_CONTROLS,
    n_control: int = 1, seed: int = 0, paper_task: str | None = None, paper_model: str = "LLaMA",
    z_min: float | None = Z_MIN, floor: float | None = None, chance_draws: int = CHANCE_DRAWS,
    chance_gate: bool = CHANCE_GATE, min_size: int = MIN_SIZE,
) -> dict[str, TrackedMethod]:
    """Track every method that has partitions on >= 2 layers with saved tracking inputs; returns
    {method: TrackedMethod}. Methods without inputs are skipped with a log line (not an error), so the
    report can call this on any run directory.

    ``methods=None`` tracks every method found on disk (seed variants ``<method>.s<k>`` included; the
    half-b twins ``<method>.b`` only when named).
    Each method is also tracked under ``controls`` (``n_control`` seeded draws each, random state
    ``seed``, every layer drawn with its own seed; ``tracking.controls``): size-matched random
    partitions and the partition on shuffled weights (negative), and at residual sites the partition
    carried to the next layer unchanged, cut in two or merged in pairs (positive; MLP sites have no
    known answer and skip them). ``paper_task`` prints the paper's Table 3 beside ours. ``measure``,
    ``z_min``, ``floor``, ``chance_draws``, ``chance_gate``: the event rule (``events.track_transition``).
    ``min_size``: the smallest group tracked as a coalition (default 2: a player alone is in no coalition,
    as in coverage; 1 tracks lone players too); smaller groups are marked as in no coalition before
    anything is computed, in the methods' partitions and in every control's.
    """
    if int(min_size) < 1:
        raise ValueError(f"min_size must be >= 1 (1 tracks lone players as coalitions); got {min_size}")
    if int(chance_draws) < 0:
        raise ValueError(f"chance_draws must be >= 0 (0 skips the chance test); got {chance_draws}")
    _check_thresholds(hi, lo)  # before anything is read or written
    known = CONTROLS + POSITIVE_CONTROLS
    unknown_controls = [c for c in controls if c not in known]
    if unknown_controls:
        raise ValueError(f"unknown control(s) {unknown_controls}; use any of {known} (or none)")
    if n_control < 1 and controls:
        raise ValueError(f"n_control must be >= 1 when controls are asked for; got {n_control}")
    rd = RunDir(run_dir)
    parts = rd.partitions()
    layers = sorted(parts, key=layer_sort_key)
    all_methods = sorted({m for by in parts.values() for m in by})
    # by default the partitions fitted on half a (what the report shows); a half-b twin (``<method>.b``,
    # metrics.crossfit.partition_name) is tracked only when asked for by name
    fresh = methods is None   # the whole run re-tracked: its tables start over
    methods = list(methods) if methods is not None else [m for m in all_methods if not m.endswith(".b")]
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
                shuffled_cache[(layer, draw)] = (None if m is None else
                                                 shuffle_tracking_inputs(m, _layer_rng(seed, draw, layer)))
            return shuffled_cache[(layer, draw)]
        return get

    def residual(a: str, b: str) -> bool:  # the same players on both sides: a known answer exists
        ma = mats(a)
        return ma is not None and "track_J_abs" in ma and np.shape(ma["track_J_abs"])[0] == np.shape(
            ma["track_J_abs"])[1]

    kw = {"measure": measure, "null": null, "z_min": z_min, "floor": floor, "chance_draws": chance_draws,
          "chance_gate": chance_gate}
    out: dict[str, TrackedMethod] = {}
    for method in tqdm(methods, desc="tracking", leave=False, disable=bool(os.environ.get("TQDM_DISABLE"))):
        mlayers = [lay for lay in layers if method in parts[lay]]
        if len(mlayers) < 2:
            log.info("tracking: %s has partitions on %d layer(s); need 2", method, len(mlayers))
            continue
        labels = {lay: coalitions_only(rd.load_partition(lay, method)["labels"], min_size) for lay in mlayers}
        pairs = []
        for a, b in layer_chains(mlayers):
            empty = [lay for lay in (a, b) if not np.any(np.asarray(labels[lay]) >= 0)]
            if empty:  # nothing to follow: the solver left every player of that layer alone
                log.info("tracking: %s has no coalition of >= %d players at %s; %s -> %s skipped", method,
                         min_size, ", ".join(empty), a, b)
            else:
                pairs.append((a, b))
        masses = _masses(method, labels, pairs, mats, rd.root)
        if not masses:
            continue
        overlap = all(residual(a, b) for a, b in masses)
        tracked = sorted({x for k in masses for x in k}, key=layer_sort_key)
        control_rows: dict[str, list[list[dict]]] = {}
        for kind in controls:
            for draw in range(n_control):
                if kind == "random_partition":
                    lab = {lay: random_partition_like(labels[lay], _layer_rng(seed, draw, method, lay))
                           for lay in tracked}
                    rows_k = track_layers(lab, _masses(method, lab, list(masses), mats), hi, lo,
                                          random_state=seed, **kw)
                    labs = [lab]
                elif kind == "shuffled_weights":
                    lab = labels
                    rows_k = track_layers(lab, _masses(method, lab, list(masses), shuffled(draw)), hi, lo,
                                          random_state=seed, **kw)
                    labs = [lab]
                else:  # positive controls: each transition on its own, the target partition made from the source
                    make = {"same_partition": lambda x, _r: np.asarray(x), "split_partition": split_partition,
                            "merge_partition": merge_partition}[kind]
                    rows_k, labs = [], []
                    for a, b in masses:
                        if not residual(a, b):
                            continue
                        target = make(labels[a], _layer_rng(seed, draw, method, kind, b))
                        lab = {a: labels[a], b: coalitions_only(target, min_size)}
                        rows_k += track_layers(lab, _masses(method, lab, [(a, b)], mats), hi, lo, random_state=seed,
                                               **kw)
                        labs.append(lab)
                if not rows_k:
                    continue
                if overlap and kind != "shuffled_weights":  # shuffled: a player no longer feeds its namesake
                    for lab in labs:
                        add_overlap([r for r in rows_k if r["from_layer"] in lab and r["to_layer"] in lab], lab)
                control_rows.setdefault(kind, []).append(rows_k)
        out[method] = write_tracking(rd.root, method, labels, masses, hi, lo, control_rows=control_rows,
                                     paper_task=paper_task, paper_model=paper_model, overlap=overlap, seed=seed,
                                     min_size=min_size, fresh=fresh and not out, **kw)
    return out
