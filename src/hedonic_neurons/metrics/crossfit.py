"""Cross-fitting: find partitions on one half of the valuation inputs, score them on the other.

A partition fitted on the valuation of half A is scored (Pair, Ratio: paper eq. 8) with the valuation of
half B, and vice versa; the reported held-out figure is the mean of the two directions. Scoring a
partition with the valuation it was fitted on rewards fitting the noise of that valuation; the held-out
score does not. Reproducibility is the adjusted Rand index between the two halves' partitions.

Both experiments (MNIST, reranker) use these helpers, so the rule is the same everywhere:
`split_halves` (seeded, disjoint, whole groups on one side), `synergy_rows` (one row per coalition:
held-out and in-sample Pair / Ratio), `crossfit_synergy` (both directions averaged), `split_half_ari`,
`coverage` (share of players in coalitions of size 2..max_size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hedonic_neurons.metrics.synergy import pair_synergy, ratio_synergy

HALVES = ("a", "b")
OTHER = {"a": "b", "b": "a"}
HALF_B_SEED_OFFSET = 100_003


def half_seed(seed: int, half: str) -> int:
    """The random state a method gets on `half`: `seed` on half a, another one on half b.

    With one seed on both halves a size-matched random partition would come out (nearly) the same on
    both and score a split-half ARI near 1 for nothing; every method therefore meets its own
    randomness as well as the other half's data, and the ARI measures both.
    """
    return int(seed) if half == "a" else int(seed) + HALF_B_SEED_OFFSET


def layer_seed(seed: int, layer: str | int) -> int:
    """The random state a seeded draw gets on one layer: differs per layer (and per seed).

    A size-matched random partition drawn with the same random state on every layer is (nearly) the
    same set of players at every layer; at residual sites, where a player is the same dimension at
    every layer, consecutive layers' random coalitions then coincide and read as persisting.
    """
    import zlib

    ss = np.random.SeedSequence([int(seed), zlib.crc32(str(layer).encode())])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def split_halves(n: int, seed: int, *, min_half: int, groups=None, what: str = "inputs"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves (sorted index arrays) of range(n), drawn with `seed`.

    ``groups`` (length n, optional): inputs sharing a group (e.g. the pairs of one query) go to the same
    half; groups are shuffled and dealt alternately, so with equal group sizes the halves differ by at
    most one group. Raises a one-line ValueError when a half would hold fewer than `min_half` inputs.
    """
    n = int(n)
    g = np.arange(n) if groups is None else np.asarray(groups)
    if g.shape[0] != n:
        raise ValueError(f"groups has {g.shape[0]} entries for {n} {what}")
    _, first, inv = np.unique(g, return_index=True, return_inverse=True)
    order = np.argsort(first)  # groups in order of first appearance, so the split depends only on the seed
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    perm = np.random.default_rng(seed).permutation(order.size)
    side = np.empty(order.size, dtype=np.int64)
    side[perm] = np.arange(order.size) % 2  # deal the shuffled groups alternately
    s = side[rank[inv]]
    a, b = np.flatnonzero(s == 0), np.flatnonzero(s == 1)
    if min(a.size, b.size) < min_half:
        unit = "" if groups is None else " (whole groups per half)"
        raise ValueError(f"cross-fitting splits the {n} valuation {what} into two halves{unit} of "
                         f"{a.size} and {b.size}, but each half needs >= {min_half}: give at least "
                         f"{2 * min_half} {what}, or turn cross-fitting off (--no-crossfit)")
    return a, b


def crossfit_halves(n: int, crossfit: bool, seed: int, *, min_half: int, groups=None, what: str = "inputs"
                    ) -> dict[str, np.ndarray]:
    """{half: indices}: the two seeded halves of `split_halves`, or {"a": all of range(n)} without
    cross-fitting (then every partition is scored in-sample)."""
    if not crossfit:
        return {"a": np.arange(n)}
    a, b = split_halves(n, seed, min_half=min_half, groups=groups, what=what)
    return {"a": a, "b": b}


