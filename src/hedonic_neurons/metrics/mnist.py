"""Interpretability metrics of a neuron coalition on digit images (paper appendix I.6 (3)-(4)).

The coalition activation a_C(n) = mean_{i in C} h_l(n, i). Digit purity and selectivity read the
top-K images by a_C and the per-digit means of a_C; sparsity is ||a_C||_1 / ||a_C||_2 over all images
(1 for a one-hot vector, sqrt(N) for a constant one); stroke alignment scores the top-K images with
Sobel-gradient templates.

Stroke templates (regions on the 28 x 28 canvas, rows top to bottom, columns left to right; the
paper names the templates but not their regions). Per image: intensities scaled to [0, 1] by the
image's maximum, Sobel gradients gx (d/dcolumn: vertical edges) and gy (d/drow: horizontal edges),
all divided by the image's largest gradient magnitude so every score lies in [0, 1]:

===============  ========================================  ===================================
template         gradient                                  region
===============  ========================================  ===================================
top_bar          |gy| (horizontal edges)                   rows 2-10, columns 4-23
bottom_bar       |gy|                                      rows 18-26, columns 4-23
left_stem        |gx| (vertical edges)                     rows 4-23, columns 2-10
right_stem       |gx|                                      rows 4-23, columns 18-26
central_loop     sqrt(gx^2 + gy^2)                         rows 7-20, columns 7-20
diagonal         |gx + gy| / sqrt 2 (edges of a "/" or     rows 4-23, columns 4-23
                 "\\" stroke at 45 degrees)
===============  ========================================  ===================================
"""

from __future__ import annotations

import numpy as np

TOP_K = 128

# (gradient kind, row slice, column slice); slices are end-exclusive.
STROKE_TEMPLATES: dict[str, tuple[str, slice, slice]] = {
    "top_bar": ("gy", slice(2, 11), slice(4, 24)),
    "bottom_bar": ("gy", slice(18, 27), slice(4, 24)),
    "left_stem": ("gx", slice(4, 24), slice(2, 11)),
    "right_stem": ("gx", slice(4, 24), slice(18, 27)),
    "central_loop": ("mag", slice(7, 21), slice(7, 21)),
    "diagonal": ("diag", slice(4, 24), slice(4, 24)),
}


def coalition_activation(H: np.ndarray, members) -> np.ndarray:
    """a_C(n) = mean over i in C of h(n, i): (N,) from H (N, d)."""
    m = np.asarray(members, dtype=np.int64).ravel()
    if m.size == 0:
        raise ValueError("an empty coalition has no activation: pass at least one member")
    return np.asarray(H, dtype=np.float64)[:, m].mean(1)


