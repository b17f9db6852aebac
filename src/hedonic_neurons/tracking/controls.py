"""What chance and known answers give in Table 3: control partitions and weights, direct overlap, the
paper's percentages, spread over seeds.

numpy only. The controls are tracked with the very code that tracks a method (docs/tracking.md).
Negative controls, which should read *vanish*:

* ``random_partition``: at every layer, the method's labels permuted uniformly at random (the size
  histogram is kept exactly; each layer drawn with its own seed), on the real weights and activations;
* ``shuffled_weights``: the method's own partition, with the entries of every tracking matrix
  (W_down, W_up, W_gate, or the residual Jacobian) permuted within that matrix; activations, norm
  gains and partitions untouched.

Positive controls, at residual sites only (a player is the same residual dimension on both sides, so a
known answer exists): the method's partition of layer l is carried to layer l+1 unchanged
(``same_partition``: *persist*), with every coalition of >= 2 cut in two random halves
(``split_partition``: *split*), or with coalitions merged in pairs of equal (or nearest) size
(``merge_partition``: *merge*), on the real Jacobian of the block between them.

``PAPER_TABLE3`` holds the paper's Table 3 (percent of source coalitions per event, layers 7 -> 14,
three tasks x three LLMs) so our tables can print it beside our numbers, labelled as the paper's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from hedonic_neurons.tracking.events import EVENTS

__all__ = ["CONTROLS", "POSITIVE_CONTROLS", "EXPECTED", "MIN_SIZE", "expected_min_size", "coalitions_only",
            "WEIGHT_KEYS", "random_partition_like",
           "split_partition", "merge_partition", "best_jaccard", "shuffle_tracking_inputs", "PAPER_TABLE3",
           "PAPER_TASKS", "paper_table3", "paper_mean", "method_seed", "summarize_events"]

CONTROLS = ("random_partition", "shuffled_weights")
POSITIVE_CONTROLS = ("same_partition", "split_partition", "merge_partition")
# the smallest group tracked as a coalition: a player alone is in no coalition (as in coverage), so a
# coalition whose members all end up alone has vanished, not split (docs/tracking.md)
MIN_SIZE = 2
# the event each control should read (over the sources of ``expected_min_size``)
EXPECTED = {"random_partition": "vanish", "shuffled_weights": "vanish", "same_partition": "persist",
            "split_partition": "split", "merge_partition": "merge"}
# the tracking matrices whose entries the shuffled-weights control permutes (docs/tracking.md)
WEIGHT_KEYS = ("track_W_down", "track_W_up", "track_W_gate", "track_J_abs")


def expected_min_size(kind: str, min_size: int = MIN_SIZE) -> int:
    """The smallest source a control's expected event is counted over: ``min_size`` (at least 2), and for
    ``split_partition`` twice that, since only a coalition of 2 x min_size players is cut into two
    coalitions (a pair cut in two leaves two lone players: it dissolves)."""
    base = max(int(min_size), 2)
    return 2 * base if kind == "split_partition" else base


def coalitions_only(labels: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """``labels`` with every coalition of fewer than ``min_size`` players marked as in no coalition (-1)."""
    labels = np.asarray(labels)
    if min_size <= 1:
        return labels
    ids, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    small = (counts < min_size) | (ids < 0)
    return np.where(small[inv.ravel()], -1, labels)


def random_partition_like(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random partition with exactly the size histogram of ``labels`` (a permutation of it).

    Unassigned players (label < 0) stay a random set of the same size.
    """
    labels = np.asarray(labels)
    return labels[rng.permutation(labels.size)]


