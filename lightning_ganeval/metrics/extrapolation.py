"""Extrapolating a sample-size-biased metric to infinitely many samples (FID∞, IS∞, KID at N → ∞).

Chong & Forsyth, "Effectively Unbiased FID and Inception Score and where to find them" (CVPR 2020): FID
computed from N generated samples is, to first order, FID_N = FID∞ + b/N, with a bias b that depends on the
generator, so comparing models at one fixed N does not remove it. Their reference code evaluates FID at 15
counts ``linspace(5000, 50000)``, fits an ordinary least-squares line in x = 1/N and reports the intercept.
:func:`extrapolation_counts` picks such counts, :func:`extrapolate_to_infinity` fits the line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["extrapolate_to_infinity", "extrapolation_counts"]


def extrapolate_to_infinity(counts: Sequence[int], values: Sequence[float]) -> float:
    """Intercept a of the least-squares line ``value = a + b / N`` through the (count, value) points.

    Ordinary least squares in x = 1/N, every point weighted alike (as ``sklearn.LinearRegression`` in the
    reference implementation), computed in float64 from centred sums.

    Args:
        counts: Sample counts N (positive integers; at least 2 distinct).
        values: The metric at each count (finite).

    Returns:
        The extrapolated value at N → ∞.

    Raises:
        ValueError: different lengths, fewer than 2 distinct counts, a count < 1, or a non-finite value.

    Example:
        >>> extrapolate_to_infinity([1000, 2000, 4000], [12.0 + 5000 / n for n in (1000, 2000, 4000)])
        12.0
    """
    counts, values = list(counts), list(values)
    if len(counts) != len(values):
        raise ValueError(
            f"`counts` and `values` must have the same length, got {len(counts)} counts and {len(values)} values."
        )
    for n in counts:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"`counts` must hold positive integers, got {n!r}.")
    if len(set(counts)) < 2:
        raise ValueError(f"`counts` must hold at least 2 distinct sample counts to fit a line, got {counts}.")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"`values` must hold finite numbers, got {v!r}.")
    x = [1.0 / n for n in counts]
    y = [float(v) for v in values]
    x_mean = math.fsum(x) / len(x)
    y_mean = math.fsum(y) / len(y)
    sxx = math.fsum((xi - x_mean) ** 2 for xi in x)
    sxy = math.fsum((xi - x_mean) * (yi - y_mean) for xi, yi in zip(x, y, strict=True))
    slope = sxy / sxx
    return y_mean - slope * x_mean


def extrapolation_counts(num_samples: int, points: int = 5, min_fraction: float = 0.2) -> list[int]:
    """Evenly spaced sample counts in [min_fraction · N, N] at which to evaluate a metric for the fit.

    The counts are ``lo + (N − lo)·i/(points − 1)`` for i = 0 … points − 1, rounded half up, with
    ``lo = max(2, ⌈min_fraction · N⌉)``; the largest is always N. Rounding can merge neighbours for a small N,
    so fewer than ``points`` counts may come back (always at least 2). Chong & Forsyth use 15 counts from 5,000
    to 50,000 (``points=15, min_fraction=0.1`` with N = 50,000).

    Args:
        num_samples: N, the largest count (all the samples).
        points: How many counts to aim for, >= 2.
        min_fraction: The smallest count as a fraction of N, in (0, 1].

    Returns:
        Sorted, distinct counts, each >= 2.

    Raises:
        ValueError: bad arguments, or fewer than 2 distinct counts >= 2 fit in [min_fraction · N, N].

    Example:
        >>> extrapolation_counts(50_000)
        [10000, 20000, 30000, 40000, 50000]
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"`num_samples` must be a positive integer, got {num_samples!r}.")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"`points` must be an integer >= 2, got {points!r}.")
    if (
        isinstance(min_fraction, bool)
        or not isinstance(min_fraction, (int, float))
        or not 0 < min_fraction <= 1  # also rejects NaN
    ):
        raise ValueError(f"`min_fraction` must be a number in (0, 1], got {min_fraction!r}.")
    # Rounded before the ceiling so that e.g. 0.1 * 30 = 3.0000000000000004 gives 3, not 4.
    lo = max(2, math.ceil(round(min_fraction * num_samples, 9)))
    if lo >= num_samples:
        raise ValueError(
            f"No 2 distinct counts >= 2 lie in [min_fraction * num_samples, num_samples] = "
            f"[{min_fraction * num_samples:g}, {num_samples}] (min_fraction={min_fraction!r}, "
            f"num_samples={num_samples}); use more samples or a smaller min_fraction."
        )
    span, steps = num_samples - lo, points - 1
    # Integer arithmetic: lo + round(span * i / steps), halves rounded up.
    return sorted({lo + (2 * span * i + steps) // (2 * steps) for i in range(points)})
