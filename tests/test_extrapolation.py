"""FID∞-style extrapolation: exact recovery of a + b/N, the choice of counts, and the errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lightning_ganeval.metrics.extrapolation import extrapolate_to_infinity, extrapolation_counts


@pytest.mark.parametrize(("a", "b"), [(12.5, 3000.0), (-0.25, 1e-3), (40.0, -5e4), (0.0, 0.0)])
def test_exact_recovery_of_a_plus_b_over_n(a: float, b: float) -> None:
    counts = extrapolation_counts(50_000, points=15, min_fraction=0.1)
    values = [a + b / n for n in counts]
    # Only rounding of b/N and of the sums: within 1e-12 of the scale of the values.
    assert extrapolate_to_infinity(counts, values) == pytest.approx(a, rel=0, abs=1e-12 * max(1.0, abs(a), abs(b)))


def test_least_squares_intercept_equals_numpy_polyfit_on_noisy_values() -> None:
    rng = np.random.default_rng(0)
    counts = [5000, 10000, 20000, 30000, 50000, 50000]  # a repeated count is a valid, doubly weighted point
    values = [10.0 + 8000.0 / n + rng.normal(scale=0.05) for n in counts]
    _, intercept = np.polyfit(1.0 / np.asarray(counts, dtype=np.float64), values, deg=1)
    assert extrapolate_to_infinity(counts, values) == pytest.approx(intercept, rel=1e-12)
    assert extrapolate_to_infinity(tuple(counts), np.asarray(values).tolist()) == pytest.approx(intercept, rel=1e-12)


def test_two_points_give_the_line_through_them() -> None:
    # value(1000) = 5, value(2000) = 4: b/1000 − b/2000 = 1 → b = 2000, a = 3.
    assert extrapolate_to_infinity([1000, 2000], [5.0, 4.0]) == pytest.approx(3.0, rel=1e-15)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((50_000,), [10000, 20000, 30000, 40000, 50000]),
        ((50_000, 15, 0.1), [5000 + round(45000 * i / 14 + 1e-9) for i in range(15)]),
        ((10, 5, 0.2), [2, 4, 6, 8, 10]),
        ((30, 3, 0.1), [3, 17, 30]),  # 0.1 * 30 is 3.0000000000000004 in floating point: still 3
        ((5, 10, 0.2), [2, 3, 4, 5]),  # rounding merges neighbours: fewer than `points` counts
        ((3, 5, 0.2), [2, 3]),
        ((100, 2, 1e-9), [2, 100]),  # never below 2
    ],
)
def test_counts(args: tuple, expected: list[int]) -> None:
    counts = extrapolation_counts(*args)
    assert counts == expected
    assert counts == sorted(set(counts))
    assert counts[-1] == args[0]


def test_counts_are_evenly_spaced_within_rounding() -> None:
    counts = extrapolation_counts(1234, points=7, min_fraction=0.3)
    lo = int(np.ceil(0.3 * 1234))
    assert counts[0] == lo
    assert len(counts) == 7
    assert np.abs(np.asarray(counts) - np.linspace(lo, 1234, 7)).max() <= 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_samples": 2}, "No 2 distinct counts >= 2 lie in"),
        ({"num_samples": 10, "min_fraction": 1.0}, "(min_fraction=1.0, num_samples=10)"),
        ({"num_samples": 0}, "`num_samples` must be a positive integer, got 0"),
        ({"num_samples": 10, "points": 1}, "`points` must be an integer >= 2, got 1"),
        ({"num_samples": 10, "min_fraction": 0.0}, "`min_fraction` must be a number in (0, 1], got 0.0"),
        ({"num_samples": 10, "min_fraction": float("nan")}, "`min_fraction` must be a number in (0, 1], got nan"),
        ({"num_samples": 10, "min_fraction": 1.5}, "`min_fraction` must be a number in (0, 1], got 1.5"),
    ],
)
def test_count_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        extrapolation_counts(**kwargs)


@pytest.mark.parametrize(
    ("counts", "values", "message"),
    [
        ([1000, 2000], [1.0], "same length, got 2 counts and 1 values"),
        ([1000, 1000], [1.0, 2.0], "at least 2 distinct sample counts to fit a line, got [1000, 1000]"),
        ([1000], [1.0], "at least 2 distinct"),
        ([0, 1000], [1.0, 2.0], "`counts` must hold positive integers, got 0"),
        ([1000.0, 2000], [1.0, 2.0], "`counts` must hold positive integers, got 1000.0"),
        ([1000, 2000], [1.0, float("inf")], "`values` must hold finite numbers, got inf"),
    ],
)
def test_fit_errors(counts: list, values: list, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        extrapolate_to_infinity(counts, values)