def split_partition(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every coalition of >= 2 players cut in two random halves (sizes floor(k/2), ceil(k/2)); singletons and
    unassigned players kept."""
    labels = np.asarray(labels)
    out = labels.copy()
    nxt = int(labels.max()) + 1
    for c in np.unique(labels[labels >= 0]):
        members = rng.permutation(np.flatnonzero(labels == c))
        if members.size >= 2:
            out[members[: members.size // 2]] = nxt
            nxt += 1
    return out


def merge_partition(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Coalitions merged in pairs: sorted by size (ties in random order), neighbours paired, so the two
    parts of a merged coalition have equal or nearest sizes; with an odd count the largest stays alone."""
    labels = np.asarray(labels)
    ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    order = ids[np.lexsort((rng.random(ids.size), sizes))]
    out = labels.copy()
    for a, b in zip(order[0::2], order[1::2], strict=False):
        out[labels == b] = a
    return out


def best_jaccard(labels: np.ndarray, labels_next: np.ndarray) -> np.ndarray:
    """Per coalition of ``labels`` (``coalition_ids`` order), its largest Jaccard index |C & C'| / |C | C'|
    with a coalition of ``labels_next``: direct overlap of members, meaningful where player i is the same
    unit on both sides (residual sites)."""
    from hedonic_neurons.tracking.mass import indicator

    labels, labels_next = np.asarray(labels), np.asarray(labels_next)
    if labels.shape != labels_next.shape:
        raise ValueError(f"direct overlap needs the same players on both sides; got {labels.size} and "
                         f"{labels_next.size} players")
    A, B = indicator(labels), indicator(labels_next)
    inter = A.T @ B
    union = A.sum(axis=0)[:, None] + B.sum(axis=0)[None, :] - inter
    return (inter / np.maximum(union, 1)).max(axis=1)


def shuffle_tracking_inputs(mats: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A copy of one layer's tracking inputs with the entries of each weight matrix permuted within it.

    The keys in ``WEIGHT_KEYS`` are shuffled; everything else (activations, norm gain) is kept.
    Precomputed coalition writes (``track_R_*``) are dropped: they were computed from the real W_down.
    """
    out: dict[str, np.ndarray] = {}
    for key, value in mats.items():
        if key.startswith("track_R_"):
            continue
        if key in WEIGHT_KEYS:
            a = np.asarray(value)
            out[key] = rng.permutation(a.ravel()).reshape(a.shape)
        else:
            out[key] = value
    return out


# The paper's Table 3: task -> model -> transition -> (persist, merge, split, vanish) in percent.
_P = {
    "cqtr": {
        "Mistral": [(12.1, 0.0, 28.9, 59.0), (4.8, 0.0, 38.4, 56.8), (6.2, 0.0, 31.5, 62.3), (3.8, 0.0, 29.7, 66.5),
                    (4.2, 0.0, 27.8, 68.0), (11.3, 0.0, 30.2, 58.5), (10.5, 0.0, 24.3, 65.2)],
        "LLaMA": [(3.2, 0.0, 35.4, 61.4), (5.1, 0.0, 28.6, 66.3), (4.8, 0.0, 30.2, 65.0), (7.9, 0.0, 32.1, 60.0),
                  (3.5, 0.0, 29.8, 66.7), (6.8, 0.0, 27.4, 65.8), (7.2, 0.0, 23.1, 69.7)],
        "Pythia": [(7.8, 0.0, 31.9, 60.3), (4.9, 0.0, 33.7, 61.4), (5.5, 0.0, 30.8, 63.7), (5.9, 0.0, 30.9, 63.2),
                   (3.9, 0.0, 28.8, 67.3), (9.1, 0.0, 28.8, 62.1), (8.9, 0.0, 23.7, 67.4)],
    },
    "mtfl": {
        "Mistral": [(6.4, 0.5, 35.8, 57.3), (1.8, 0.2, 51.2, 46.8), (2.9, 0.1, 23.1, 73.9), (1.3, 0.3, 23.7, 74.7),
                    (1.2, 0.1, 22.9, 75.8), (6.3, 0.4, 37.8, 55.5), (7.1, 0.2, 19.5, 73.2)],
        "LLaMA": [(2.1, 0.0, 19.7, 78.2), (3.8, 0.1, 20.3, 75.8), (3.4, 0.0, 22.8, 73.8), (5.9, 0.2, 25.5, 68.4),
                  (1.7, 0.0, 24.1, 74.2), (3.2, 0.1, 19.8, 76.9), (4.7, 0.0, 17.1, 78.2)],
        "Pythia": [(4.3, 0.3, 28.4, 67.0), (2.8, 0.1, 36.2, 60.9), (3.2, 0.0, 22.9, 73.9), (3.6, 0.2, 24.6, 71.6),
                   (1.4, 0.0, 23.5, 75.1), (4.8, 0.2, 29.3, 65.7), (5.9, 0.1, 18.3, 75.7)],
    },
    "relevance": {
        "Mistral": [(8.2, 0.0, 32.7, 59.2), (2.1, 0.0, 46.8, 51.1), (3.5, 0.0, 26.3, 70.2), (2.0, 0.0, 26.5, 71.4),
                    (1.7, 0.0, 25.4, 72.9), (8.0, 0.0, 34.0, 58.0), (8.7, 0.0, 21.7, 69.6)],
        "LLaMA": [(1.5, 0.0, 22.4, 76.1), (3.5, 0.0, 22.8, 73.7), (3.9, 0.0, 25.5, 70.6), (6.7, 0.0, 28.3, 65.0),
                  (2.0, 0.0, 26.5, 71.4), (4.0, 0.0, 22.0, 74.0), (5.4, 0.0, 18.9, 75.7)],
        "Pythia": [(5.2, 0.0, 28.1, 66.7), (2.8, 0.0, 35.3, 61.9), (3.7, 0.0, 25.9, 70.4), (4.2, 0.0, 27.4, 68.4),
                   (1.9, 0.0, 25.9, 72.2), (6.1, 0.0, 28.2, 65.7), (7.1, 0.0, 20.3, 72.6)],
    },
}
PAPER_TRANSITIONS = tuple(f"{la}->{la + 1}" for la in range(7, 14))
PAPER_TABLE3: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    task: {model: {t: dict(zip(EVENTS, v, strict=True)) for t, v in zip(PAPER_TRANSITIONS, vals, strict=True)}
           for model, vals in by_model.items()}
    for task, by_model in _P.items()}
PAPER_TASKS = {"cqtr": "Covered Query Term Ratio", "mtfl": "Stream Length Normalized Term Frequency",
               "relevance": "Relevance"}


def paper_table3(task: str, transition: str, model: str = "LLaMA") -> dict[str, float] | None:
    """The paper's percentages for one transition ("7->8" .. "13->14"), or None when it has none."""
    if task not in PAPER_TABLE3:
        raise ValueError(f"unknown task {task!r} for the paper's Table 3; use one of {sorted(PAPER_TABLE3)}")
    if model not in PAPER_TABLE3[task]:
        raise ValueError(f"the paper's Table 3 has no model {model!r}; use one of {sorted(PAPER_TABLE3[task])}")
    return PAPER_TABLE3[task][model].get(str(transition))


def paper_mean(task: str | None = None, model: str | None = None) -> dict[str, float]:
    """The paper's Table 3 averaged over transitions 7->14 (and over tasks / models left as None)."""
    tasks = [task] if task is not None else list(PAPER_TABLE3)
    vals = [PAPER_TABLE3[t][m][tr][e] for t in tasks for m in ([model] if model else PAPER_TABLE3[t])
            for tr in PAPER_TRANSITIONS for e in EVENTS]
    arr = np.asarray(vals).reshape(-1, len(EVENTS))
    return {e: float(v) for e, v in zip(EVENTS, arr.mean(axis=0), strict=True)}


def method_seed(method: str, group: str = "") -> tuple[str, str]:
    """(base method, seed tag): "hedonic_pas.s2" -> ("hedonic_pas", "s2"); an MNIST network group
    "seed1" is the seed of a plain method name; otherwise seed "s0"."""
    m = re.match(r"^(.*)\.s(\d+)$", str(method))
    if m:
        return m.group(1), f"s{m.group(2)}"
    return str(method), group or "s0"


def summarize_events(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sd over seeds of each event's percentage, per base method and kind (method / control).

    ``rows`` are Table-3 rows with ``method``, ``kind``, ``seed`` and ``<event>_%``. A seed's value is
    its mean over transitions (and over control draws); the sd is over seeds (0 with one seed). The
    mean alpha and beta of the sources (``alpha_mean``, ``beta_mean``), the share of sources with an
    event beyond chance and the agreement with direct overlap are summarised the same way (blank where
    not computed).
    """
    per: dict[tuple[str, str], dict[str, list[list[float]]]] = {}
    for r in rows:
        key = (str(r["base_method"]), str(r["kind"]))
        vals = [float(r[f"{e}_%"]) for e in EVENTS]
        vals += [float(r[q]) if r.get(q, "") not in ("", None) else np.nan
                 for q in ("alpha_mean", "beta_mean", "beyond_chance_%", "overlap_agree_%")]
        per.setdefault(key, {}).setdefault(str(r["seed"]), []).append(vals)
    out = []
    for (method, kind), by_seed in per.items():
        seeds = np.array([np.mean(v, axis=0) for v in by_seed.values()])   # (n_seeds, 8)
        row: dict[str, Any] = {"method": method, "kind": kind, "n_seeds": len(by_seed),
                               "n_transitions": int(np.mean([len(v) for v in by_seed.values()]))}
        for j, e in enumerate(EVENTS):
            row[f"{e}_%"] = round(float(seeds[:, j].mean()), 1)
            row[f"{e}_sd"] = round(float(seeds[:, j].std(ddof=1)) if len(seeds) > 1 else 0.0, 1)
        for j, q in enumerate(("alpha_mean", "beta_mean"), start=len(EVENTS)):
            row[q] = float(seeds[:, j].mean())
            row[q.replace("_mean", "_sd")] = float(seeds[:, j].std(ddof=1)) if len(seeds) > 1 else 0.0
        for j, q in enumerate(("beyond_chance_%", "overlap_agree_%"), start=len(EVENTS) + 2):
            col = seeds[:, j]
            ok = ~np.isnan(col)
            row[q] = round(float(col[ok].mean()), 1) if ok.any() else ""
            row[q.replace("_%", "_sd")] = (round(float(col[ok].std(ddof=1)), 1) if ok.sum() > 1
                                           else (0.0 if ok.any() else ""))
        out.append(row)
    order = {"method": 0, **{c: i + 1 for i, c in enumerate(CONTROLS + POSITIVE_CONTROLS)}}
    out.sort(key=lambda r: (r["method"], order.get(r["kind"], 9)))
    return out

