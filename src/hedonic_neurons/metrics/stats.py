"""Small statistics shared by every table: mean with a Student-t 95 % confidence half-width."""

from __future__ import annotations

import numpy as np
from scipy import stats


def mean_ci95(values) -> tuple[float, float]:
    """Mean and the half-width of its two-sided 95 % t interval (0 for a single value)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("mean_ci95 got no finite values")
    if x.size == 1:
        return float(x[0]), 0.0
    half = stats.t.ppf(0.975, df=x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


def fmt_ci(values, digits: int = 3) -> str:
    """'mean ± half' formatted for a table cell."""
    m, h = mean_ci95(values)
    return f"{m:.{digits}f} ± {h:.{digits}f}"
