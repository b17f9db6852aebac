"""Extrinsic metrics of a partition's coalitions (paper Tables 1-2): the evaluated subset, coalition mean
activations, feature alignment R^2 and OOD predictivity (moved here from experiments/reranker.py)."""

from __future__ import annotations

import numpy as np


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
