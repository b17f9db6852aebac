"""Digit purity, selectivity, sparsity and stroke alignment on hand-made cases with known values."""

import numpy as np
import pytest

from hedonic_neurons.metrics.mnist import (
    STROKE_TEMPLATES,
    activation_sparsity,
    coalition_activation,
    coalition_metrics,
    digit_purity,
    digit_selectivity,
    stroke_alignment,
    stroke_scores,
    top_k,
)


def test_one_digit_coalition_has_purity_one():
    labels = np.repeat(np.arange(10), 30)
    H = np.zeros((300, 4))
    H[labels == 7, :2] = 1.0  # neurons 0 and 1 fire only on sevens
    a = coalition_activation(H, [0, 1])
    assert digit_purity(a, labels, k=30) == 1.0
    # top-60 then holds 30 sevens and 30 ties broken to the lowest indices (zeros)
    assert digit_purity(a, labels, k=60) == pytest.approx(0.5)
    assert digit_selectivity(a, labels) == pytest.approx(1.0)
    rows = coalition_metrics(H, labels, [[0, 1]], k=30)
    assert rows[0]["purity"] == 1.0 and rows[0]["top_digit"] == 7


def test_sparsity_known_values():
    one_hot = np.zeros(100)
    one_hot[17] = 3.0
    assert activation_sparsity(one_hot) == pytest.approx(1.0)
    assert activation_sparsity(np.ones(100)) == pytest.approx(10.0)  # sqrt(N) for a constant
    assert activation_sparsity(np.array([1.0, -1.0])) == pytest.approx(np.sqrt(2))
    assert np.isnan(activation_sparsity(np.zeros(5)))


def test_selectivity_hand_values():
    labels = np.array([0, 0, 1, 1, 2, 2])
    a = np.array([1.0, 3.0, 5.0, 5.0, 0.0, 0.0])  # means 2, 5, 0
    assert digit_selectivity(a, labels) == pytest.approx(3.0)


def test_top_k_order_and_ties():
    assert top_k(np.array([1.0, 3.0, 3.0, 0.0]), 3).tolist() == [1, 2, 0]


def _bar(row0, row1, col0, col1):
    img = np.zeros((28, 28))
    img[row0:row1, col0:col1] = 1.0
    return img


def test_stroke_templates_pick_the_drawn_stroke():
    imgs = np.stack([
        _bar(4, 7, 6, 22),     # top bar
        _bar(21, 24, 6, 22),   # bottom bar
        _bar(6, 22, 4, 7),     # left stem
        _bar(6, 22, 21, 24),   # right stem
    ])
    s = stroke_scores(imgs)
    names = list(STROKE_TEMPLATES)
    assert s.shape == (4, 6) and (s >= 0).all() and (s <= 1).all()
    for i, want in enumerate(["top_bar", "bottom_bar", "left_stem", "right_stem"]):
        assert names[int(np.argmax(s[i]))] == want
    # a coalition whose top images are the top bars aligns with the top-bar template
    a = np.array([5.0, 0.0, 0.0, 0.0])
    score, name = stroke_alignment(a, s, k=1)
    assert name == "top_bar" and score == pytest.approx(s[0, 0])


def test_diagonal_template():
    img = np.zeros((28, 28))
    for i in range(6, 22):
        img[i, 27 - i - 1:27 - i + 1] = 1.0  # a "/" stroke
    s = stroke_scores(img[None])[0]
    assert s[list(STROKE_TEMPLATES).index("diagonal")] > s[list(STROKE_TEMPLATES).index("top_bar")]


def test_stroke_lift_is_relative_to_the_average_image():
    imgs = np.stack([_bar(4, 7, 6, 22), _bar(21, 24, 6, 22), _bar(6, 22, 4, 7), _bar(6, 22, 21, 24)])
    s = stroke_scores(imgs)
    base = s.mean(0)
    # the top image is the left stem: its lift is largest for the left-stem template
    score, name = stroke_alignment(np.array([0.0, 0.0, 9.0, 0.0]), s, k=1, baseline=base)
    assert name == "left_stem" and score == pytest.approx(s[2, 2] - base[2])
    # top-K = every image: no lift at all
    score, _ = stroke_alignment(np.arange(4.0), s, k=4, baseline=base)
    assert score == pytest.approx(0.0, abs=1e-12)
