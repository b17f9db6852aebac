"""Coalition synergy from exact ablations (paper eq. 8; appendix I.6 (2)).

psi_pair[i, j] = E_x[l - l_-i - l_-j + l_-ij] (eq. 7, the exact PAS matrix) and psi[i] = E_x[l - l_-i]
(eq. 6). Pair(C) is the mean interaction over ordered pairs of C; Ratio(C) compares the summed
interactions with the summed single effects. Both are undefined for a single neuron (NaN).
"""

from __future__ import annotations

import numpy as np


def _members(members, n: int) -> np.ndarray:
    m = np.unique(np.asarray(members, dtype=np.int64).ravel())
    if m.size and (m[0] < 0 or m[-1] >= n):
        raise ValueError(f"coalition members {m.tolist()} fall outside 0..{n - 1}")
    return m


def _check_pair(psi_pair: np.ndarray) -> np.ndarray:
    psi_pair = np.asarray(psi_pair, dtype=np.float64)
    if psi_pair.ndim != 2 or psi_pair.shape[0] != psi_pair.shape[1]:
        raise ValueError(f"psi_pair must be a square (n, n) matrix, got shape {psi_pair.shape}")
    return psi_pair


def _offdiag_sum(psi_pair: np.ndarray, m: np.ndarray) -> float:
    sub = psi_pair[np.ix_(m, m)]
    return float(sub.sum() - np.trace(sub))


def pair_synergy(psi_pair: np.ndarray, members) -> float:
    """Pair(C) = 1/(|C|(|C|-1)) sum_{i != j in C} psi(i, j) (eq. 8); NaN for |C| < 2."""
    psi_pair = _check_pair(psi_pair)
    m = _members(members, psi_pair.shape[0])
    if m.size < 2:
        return float("nan")
    return _offdiag_sum(psi_pair, m) / (m.size * (m.size - 1))


def ratio_synergy(psi_pair: np.ndarray, psi: np.ndarray, members) -> float:
    """Ratio(C) = sum_{i != j in C} psi(i, j) / sum_{i in C} psi(i) (eq. 8); NaN for |C| < 2 or a zero sum."""
    psi_pair = _check_pair(psi_pair)
    psi = np.asarray(psi, dtype=np.float64).ravel()
    if psi.shape[0] != psi_pair.shape[0]:
        raise ValueError(f"psi has {psi.shape[0]} entries but psi_pair is {psi_pair.shape}: same players")
    m = _members(members, psi_pair.shape[0])
    den = float(psi[m].sum()) if m.size else 0.0
    if m.size < 2 or den == 0.0:
        return float("nan")
    return _offdiag_sum(psi_pair, m) / den


def coalition_synergy(labels: np.ndarray, psi_pair: np.ndarray, psi: np.ndarray) -> list[dict]:
    """One row per coalition of `labels`: {coalition, size, pair, ratio} (eq. 8)."""
    labels = np.asarray(labels)
    rows = []
    for c in np.unique(labels):
        m = np.flatnonzero(labels == c)
        rows.append({"coalition": int(c), "size": int(m.size), "pair": pair_synergy(psi_pair, m),
                     "ratio": ratio_synergy(psi_pair, psi, m)})
    return rows


__all__ = ["pair_synergy", "ratio_synergy", "coalition_synergy"]
