"""The embedded query-passage pairs: real MS MARCO / TREC DL queries x real Wikipedia passages (BM25).

`query_passage_pairs(n, split)` is what every experiment (and the models engineer's benchmark) draws
from: split "train" = MS MARCO dev-subset queries (in distribution), "ood" = TREC DL-19 + DL-20 queries.
Each query contributes its BM25 top candidates from the Wikipedia pool, so pairs come grouped by query
(what NDCG needs). Relevance grades are DERIVED (`ir.data.derived_relevance`), never human judgments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from hedonic_neurons.ir.data import FETCH_HINT, ir_dir, read_jsonl

SPLITS = {"train": "candidates.train.jsonl", "ood": "candidates.ood.jsonl"}
INPUT_TEMPLATE = "query: {q} passage: {p}"


@dataclasses.dataclass
class PairSet:
    """Query-passage pairs grouped by query, with BM25 score / rank and the derived relevance grade."""

    qids: list[str]
    queries: list[str]
    pids: list[str]
    passages: list[str]
    rel: np.ndarray  # (n,) int, DERIVED grades 0-2
    bm25: np.ndarray  # (n,) float
    rank: np.ndarray  # (n,) int, 1-based BM25 rank within the query
    split: str = "train"
    relevance: str = "derived"

    def __len__(self) -> int:
        return len(self.qids)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(zip(self.queries, self.passages, strict=True))

    def texts(self, template: str = INPUT_TEMPLATE) -> list[str]:
        """Model inputs, by default "query: {q} passage: {p}" (paper appendix D.1)."""
        return [template.format(q=q, p=p) for q, p in self]

    def subset(self, idx) -> PairSet:
        idx = np.asarray(idx, dtype=np.int64)
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return PairSet(pick(self.qids), pick(self.queries), pick(self.pids), pick(self.passages),
                       self.rel[idx], self.bm25[idx], self.rank[idx], self.split, self.relevance)


@lru_cache(maxsize=4)
def _passages(path: str) -> dict[str, str]:
    return {r["pid"]: r["text"] for r in read_jsonl(path)}


@lru_cache(maxsize=8)
def _candidates(path: str) -> tuple[dict, ...]:
    return tuple(read_jsonl(path))


def passage_texts(data_dir: str | Path | None = None) -> list[str]:
    """Every passage of the embedded Wikipedia pool (the collection the IR features are fitted on)."""
    return list(_passages(str(ir_dir(data_dir) / "wiki_passages.jsonl")).values())


def query_passage_pairs(n: int, split: str = "train", seed: int = 0, per_query: int = 10,
                        data_dir: str | Path | None = None) -> PairSet:
    """About `n` pairs (whole queries of `per_query` BM25 candidates each, so a multiple of per_query
    unless the split runs out): queries drawn at random with `seed`, candidates in BM25 order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use 'train' (MS MARCO dev) or 'ood' (TREC DL-19/20)")
    if n < 1 or per_query < 1:
        raise ValueError(f"n={n} and per_query={per_query} must be positive")
    folder = ir_dir(data_dir)
    rows = _candidates(str(folder / SPLITS[split]))
    texts = _passages(str(folder / "wiki_passages.jsonl"))
    rows = [r for r in rows if len(r["pids"]) >= per_query]
    if not rows:
        raise ValueError(f"no query in {folder / SPLITS[split]} has {per_query} candidates; {FETCH_HINT}")
    rng = np.random.default_rng(seed)
    n_q = min(len(rows), -(-n // per_query))
    order = rng.permutation(len(rows))[:n_q]
    qids, queries, pids, passages, rel, bm25, rank = [], [], [], [], [], [], []
    for i in order:
        r = rows[i]
        for j in range(per_query):
            qids.append(r["qid"])
            queries.append(r["query"])
            pids.append(r["pids"][j])
            try:
                passages.append(texts[r["pids"][j]])
            except KeyError:
                msg = f"passage {r['pids'][j]} is not in the pool; rebuild it: {FETCH_HINT}"
                raise ValueError(msg) from None
            rel.append(r["rel"][j])
            bm25.append(r["bm25"][j])
            rank.append(j + 1)
    return PairSet(qids, queries, pids, passages, np.asarray(rel, dtype=np.int64),
                   np.asarray(bm25, dtype=np.float64), np.asarray(rank, dtype=np.int64), split)
