"""Random, spherical k-means and Ward partitions of neurons, with greedy size-histogram matching (I.5).

Greedy matching rule (`match_sizes`), written down because the paper only says "greedily merge/split
clusters to approximately match the Hedonic-PAS size histogram": the target sizes are sorted in
decreasing order and each target slot is filled in turn from the cluster that is still unassigned
and shares the most members with it. Concretely:

1. order the clusters by size (largest first) and the target sizes likewise; pair cluster r with
   target size r (so the largest cluster gets the largest slot);
2. each cluster keeps its `size_r` members closest to its centroid (cosine on the profiles) and
   releases the rest into a pool; a cluster smaller than its slot keeps everyone;
3. slots still short take, one by one, the pooled neuron closest (cosine) to the slot's centroid,
   largest shortfall first.

The result has exactly the reference's number of coalitions and its size histogram, moves as few
neurons as the rule allows, and is deterministic.
"""

from __future__ import annotations

import numpy as np


def size_histogram(labels: np.ndarray) -> dict[int, int]:
    """{coalition size: number of coalitions of that size}."""
    sizes = np.bincount(np.unique(np.asarray(labels), return_inverse=True)[1])
    vals, counts = np.unique(sizes, return_counts=True)
    return {int(v): int(c) for v, c in zip(vals, counts, strict=True)}


def _sizes_of(labels: np.ndarray) -> np.ndarray:
    return np.bincount(np.unique(np.asarray(labels), return_inverse=True)[1])


def _check_sizes(sizes, n: int | None = None) -> np.ndarray:
    sizes = np.asarray(sizes, dtype=np.int64).ravel()
    if sizes.size == 0 or (sizes < 1).any():
        raise ValueError(f"sizes must be positive coalition sizes, got {sizes.tolist()}")
    if n is not None and sizes.sum() != n:
        raise ValueError(f"sizes sum to {int(sizes.sum())} but there are {n} players: "
                         "pass the reference partition's coalition sizes for the same players")
    return sizes


def _normalise_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be (n_players, n_features) activation profiles, got shape {X.shape}")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Coalition ids 0..k-1 in order of first appearance (so equal partitions have equal labels)."""
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inv].astype(np.int64)


def match_sizes(Xn: np.ndarray, labels: np.ndarray, sizes) -> np.ndarray:
    """Greedily move neurons between clusters so the partition has exactly the given sizes (see module doc).

    `Xn`: (n, f) L2-normalised profiles; `labels`: a clustering with ``len(sizes)`` clusters.
    """
    labels = np.asarray(labels)
    n = labels.size
    sizes = _check_sizes(sizes, n)
    ids, inv = np.unique(labels, return_inverse=True)
    if ids.size != sizes.size:
        raise ValueError(f"the clustering has {ids.size} clusters but {sizes.size} target sizes")
    counts = np.bincount(inv)
    order = np.lexsort((np.arange(ids.size), -counts))  # largest cluster first, ties by id
    targets = np.sort(sizes)[::-1]
    out = np.full(n, -1, dtype=np.int64)
    pool: list[int] = []
    for slot, c in enumerate(order):
        members = np.flatnonzero(inv == c)
        centroid = Xn[members].mean(0)
        sim = Xn[members] @ centroid
        keep = members[np.lexsort((members, -sim))][: targets[slot]]
        out[keep] = slot
        pool.extend(np.setdiff1d(members, keep).tolist())
    pool_arr = np.array(sorted(pool), dtype=np.int64)
    free = np.ones(pool_arr.size, dtype=bool)
    short = [(targets[s] - int((out == s).sum()), s) for s in range(targets.size)]
    for need, slot in sorted(short, key=lambda t: (-t[0], t[1])):
        if need <= 0:
            continue
        members = np.flatnonzero(out == slot)
        for _ in range(need):
            cand = pool_arr[free]
            centroid = Xn[members].mean(0) if members.size else Xn[cand].mean(0)
            sim = Xn[cand] @ centroid
            j = int(np.lexsort((cand, -sim))[0])
            pick = cand[j]
            out[pick] = slot
            free[np.flatnonzero(pool_arr == pick)[0]] = False
            members = np.append(members, pick)
    assert (out >= 0).all()
    return _relabel(out)


class RandomPartition:
    """A uniformly random partition with the given coalition sizes (the size-histogram-matched control)."""

    def __init__(self, sizes, random_state: int | None = 0):
        self.sizes = sizes
        self.random_state = random_state

    def fit(self, X: np.ndarray) -> RandomPartition:
        n = int(np.shape(X)[0])
        sizes = _check_sizes(self.sizes, n)
        rng = np.random.default_rng(self.random_state)
        labels = np.repeat(np.arange(sizes.size), sizes)
        self.labels_ = _relabel(labels[rng.permutation(n)])
        return self


class SphericalKMeansPartition:
    """k-means on L2-normalised activation profiles (cosine geometry), optionally size-matched."""

    def __init__(self, n_clusters: int, sizes=None, random_state: int | None = 0, n_init: int = 4):
        self.n_clusters = n_clusters
        self.sizes = sizes
        self.random_state = random_state
        self.n_init = n_init

    def fit(self, X: np.ndarray) -> SphericalKMeansPartition:
        from sklearn.cluster import KMeans

        Xn = _normalise_rows(X)
        if not 1 <= self.n_clusters <= Xn.shape[0]:
            raise ValueError(f"n_clusters={self.n_clusters} must be in 1..{Xn.shape[0]} (number of players)")
        km = KMeans(self.n_clusters, n_init=self.n_init, random_state=self.random_state).fit(Xn)
        labels = km.labels_
        self.raw_labels_ = _relabel(labels)
        self.labels_ = match_sizes(Xn, labels, self.sizes) if self.sizes is not None else self.raw_labels_
        return self


class WardPartition:
    """Ward clustering on L2-normalised profiles, cut at `n_clusters`, optionally size-matched."""

    def __init__(self, n_clusters: int, sizes=None):
        self.n_clusters = n_clusters
        self.sizes = sizes

    def fit(self, X: np.ndarray) -> WardPartition:
        from sklearn.cluster import AgglomerativeClustering

        Xn = _normalise_rows(X)
        if not 1 <= self.n_clusters <= Xn.shape[0]:
            raise ValueError(f"n_clusters={self.n_clusters} must be in 1..{Xn.shape[0]} (number of players)")
        labels = AgglomerativeClustering(n_clusters=self.n_clusters, linkage="ward").fit(Xn).labels_
        self.raw_labels_ = _relabel(labels)
        self.labels_ = match_sizes(Xn, labels, self.sizes) if self.sizes is not None else self.raw_labels_
        return self


def matched_baselines(X: np.ndarray, reference_labels: np.ndarray, random_state: int | None = 0
                      ) -> dict[str, np.ndarray]:
    """{"random", "kmeans", "ward": labels} with the reference partition's count and size histogram.

    `X`: (n_players, n_features) activation profiles (neuron i's activations over the images).
    """
    ref = np.asarray(reference_labels)
    if ref.shape != (np.shape(X)[0],):
        raise ValueError(f"reference_labels has shape {ref.shape} but X has {np.shape(X)[0]} players (rows)")
    sizes = _sizes_of(ref)
    k = sizes.size
    return {
        "random": RandomPartition(sizes, random_state=random_state).fit(X).labels_,
        "kmeans": SphericalKMeansPartition(k, sizes=sizes, random_state=random_state).fit(X).labels_,
        "ward": WardPartition(k, sizes=sizes).fit(X).labels_,
    }
