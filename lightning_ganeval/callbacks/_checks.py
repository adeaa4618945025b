"""Argument checks shared by the callbacks: each error names the argument, the bad value and what is allowed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = [
    "check_bool",
    "check_callable",
    "check_choice",
    "check_extrapolation_samples",
    "check_int",
    "check_name",
    "check_path",
]


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return value


def check_path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a path (str or os.PathLike) or None, got {type(value).__name__}.")
    path = os.fspath(value)
    if not path.strip():
        # An empty string would silently mean the current directory.
        raise ValueError(f"`{name}` must be a non-empty path or None, got {value!r}.")
    return path


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(repr(c) for c in choices)}, got {value!r}.")
    return value


def check_name(value: Any) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValueError(f"`name` must be a non-empty string without surrounding spaces, got {value!r}.")
    return value


def check_callable(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"`{name}` must be a callable or None, got {type(value).__name__}.")
    return value


def check_extrapolation_samples(num_samples: Any, minimum: int, points: int, per_point: int) -> None:
    """``num_samples`` large enough for ``points`` extrapolation counts of at least ``per_point`` samples each."""
    if isinstance(num_samples, int) and not isinstance(num_samples, bool) and num_samples < minimum:
        raise ValueError(
            f"`num_samples` must be an int >= {minimum} with extrapolate=True and extrapolation_points={points}"
            f" (the smallest count num_samples // extrapolation_points needs {per_point} sample(s) or more), got"
            f" {num_samples}. Use more samples or fewer extrapolation points."
        )
