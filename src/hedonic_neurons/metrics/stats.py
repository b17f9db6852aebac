"""Small statistics shared by every table: mean with a Student-t 95 % confidence half-width.

Values that are not finite (a seed or layer whose metric came out NaN) are left out of a mean, never
silently: with `what` given, a `ResultWarning` says which were missing and what the mean is over,
and the experiments carry it into summary.md and report.html.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def finite(values, what: str | None = None, labels: Sequence | None = None, unit: str = "value") -> np.ndarray:
    """The finite entries of `values`; with `what`, warn (ResultWarning) naming the ones left out.

    `labels` name the entries (e.g. seeds or layers) in the warning: "Table 6 Pair, Leiden: seed 2 missing
    (NaN): mean over 2 of 3 seeds".
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(x)
    if what is not None and not keep.all():
        from hedonic_neurons.notices import warn

        names = list(labels) if labels is not None and len(labels) == x.size else list(range(x.size))
        gone = ", ".join(str(names[i]) for i in np.flatnonzero(~keep))
        over = (f"mean over {int(keep.sum())} of {x.size} {unit}s" if keep.any()
                else f"no {unit} left: reported as n/a")
        warn(f"{what}: {unit} {gone} missing (NaN): {over}")
    return x[keep]


def nanmean_noted(values, what: str | None = None, labels: Sequence | None = None, unit: str = "value") -> float:
    """Mean of the finite values (NaN when none); with `what`, warning about every value left out (`finite`)."""
    x = finite(values, what, labels, unit)
    return float(x.mean()) if x.size else float("nan")


def mean_ci95(values, what: str | None = None, labels: Sequence | None = None,
              unit: str = "value") -> tuple[float, float]:
    """Mean and the half-width of its two-sided 95 % t interval; NaN half-width for a single value (one seed
    has no interval: a 0 would read as a certain mean and let a verdict call intervals apart; `fmt_ci` says so).

    Non-finite values are left out; with `what` given, a ResultWarning names them.
    """
    x = finite(values, what, labels, unit)
    if x.size == 0:
        raise ValueError("mean_ci95 got no finite values")
    if x.size == 1:
        return float(x[0]), float("nan")
    half = stats.t.ppf(0.975, df=x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


def fmt_ci(values, digits: int = 3, what: str | None = None, labels: Sequence | None = None,
           unit: str = "value") -> str:
    """'mean ± half' for a table cell; one finite value has no interval ('0.123 (1 value, no CI)'), none 'n/a'."""
    x = finite(values, what, labels, unit)
    if x.size == 0:
        return "n/a"
    m, h = mean_ci95(x)
    # tiny values (PAS synergies ~1e-5 .. 1e-7) would print as 0.000: keep 3 significant digits
    small = m != 0 and abs(m) < 10.0 ** -(digits - 1)
    mean = f"{m:.3g}" if small else f"{m:.{digits}f}"
    if x.size == 1:
        return f"{mean} (1 {unit}, no CI)"
    return f"{mean} ± {h:.2g}" if small else f"{mean} ± {h:.{digits}f}"


def mean_lo_hi(values) -> tuple[float, float, float]:
    """(mean, lower, upper end of its 95 % t interval) over the finite values; NaNs when there is none, and
    NaN ends for a single value (no interval)."""
    x = finite(values)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    m, h = mean_ci95(x)
    return m, m - h, m + h


def seed_cell(values, digits: int = 3, what: str | None = None, labels: Sequence | None = None) -> str:
    """A table cell over seeds, 'mean ± half' (`fmt_ci`); one seed left has no interval, and fmt_ci says
    so rather than printing '± 0.000'."""
    return fmt_ci(values, digits, what=what, labels=labels, unit="seed")


def paired_ci(a, b, n_boot: int = 10_000, seed: int = 0) -> dict:
    """Paired comparison of b - a over the same units (e.g. queries): mean, 95 % t half-width, a percentile
    bootstrap interval, and how many went up / down. Why: two models on the same queries differ far less
    than their separate CIs suggest, and a mean gain may still sit inside the noise of 40 queries."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.size < 2 or not np.all(np.isfinite(d)):
        raise ValueError(f"paired_ci needs >= 2 finite paired values, got {d.size}")
    m, h = mean_ci95(d)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, (n_boot, d.size))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"mean": m, "t_half": h, "boot_lo": float(lo), "boot_hi": float(hi), "n": int(d.size),
            "up": int((d > 0).sum()), "down": int((d < 0).sum())}