def top_k(a: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Indices of the k largest entries of a, largest first (ties to the lower index)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    k = min(int(k), a.size)
    return np.lexsort((np.arange(a.size), -a))[:k]


def digit_purity(a: np.ndarray, labels: np.ndarray, k: int = TOP_K) -> float:
    """Purity(C) = max_d Pr[digit = d | n in top-K by a_C]."""
    labels = np.asarray(labels)
    if labels.shape != np.shape(a):
        raise ValueError(f"labels has shape {labels.shape} but the activation {np.shape(a)}")
    top = labels[top_k(a, k)]
    return float(np.bincount(top).max() / top.size)


def digit_selectivity(a: np.ndarray, labels: np.ndarray) -> float:
    """Sel(C) = max_d alpha_d - max_{d' != d} alpha_d', alpha_d = E[a_C | digit = d] (present digits only)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    labels = np.asarray(labels)
    if labels.shape != a.shape:
        raise ValueError(f"labels has shape {labels.shape} but the activation {a.shape}")
    digits = np.unique(labels)
    if digits.size < 2:
        raise ValueError("selectivity needs images of at least two digits")
    alpha = np.sort([a[labels == d].mean() for d in digits])
    return float(alpha[-1] - alpha[-2])


def activation_sparsity(a: np.ndarray) -> float:
    """Sparsity(C) = ||a_C||_1 / ||a_C||_2 over all images (paper wording): 1 one-hot, sqrt(N) constant."""
    a = np.asarray(a, dtype=np.float64).ravel()
    l2 = float(np.linalg.norm(a))
    if l2 == 0.0:
        return float("nan")
    return float(np.abs(a).sum() / l2)


def stroke_scores(images: np.ndarray) -> np.ndarray:
    """Per-image, per-template edge scores s_tau(n) in [0, 1]: (N, len(STROKE_TEMPLATES))."""
    from scipy import ndimage

    imgs = np.asarray(images, dtype=np.float64)
    if imgs.ndim == 2:
        imgs = imgs.reshape(-1, 28, 28)
    if imgs.ndim != 3 or imgs.shape[1:] != (28, 28):
        raise ValueError(f"images must be (N, 28, 28) or (N, 784), got {np.shape(images)}")
    peak = imgs.reshape(len(imgs), -1).max(1)
    imgs = imgs / np.where(peak > 0, peak, 1.0)[:, None, None]
    gx = ndimage.sobel(imgs, axis=2, mode="constant")
    gy = ndimage.sobel(imgs, axis=1, mode="constant")
    mag = np.hypot(gx, gy)
    scale = mag.reshape(len(imgs), -1).max(1)
    scale = np.where(scale > 0, scale, 1.0)[:, None, None]
    maps = {"gx": np.abs(gx) / scale, "gy": np.abs(gy) / scale, "mag": mag / scale,
            "diag": np.abs(gx + gy) / np.sqrt(2) / scale}
    out = np.empty((len(imgs), len(STROKE_TEMPLATES)))
    for t, (kind, rows, cols) in enumerate(STROKE_TEMPLATES.values()):
        out[:, t] = maps[kind][:, rows, cols].mean((1, 2))
    return out


def stroke_alignment(a: np.ndarray, scores: np.ndarray, k: int = TOP_K, baseline: np.ndarray | None = None
                     ) -> tuple[float, str]:
    """Stroke(C) = max_tau E_{n in top-K}[s_tau(n)] (I.6 (4)), and the name of the best template.

    With `baseline` (per-template means over all images, `scores.mean(0)`), each template's mean is
    taken relative to it (a lift: how much more of that stroke the top images have than an average
    digit). Without it the central-loop window, which holds most of any digit's edges, wins for
    almost every coalition and the score barely separates coalitions.
    """
    scores = np.asarray(scores)
    if scores.shape[0] != np.size(a):
        raise ValueError(f"stroke scores cover {scores.shape[0]} images but the activation {np.size(a)}")
    means = scores[top_k(a, k)].mean(0)
    if baseline is not None:
        means = means - np.asarray(baseline, dtype=np.float64)
    best = int(np.argmax(means))
    return float(means[best]), list(STROKE_TEMPLATES)[best]


def coalition_metrics(H: np.ndarray, labels_digit: np.ndarray, coalitions, stroke: np.ndarray | None = None,
                      k: int = TOP_K, stroke_baseline: np.ndarray | None = None) -> list[dict]:
    """Purity, selectivity, sparsity (and stroke alignment when `stroke` scores are given) per coalition."""
    rows = []
    for members in coalitions:
        a = coalition_activation(H, members)
        row = {"size": int(np.size(members)), "purity": digit_purity(a, labels_digit, k),
               "selectivity": digit_selectivity(a, labels_digit), "sparsity": activation_sparsity(a)}
        top = np.asarray(labels_digit)[top_k(a, k)]
        row["top_digit"] = int(np.bincount(top).argmax())
        if stroke is not None:
            row["stroke"], row["stroke_template"] = stroke_alignment(a, stroke, k)
            if stroke_baseline is not None:
                row["stroke_lift"], row["stroke_lift_template"] = stroke_alignment(a, stroke, k, stroke_baseline)
        rows.append(row)
    return rows


__all__ = ["TOP_K", "STROKE_TEMPLATES", "coalition_activation", "top_k", "digit_purity", "digit_selectivity",
           "activation_sparsity", "stroke_scores", "stroke_alignment", "coalition_metrics"]
