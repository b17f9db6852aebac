"""Planted games: known coalitions plus noise, to validate solver settings (shapiq-style ground truth).

With groups of at most k + 1 players, in-group valuation `signal` and a threshold that separates it
from the noise, the planted partition is the stable outcome PAC-Top-Cover should find; larger groups
may legitimately be cut (a top-responsive player prefers the smaller coalition with the same choice set).
"""

from __future__ import annotations

import numpy as np


def planted_sizes(n: int, min_group: int, max_group: int, zipf: float, rng: np.random.Generator) -> list[int]:
    """Group sizes with P(s) proportional to s^-zipf on [min_group, max_group], summing to n."""
    support = np.arange(min_group, max_group + 1)
    p = support.astype(np.float64) ** -zipf
    p /= p.sum()
    sizes: list[int] = []
    left = n
    while left > 0:
        s = int(rng.choice(support, p=p))
        s = min(s, left)
        sizes.append(s)
        left -= s
    return sizes


def planted_game(
    n: int, k: int = 3, noise: float = 0.2, *, min_group: int = 2, max_group: int | None = None,
    zipf: float = 1.0, signal: float = 1.0, random_state: int | None = 0, dtype=np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric phi (n x n, zero diagonal) with planted coalitions and their labels.

    Group sizes are Zipf-like in [min_group, max_group] (default max_group = k + 1); in-group pairs
    get `signal`, every off-diagonal pair gets symmetric Gaussian noise of sd `noise`.
    """
    if n < 1:
        raise ValueError(f"planted_game needs n >= 1, got {n}")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"planted_game needs a noise sd >= 0, got {noise}")
    max_group = k + 1 if max_group is None else max_group
    if not 1 <= min_group <= max_group:
        raise ValueError(f"need 1 <= min_group <= max_group, got {min_group}, {max_group}")
    rng = np.random.default_rng(random_state)
    sizes = planted_sizes(n, min_group, max_group, zipf, rng)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    labels = labels[rng.permutation(n)]
    phi = np.zeros((n, n), dtype=dtype)
    if noise > 0:
        # row blocks of the upper triangle, mirrored in place: memory stays one n x n matrix
        block = max(1, 2**22 // n)
        for a in range(0, n, block):
            b = min(n, a + block)
            phi[a:b, a:] = noise * rng.standard_normal((b - a, n - a), dtype=np.float64 if dtype == np.float64
                                                       else np.float32)
            diag = np.triu(phi[a:b, a:b], 1)
            phi[a:b, a:b] = diag + diag.T
        for a in range(0, n, block):
            b = min(n, a + block)
            phi[b:, a:b] = phi[a:b, b:].T
    order = np.argsort(labels, kind="stable")
    for group in np.split(order, np.cumsum(np.bincount(labels))[:-1]):
        phi[np.ix_(group, group)] += signal
    np.fill_diagonal(phi, 0.0)
    return phi, labels.astype(np.int64)
