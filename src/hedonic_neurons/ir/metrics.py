"""Ranking metrics: NDCG@k with the paper's gain 2^rel - 1 and log2(rank + 1) discount (appendix D.1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dcg_at_k(rels_in_rank_order: Sequence[float], k: int = 10) -> float:
    """DCG@k = sum_{i<=k} (2^rel_i - 1) / log2(i + 1) for relevances already in ranked order."""
    r = np.asarray(rels_in_rank_order, dtype=np.float64)[:k]
    if r.size == 0:
        return 0.0
    return float(np.sum((2.0 ** r - 1.0) / np.log2(np.arange(2, r.size + 2))))


def _tie_aware_dcg(scores: np.ndarray, rels: np.ndarray, k: int) -> float:
    """Expected DCG@k over the orderings of tied scores (McSherry & Najork, 2008): each candidate of a
    tie group gets the group's mean gain at each of the group's positions."""
    order = np.argsort(-scores, kind="stable")
    s, g = scores[order], 2.0 ** rels[order] - 1.0
    disc = np.zeros(s.size)
    m = min(k, s.size)
    disc[:m] = 1.0 / np.log2(np.arange(2, m + 2))
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], s.size]
    return float(sum(g[a:b].mean() * disc[a:b].sum() for a, b in zip(starts, ends, strict=True)))


def ndcg_at_k(scores: Sequence[float], rels: Sequence[float], k: int = 10) -> float:
    """NDCG@k of one query: rank by `scores` (descending), normalise by the ideal DCG.

    Tied scores count as the mean over their orderings: breaking them by input order would hand a
    model with constant scores the candidate order (BM25's on the embedded pool) for free. A query
    without any relevant candidate has IDCG = 0 and NDCG 0 by convention (trec_eval's choice).
    """
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(rels, dtype=np.float64)
    if s.shape != r.shape:
        raise ValueError(f"scores {s.shape} and rels {r.shape} differ in shape; pass one score per candidate")
    if np.isnan(s).any():
        raise ValueError("NaN in the scores; the model produced NaNs (check its inputs / weights)")
    ideal = dcg_at_k(np.sort(r)[::-1], k)
    return 0.0 if ideal <= 0 else _tie_aware_dcg(s, r, k) / ideal


def mean_ndcg(qids: Sequence, scores: Sequence[float], rels: Sequence[float], k: int = 10,
              skip_unjudged: bool = True) -> float:
    """Mean NDCG@k over queries (pairs grouped by qid); queries with no relevant candidate are skipped
    when `skip_unjudged` (they would score 0 whatever the model does)."""
    qids = np.asarray(qids)
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(rels, dtype=np.float64)
    vals = []
    for q in dict.fromkeys(qids.tolist()):
        m = qids == q
        if skip_unjudged and not np.any(r[m] > 0):
            continue
        vals.append(ndcg_at_k(s[m], r[m], k))
    if not vals:
        raise ValueError("no query has a relevant candidate; NDCG is undefined (check the qrels / labels)")
    return float(np.mean(vals))


def per_query_ndcg(qids: Sequence, scores: Sequence[float], rels: Sequence[float], k: int = 10
                   ) -> tuple[list, np.ndarray]:
    """(query ids, NDCG@k per query) over the queries with a relevant candidate (as `mean_ndcg` averages):
    the per-query values that paired comparisons of two models need."""
    qids = np.asarray(qids)
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(rels, dtype=np.float64)
    keep = [q for q in dict.fromkeys(qids.tolist()) if np.any(r[qids == q] > 0)]
    return keep, np.array([ndcg_at_k(s[qids == q], r[qids == q], k) for q in keep])


def ndcg_matrix(qids: Sequence, scores: np.ndarray, rels: Sequence[float], k: int = 10) -> np.ndarray:
    """Mean NDCG@k for each row of `scores` (B, n_pairs): many ablated models scored in one call."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    return np.array([mean_ndcg(qids, row, rels, k) for row in scores])
