"""How far two valuations agree (the Hessian-vs-exact PAS report: the
second-order form is only as good as the ablations are small, so report its agreement, never assume it)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def agreement(phi_a: np.ndarray, phi_b: np.ndarray, n_pairs: int = 200_000, top_k: int = 1000,
              random_state: int | None = 0, pairs: tuple[np.ndarray, np.ndarray] | None = None
              ) -> dict[str, float]:
    """Pearson, Spearman and top-k overlap of two (n, n) valuations over unordered off-diagonal pairs.

    Uses every pair i < j when there are at most ``n_pairs``, else a uniform sample of that many (seeded);
    ``pairs=(i, j)`` fixes the pairs instead (e.g. the subset where an expensive exact value is known).
    ``topk_overlap`` = |top-k pairs by phi_a  &  top-k pairs by phi_b| / k, the top by value (most
    synergistic), within the pairs used; k is capped at the number of pairs.
    """
    A, B = np.asarray(phi_a), np.asarray(phi_b)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape != B.shape:
        raise ValueError(f"phi_a {A.shape} and phi_b {B.shape} must be square matrices of the same shape")
    n = A.shape[0]
    total = n * (n - 1) // 2
    if total < 2:
        raise ValueError(f"n={n} players give {total} pairs: agreement needs at least 2")
    if pairs is not None:
        i, j = (np.asarray(p, dtype=np.int64) for p in pairs)
        if i.shape != j.shape or i.ndim != 1 or i.size < 2:
            raise ValueError("pairs must be two index arrays of the same length (at least 2 pairs)")
        if i.min() < 0 or j.min() < 0 or max(i.max(), j.max()) >= n or np.any(i == j):
            raise ValueError(f"pairs must index off-diagonal entries of the {n} x {n} matrices")
    elif total <= n_pairs:
        i, j = np.triu_indices(n, 1)
    else:
        rng = np.random.default_rng(random_state)
        # draw ordered pairs i != j, fold to i < j; duplicates are few and harmless for the statistics
        i = rng.integers(0, n, size=n_pairs)
        j = (i + rng.integers(1, n, size=n_pairs)) % n
        i, j = np.minimum(i, j), np.maximum(i, j)
    a = A[i, j].astype(np.float64)
    b = B[i, j].astype(np.float64)
    k = int(min(top_k, a.size))
    ta = set(np.argpartition(-a, k - 1)[:k].tolist())
    tb = set(np.argpartition(-b, k - 1)[:k].tolist())
    pear = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    spear = float(stats.spearmanr(a, b).statistic) if a.std() > 0 and b.std() > 0 else float("nan")
    return {"pearson": pear, "spearman": spear, "topk_overlap": len(ta & tb) / k,
            "n_pairs": int(a.size), "top_k": k}
