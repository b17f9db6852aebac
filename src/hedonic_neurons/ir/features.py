"""MSLR-style query-passage features (paper appendix D-E; Qin & Liu 2013), vectorised over pairs.

One stream (the passage body). With Q the distinct query terms (text.unique_query_terms), tf_t the
count of t in the passage, L the passage length in tokens, N the number of passages in the fitted
collection, df_t their document frequency and cf_t the collection frequency:

- covered_qt_number = #{t in Q : tf_t > 0};  covered_qt_ratio (CQTR) = that / |Q|
- stream_length = L;  idf_sum = sum_t idf_t with idf_t = ln(1 + (N - df_t + 0.5) / (df_t + 0.5))
  (the Lucene/bm25s idf, always positive)
- {sum,min,max,mean,var}_tf of tf_t; the same of tf_t / L ("tfl"; mean_tfl is the mean-TF/L task)
  and of tf_t * idf_t ("tfidf"); var is the population variance over Q
- bm25 = sum_t idf_t tf_t / (tf_t + k1 (1 - b + b L / avgdl)) (Lucene >= 8 form, no (k1 + 1) factor;
  k1 = 1.5, b = 0.75, bm25s' defaults, so it equals the bm25s score of the same passage)
- lm_dirichlet = sum_t ln((tf_t + mu p_t) / (L + mu)), lm_jm = sum_t ln((1 - lam) tf_t / L + lam p_t),
  with p_t = (cf_t + 1) / (|C| + |V| + 1) (add-one so unseen query terms stay finite), mu = 2000,
  lam = 0.1 (the LETOR settings). With L = 0, tf_t / L is taken as 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from hedonic_neurons.ir.text import tokenize, unique_query_terms

FEATURE_NAMES: tuple[str, ...] = (
    "covered_qt_number", "covered_qt_ratio", "stream_length", "idf_sum",
    "sum_tf", "min_tf", "max_tf", "mean_tf", "var_tf",
    "sum_tfl", "min_tfl", "max_tfl", "mean_tfl", "var_tfl",
    "sum_tfidf", "min_tfidf", "max_tfidf", "mean_tfidf", "var_tfidf",
    "bm25", "lm_dirichlet", "lm_jm",
)


class IRFeatures:
    """Collection statistics (fit) and the MSLR feature matrix of query-passage pairs (transform)."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, mu: float = 2000.0, lam: float = 0.1):
        self.k1, self.b, self.mu, self.lam = k1, b, mu, lam

    def fit(self, passages: Sequence[str]) -> IRFeatures:
        """Learn N, df, cf, avgdl and the vocabulary from the passage collection."""
        if len(passages) == 0:
            raise ValueError("IRFeatures.fit got an empty collection; pass the passage pool")
        vocab: dict[str, int] = {}
        rows, cols = [], []
        lengths = np.empty(len(passages), dtype=np.float64)
        for r, text in enumerate(passages):
            toks = tokenize(text)
            lengths[r] = len(toks)
            for t in toks:
                cols.append(vocab.setdefault(t, len(vocab)))
            rows.extend([r] * len(toks))
        m = sparse.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(passages), len(vocab)))
        m.sum_duplicates()
        self.vocab_ = vocab
        self.n_docs_ = len(passages)
        self.df_ = np.asarray((m > 0).sum(axis=0)).ravel().astype(np.float64)
        self.cf_ = np.asarray(m.sum(axis=0)).ravel()
        self.total_tokens_ = float(lengths.sum())
        self.avgdl_ = float(lengths.mean())
        return self

    # --- term statistics for arbitrary terms (unseen terms: df = cf = 0) ---------------------------
    def _stats(self, terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.array([self.vocab_.get(t, -1) for t in terms], dtype=np.int64)
        df = np.where(ids >= 0, self.df_[np.maximum(ids, 0)], 0.0)
        cf = np.where(ids >= 0, self.cf_[np.maximum(ids, 0)], 0.0)
        return df, cf

    def idf(self, df: np.ndarray) -> np.ndarray:
        return np.log1p((self.n_docs_ - df + 0.5) / (df + 0.5))

    def transform(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """(n_pairs, len(FEATURE_NAMES)) float64 features of the pairs (queries[i], passages[i])."""
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries but {len(passages)} passages; pass one per pair"
                             )
        n = len(queries)
        qts = [unique_query_terms(q) for q in queries]
        width = max([len(q) for q in qts] + [1])
        # Pair-local vocabulary: term -> column; tf lookups go through one sparse pair x term matrix.
        local: dict[str, int] = {}
        qid = np.full((n, width), -1, dtype=np.int64)
        for i, terms in enumerate(qts):
            for j, t in enumerate(terms):
                qid[i, j] = local.setdefault(t, len(local))
        rows, cols, lengths = [], [], np.empty(n, dtype=np.float64)
        for i, text in enumerate(passages):
            toks = tokenize(text)
            lengths[i] = len(toks)
            c = [local[t] for t in toks if t in local]
            cols.extend(c)
            rows.extend([i] * len(c))
        tfm = sparse.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(n, max(len(local), 1)))
        tfm.sum_duplicates()
        mask = qid >= 0
        safe = np.where(mask, qid, 0)
        tf = np.asarray(tfm[np.repeat(np.arange(n), width), safe.ravel()]).reshape(n, width) * mask
        terms_by_col = list(local)
        df_l, cf_l = self._stats(terms_by_col) if terms_by_col else (np.zeros(1), np.zeros(1))
        df = np.where(mask, df_l[safe], 0.0)
        cf = np.where(mask, cf_l[safe], 0.0)
        idf = np.where(mask, self.idf(df), 0.0)
        nq = mask.sum(axis=1).astype(np.float64)
        nq_safe = np.maximum(nq, 1.0)
        L = lengths[:, None]
        tfl = np.where(L > 0, tf / np.maximum(L, 1.0), 0.0)
        tfidf = tf * idf

        def agg(x: np.ndarray) -> list[np.ndarray]:
            s = (x * mask).sum(axis=1)
            mean = s / nq_safe
            big = np.finfo(np.float64).max
            mn = np.where(mask, x, big).min(axis=1)
            mx = np.where(mask, x, -big).max(axis=1)
            var = (((x - mean[:, None]) ** 2) * mask).sum(axis=1) / nq_safe
            empty = nq == 0
            return [np.where(empty, 0.0, v) for v in (s, mn, mx, mean, var)]

        covered = ((tf > 0) & mask).sum(axis=1).astype(np.float64)
        denom = tf + self.k1 * (1 - self.b + self.b * L / self.avgdl_)
        bm25 = (idf * tf / np.where(mask, denom, 1.0) * mask).sum(axis=1)
        p = (cf + 1.0) / (self.total_tokens_ + len(self.vocab_) + 1.0)
        lm_dir = (np.log((tf + self.mu * p) / (L + self.mu)) * mask).sum(axis=1)
        lm_jm = (np.log((1 - self.lam) * tfl + self.lam * p) * mask).sum(axis=1)
        cols_out = [covered, covered / nq_safe, lengths, idf.sum(axis=1), *agg(tf), *agg(tfl), *agg(tfidf),
                    bm25, lm_dir, lm_jm]
        return np.stack(cols_out, axis=1)


def task_targets(task: str, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
    """The scalar labels of the regression tasks, computed from text: 'cqtr' or 'mtfl' (mean TF/L)."""
    qts = [set(unique_query_terms(q)) for q in queries]
    out = np.empty(len(queries), dtype=np.float64)
    for i, (terms, p) in enumerate(zip(qts, passages, strict=True)):
        toks = tokenize(p)
        if task == "cqtr":
            out[i] = sum(t in set(toks) for t in terms) / max(len(terms), 1)
        elif task == "mtfl":
            L = len(toks)
            out[i] = 0.0 if L == 0 or not terms else sum(toks.count(t) for t in terms) / L / len(terms)
        else:
            raise ValueError(f"unknown regression task {task!r}; use 'cqtr' or 'mtfl'")
    return out
