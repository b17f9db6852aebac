"""IR features and NDCG@10 against values computed by hand on a 3-passage toy collection."""

import math

import numpy as np
import pytest

from hedonic_neurons.ir.features import FEATURE_NAMES, IRFeatures, task_targets
from hedonic_neurons.ir.metrics import dcg_at_k, mean_ndcg, ndcg_at_k
from hedonic_neurons.ir.text import query_terms, tokenize

DOCS = ["The cat sat on the mat.", "Dog and cat!", "A bird"]
Q = "what is the cat mat"  # stopwords dropped -> [cat, mat]


def feats(q=Q, docs=DOCS):
    f = IRFeatures().fit(DOCS)
    X = f.transform([q] * len(docs), docs)
    return {name: X[:, i] for i, name in enumerate(FEATURE_NAMES)}


def test_tokenizer_rule():
    assert tokenize("The cat's MAT-2!") == ["the", "cat", "s", "mat", "2"]
    assert query_terms(Q) == ["cat", "mat"]
    assert query_terms("what is the") == ["what", "is", "the"]  # all stopwords: keep them


def test_counts_and_lengths_by_hand():
    F = feats()
    np.testing.assert_allclose(F["covered_qt_number"], [2, 1, 0])
    np.testing.assert_allclose(F["covered_qt_ratio"], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(F["stream_length"], [6, 3, 2])
    idf_cat, idf_mat = math.log(1.6), math.log(8 / 3)  # N=3, df(cat)=2, df(mat)=1
    np.testing.assert_allclose(F["idf_sum"], [idf_cat + idf_mat] * 3)
    np.testing.assert_allclose(F["sum_tf"], [2, 1, 0])
    np.testing.assert_allclose(F["min_tf"], [1, 0, 0])
    np.testing.assert_allclose(F["max_tf"], [1, 1, 0])
    np.testing.assert_allclose(F["mean_tf"], [1, 0.5, 0])
    np.testing.assert_allclose(F["var_tf"], [0, 0.25, 0])
    np.testing.assert_allclose(F["sum_tfl"], [2 / 6, 1 / 3, 0])
    np.testing.assert_allclose(F["mean_tfl"], [1 / 6, 1 / 6, 0])
    np.testing.assert_allclose(F["var_tfl"], [0, (1 / 6) ** 2, 0])
    np.testing.assert_allclose(F["max_tfidf"], [idf_mat, idf_cat, 0])
    np.testing.assert_allclose(F["min_tfidf"], [idf_cat, 0, 0])
    np.testing.assert_allclose(F["var_tfidf"], [((idf_mat - idf_cat) / 2) ** 2, (idf_cat / 2) ** 2, 0])


def test_bm25_and_language_models_by_hand():
    F = feats()
    avgdl = 11 / 3
    idf_cat, idf_mat = math.log(1.6), math.log(8 / 3)
    norm = lambda L: 1.5 * (0.25 + 0.75 * L / avgdl)  # noqa: E731
    bm25 = [idf_cat / (1 + norm(6)) + idf_mat / (1 + norm(6)), idf_cat / (1 + norm(3)), 0.0]
    np.testing.assert_allclose(F["bm25"], bm25)
    p_cat, p_mat = 3 / 21, 2 / 21  # (cf + 1) / (11 tokens + 9 types + 1)
    dirichlet = lambda tfc, tfm, L: (math.log((tfc + 2000 * p_cat) / (L + 2000))  # noqa: E731
                                     + math.log((tfm + 2000 * p_mat) / (L + 2000)))
    want = [dirichlet(1, 1, 6), dirichlet(1, 0, 3), dirichlet(0, 0, 2)]
    np.testing.assert_allclose(F["lm_dirichlet"], want)
    jm = lambda tfc, tfm, L: math.log(0.9 * tfc / L + 0.1 * p_cat) + math.log(0.9 * tfm / L + 0.1 * p_mat)  # noqa: E731
    np.testing.assert_allclose(F["lm_jm"], [jm(1, 1, 6), jm(1, 0, 3), jm(0, 0, 2)])


def test_bm25_feature_equals_bm25s_retrieval_score():
    import bm25s

    r = bm25s.BM25()
    r.index([tokenize(d) for d in DOCS], show_progress=False)
    docs, scores = r.retrieve([query_terms(Q)], k=3, show_progress=False)
    F = feats()
    np.testing.assert_allclose(F["bm25"][docs[0]], scores[0], rtol=1e-5)


def test_task_targets_match_features():
    F = feats()
    np.testing.assert_allclose(task_targets("cqtr", [Q] * 3, DOCS), F["covered_qt_ratio"])
    np.testing.assert_allclose(task_targets("mtfl", [Q] * 3, DOCS), F["mean_tfl"])
    with pytest.raises(ValueError, match="cqtr"):
        task_targets("cqrt", [Q], DOCS[:1])


def test_empty_inputs_are_clear():
    with pytest.raises(ValueError, match="empty collection"):
        IRFeatures().fit([])
    with pytest.raises(ValueError, match="one per pair"):
        IRFeatures().fit(DOCS).transform([Q], DOCS)


def test_ndcg_by_hand():
    scores, rels = [0.9, 0.8, 0.1, 0.5], [0, 2, 1, 3]
    # ranked rels 0,2,3,1: DCG = 0 + 3/log2(3) + 7/2 + 1/log2(5); ideal 3,2,1,0: 7 + 3/log2(3) + 1/2
    assert ndcg_at_k(scores, rels) == pytest.approx(5.823465818787765 / 9.392789260714373)
    assert ndcg_at_k(scores, rels) == pytest.approx(0.619993237061603)
    assert ndcg_at_k(scores, rels, k=1) == 0.0
    assert dcg_at_k([3, 2], k=1) == 7.0
    assert ndcg_at_k([1, 2], [0, 0]) == 0.0
    # the mean over queries skips a query with no relevant candidate
    assert mean_ndcg(["a", "a", "b", "b"], [1, 0, 1, 0], [1, 0, 0, 0]) == 1.0


def test_ndcg_ties_are_averaged_not_input_order():
    # scores tie on the first two (gains 0 and 3): each gets 1.5 at positions 1 and 2; the third gain 1 at 3
    dcg = 1.5 * (1 + 1 / np.log2(3)) + 1 / 2
    assert ndcg_at_k([1, 1, 0], [0, 2, 1]) == pytest.approx(dcg / (3 + 1 / np.log2(3)))
    assert ndcg_at_k([1, 1, 0], [2, 0, 1]) == ndcg_at_k([1, 1, 0], [0, 2, 1])
    # k cuts inside a tie group: only position 1 counts, at the group's mean gain
    assert ndcg_at_k([1, 1, 0], [0, 2, 1], k=1) == pytest.approx(1.5 / 3)
    # constant scores score the mean over all orderings, whatever order the candidates come in
    assert ndcg_at_k([0, 0, 0], [2, 1, 0]) == pytest.approx(ndcg_at_k([0, 0, 0], [0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        ndcg_at_k([np.nan, 1.0], [1, 0])