def fit_halves(crossfit: bool) -> tuple[str, ...]:
    """The halves partitions are fitted on: both with cross-fitting, else the one "a" (all inputs)."""
    return HALVES if crossfit else ("a",)


def eval_half(half: str, crossfit: bool) -> str:
    """The half whose inputs and valuation score a partition fitted on `half` (itself without crossfit)."""
    return OTHER[half] if crossfit else half


def partition_name(method: str, half: str = "a", seed: int = 0) -> str:
    """Partition file stem: seed 0 / half a under the plain method name (tracked, shown in the report);
    seed s > 0 as ``<method>.s<s>``; the half-b partition (cross-fitting) with ``.b`` appended."""
    name = method if seed == 0 else f"{method}.s{seed}"
    return name if half == "a" else f"{name}.b"


def split_half_ari(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Adjusted Rand index between the partitions fitted on the two halves (1: identical, ~0: chance)."""
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(labels_a), np.asarray(labels_b)))


def coverage(labels: np.ndarray, lo: int = 2, hi: int = 10) -> float:
    """Share of players whose coalition has between `lo` and `hi` members (the issue's 'in coalitions of 2-10')."""
    labels = np.asarray(labels)
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    size = counts[inv]
    return float(np.mean((size >= lo) & (size <= hi))) if labels.size else float("nan")


def coalitions_of(labels: np.ndarray, min_size: int = 1) -> list[np.ndarray]:
    """Members of every coalition (in label order) with at least `min_size` members."""
    labels = np.asarray(labels)
    out = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    return [c for c in out if c.size >= min_size]


def synergy_rows(coalitions, psi_pair_eval: np.ndarray, psi_eval: np.ndarray,
                 psi_pair_fit: np.ndarray | None = None, psi_fit: np.ndarray | None = None) -> list[dict]:
    """Per coalition: Pair and Ratio on the *evaluation* valuation (held-out), and on the fitting one
    (``pair_in_sample`` / ``ratio_in_sample``, only when given). NaN for single players (eq. 8)."""
    rows = []
    for members in coalitions:
        r = {"size": int(np.size(members)), "pair": pair_synergy(psi_pair_eval, members),
             "ratio": ratio_synergy(psi_pair_eval, psi_eval, members)}
        if psi_pair_fit is not None:
            r["pair_in_sample"] = pair_synergy(psi_pair_fit, members)
            r["ratio_in_sample"] = (ratio_synergy(psi_pair_fit, psi_fit, members) if psi_fit is not None
                                    else float("nan"))
        rows.append(r)
    return rows


def _nanmean(values) -> float:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def crossfit_synergy(labels: Mapping[str, np.ndarray], psi_pair: Mapping[str, np.ndarray],
                     psi: Mapping[str, np.ndarray]) -> dict:
    """Held-out Pair / Ratio of the two halves' partitions, both directions averaged.

    ``labels[h]``: the partition fitted on half h; ``psi_pair[h]`` / ``psi[h]``: the pairwise and single
    ablation effects measured on half h. The partition of half a is scored with half b's valuation and
    vice versa (``pair_a_on_b``, ``pair_b_on_a``); ``pair`` / ``ratio`` are the means of the two
    directions of the mean over coalitions of size >= 2; ``*_in_sample`` score each partition on its own
    half (reported beside, labelled, never used for a verdict); ``ari`` is the split-half ARI.
    """
    out: dict = {}
    for key in ("pair", "ratio", "pair_in_sample", "ratio_in_sample"):
        out[key] = []
    for h in HALVES:
        e = OTHER[h]
        rows = synergy_rows(coalitions_of(labels[h], 2), psi_pair[e], psi[e], psi_pair[h], psi[h])
        d = {k: _nanmean(r[k] for r in rows) for k in ("pair", "ratio", "pair_in_sample", "ratio_in_sample")}
        out[f"pair_{h}_on_{e}"] = d["pair"]
        out[f"ratio_{h}_on_{e}"] = d["ratio"]
        for k, v in d.items():
            out[k].append(v)
    for key in ("pair", "ratio", "pair_in_sample", "ratio_in_sample"):
        out[key] = _nanmean(out[key])
    out["ari"] = split_half_ari(labels["a"], labels["b"])
    return out


__all__ = ["HALVES", "OTHER", "half_seed", "layer_seed", "split_halves", "crossfit_halves", "fit_halves", "eval_half",
           "partition_name", "split_half_ari", "coverage", "coalitions_of", "synergy_rows", "crossfit_synergy",
           "versus_best", "has_ci", "fmt_mean_ci", "beats_all", "ordering_holds", "held_words"]


def has_ci(t: tuple[float, float, float]) -> bool:
    """Whether (mean, lo, hi) carries a 95 % interval: at least 2 seeds (`stats.mean_lo_hi` gives NaN ends for one)."""
    return bool(np.isfinite(t[1]) and np.isfinite(t[2]))


def fmt_mean_ci(t: tuple[float, float, float]) -> str:
    """'4.74e-05 [4.16e-05, 5.32e-05]', or '4.74e-05 (no CI: one seed)' when there is no interval."""
    return f"{t[0]:.3g} [{t[1]:.3g}, {t[2]:.3g}]" if has_ci(t) else f"{t[0]:.3g} (no CI: one seed)"


def versus_best(ref: tuple[float, float, float], others: Mapping[str, tuple[float, float, float]],
                labels: Mapping[str, str]) -> tuple[str, str]:
    """(best other method, plain-words verdict): is `ref` (mean, lo, hi) above every other method's mean,
    and with its 95 % CI above every other CI? `others` holds finite means per method. Undecided when a CI is
    missing (fewer than 2 seeds): a mean alone decides nothing, so the means are only reported."""
    m0 = ref[0]
    best = max(others, key=lambda m: others[m][0])
    mb = others[best][0]
    if not (has_ci(ref) and all(has_ci(o) for o in others.values())):
        means = ("above every other method" if m0 > mb else
                 f"below {labels[best]} by {mb - m0:.3g} ({(m0 / mb if mb else float('nan')):.2f} of it)")
        return best, f"undecided (fewer than 2 seeds: no 95 % CI; on the means it is {means})"
    if m0 > mb and ref[1] > max(o[2] for o in others.values()):
        return best, "above every other method with the 95 % CIs apart"
    if m0 > mb:
        return best, f"above every other method on the means only (its CI overlaps {labels[best]}'s)"
    return best, (f"NOT above every method: it falls short of {labels[best]} by {mb - m0:.3g} "
                  f"({(m0 / mb if mb else float('nan')):.2f} of it)")


def beats_all(values: Mapping[str, float], ref: str, others: Sequence[str]) -> bool | None:
    """Is values[ref] above every one of `others`? None (undecided) when any of them is not finite:
    `max()` over a list holding NaN returns whatever the list's order makes it, so the verdict would too."""
    vals = [values[ref], *(values[m] for m in others)]
    if not all(np.isfinite(v) for v in vals):
        return None
    return bool(values[ref] > max(values[m] for m in others))


def ordering_holds(values: Mapping[str, float], order: Sequence[str], higher_is_better: bool = True) -> bool | None:
    """Does values follow `order` strictly (best first)? None (undecided) when a method in it has no finite value."""
    vals = [values[m] for m in order]
    if not all(np.isfinite(v) for v in vals):
        return None
    sign = 1.0 if higher_is_better else -1.0
    return all(sign * a > sign * b for a, b in zip(vals, vals[1:], strict=False))


def held_words(held: bool | None, values: Mapping[str, float] | None = None, labels: Mapping[str, str] | None = None,
               yes: str = "held", no: str = "did NOT hold") -> str:
    """'held' / 'did NOT hold' / 'undecided (no finite value for X)' for a verdict from beats_all/ordering_holds."""
    if held is None:
        missing = [(labels or {}).get(m, m) for m, v in (values or {}).items() if not np.isfinite(v)]
        return f"undecided (no finite value for {', '.join(missing) or 'a method'})"
    return yes if held else no
