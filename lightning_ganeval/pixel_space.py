"""Pixel spaces: how a GAN's images are encoded, declared once for real and generated images.

A :class:`PixelSpace` is either a value range ``(low, high)`` (``(-1, 1)`` for a ``tanh`` generator, ``(0, 1)`` for
torchvision's ``ToTensor``, ``(0, 255)``) or a normalisation ``(mean, std)`` as torchvision's ``Normalize`` applies
it to ``[0, 1]`` pixels. :func:`coerce_pixel_space` is the one way from what a user passes (``space=``,
``value_range=``, ``normalize=``) to a :class:`PixelSpace`; its :class:`PixelSpaceError` is worded with the generic
argument names and renamed by the entry point (:meth:`PixelSpaceError.naming`). Inferring an undeclared space from
data, and converting images in a space to uint8, are in :mod:`lightning_ganeval.images`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "GENERATED_RANGE_TOLERANCE",
    "RANGE_TOLERANCE",
    "PixelSpace",
    "PixelSpaceError",
    "coerce_pixel_space",
]

RANGE_TOLERANCE = 0.01
"""Real images may leave the declared space by this fraction of its width (``high - low``) before
:func:`to_uint8_rgb` raises; e.g. 0.02 for (-1, 1). Small overshoots (bicubic resizing) are clamped; larger ones
indicate a wrong space. Generated images are allowed :data:`GENERATED_RANGE_TOLERANCE` instead."""

GENERATED_RANGE_TOLERANCE = 1.0
"""Generated images may leave the declared space by this fraction of its width (clamped and counted) before
:func:`to_uint8_rgb` raises; beyond it the scale is wrong, e.g. [0, 255] images declared as (-1, 1)."""

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_SIDES = ("generated", "real")
_DEFAULT_ARGUMENT = {"generated": "value_range", "real": "real_value_range"}
_KINDS = ("value_range", "normalize")
_ARGUMENTS = ("space", *_KINDS)  # the generic names a PixelSpaceError is worded with
_MAX_WRAPPER_DEPTH = 32


def _fmt(values: Sequence[float]) -> str:
    """A tuple of floats as Python writes it: ``(0.5,)``, ``(-1.0, 1.0)``."""
    inner = ", ".join(repr(v) for v in values)
    return f"({inner},)" if len(values) == 1 else f"({inner})"


class PixelSpaceError(ValueError):
    """A malformed pixel-space argument, worded with the generic argument names.

    The message names ``value_range``, ``normalize`` or ``space``; the entry point that took the user's argument
    re-raises it with the user's names (:meth:`naming`), e.g. ``real_value_range`` for a callback's real side, so
    the layers below never need to know what the user called their argument.
    """

    def __init__(self, template: str, names: Mapping[str, str] | None = None) -> None:
        self.template = template
        self.names = {**{key: key for key in _ARGUMENTS}, **(names or {})}
        super().__init__(template.format_map(self.names))

    def naming(self, **names: str) -> PixelSpaceError:
        """The same error with arguments named as the user wrote them, e.g. ``value_range="real_value_range"``."""
        return PixelSpaceError(self.template, {**self.names, **names})

    def __reduce__(self) -> tuple[Any, ...]:  # pickled across processes with its template, not its message
        return PixelSpaceError, (self.template, self.names)


def _shown(value: Any) -> str:
    """``repr(value)`` for a :class:`PixelSpaceError` template (braces escaped)."""
    return repr(value).replace("{", "{{").replace("}", "}}")


def _channel_values(value: Any, what: str) -> tuple[float, ...]:
    """A scalar or a sequence/tensor of 1 or 3 finite numbers, as a tuple of floats."""
    message = (
        f"`{{normalize}}` {what} must be a number or a sequence of 1 or 3 numbers (one per channel), got"
        f" {_shown(value)}."
    )
    if isinstance(value, Tensor):
        value = value.detach().cpu().flatten().tolist()
    if isinstance(value, (str, bytes, bool)):
        raise PixelSpaceError(message)
    items = [value] if isinstance(value, (int, float)) else value
    try:
        items = list(items)
        if any(isinstance(v, (bool, str, bytes)) for v in items):
            raise TypeError
        values = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise PixelSpaceError(message) from None
    if len(values) not in (1, 3):
        raise PixelSpaceError(
            f"`{{normalize}}` {what} must have 1 or 3 channels (grayscale or RGB), got {len(values)}: {_shown(value)}."
        )
    if not all(math.isfinite(v) for v in values):
        raise PixelSpaceError(f"`{{normalize}}` {what} must be finite, got {_shown(value)}.")
    return values


@dataclass(frozen=True)
class PixelSpace:
    """The pixel space images are declared in: a value range or a torchvision-style normalisation.

    Exactly one of ``value_range`` or (``mean``, ``std``) is set. A normalisation describes images
    ``(pixels_in_[0, 1] - mean) / std`` per channel, as ``torchvision.transforms.Normalize`` after ``ToTensor``
    produces them. Build one with :meth:`from_value_range`, :meth:`from_normalize` or :meth:`parse`; instances are
    immutable, hashable, picklable and round-trip through :meth:`to_json` / :meth:`from_json`.

    Attributes:
        value_range: ``(low, high)`` floats, or None for a normalisation.
        mean: Per-channel means (1 or 3 floats), or None for a value range.
        std: Per-channel standard deviations (1 or 3 positive floats), or None for a value range.
    """

    value_range: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        has_range = self.value_range is not None
        has_norm = self.mean is not None or self.std is not None
        if has_range == has_norm:
            raise ValueError(
                "PixelSpace needs exactly one of value_range=(low, high) or mean= and std=, got "
                f"value_range={self.value_range!r}, mean={self.mean!r}, std={self.std!r}."
            )
        if has_range:
            object.__setattr__(self, "value_range", _check_value_range(self.value_range))
        else:
            mean, std = _check_normalize((self.mean, self.std))
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)

    @classmethod
    def from_value_range(cls, low: float, high: float) -> PixelSpace:
        """Images with values in ``[low, high]``, e.g. ``(-1, 1)`` for a ``tanh`` generator.

        Raises:
            ValueError: If ``low`` and ``high`` are not finite numbers with ``low < high``.
        """
        return cls(value_range=_check_value_range((low, high)))

    @classmethod
    def from_normalize(cls, mean: float | Sequence[float], std: float | Sequence[float]) -> PixelSpace:
        """Images ``(pixels_in_[0, 1] - mean) / std``, as after ``ToTensor()`` and ``Normalize(mean, std)``.

        Args:
            mean: A number or a sequence of 1 or 3 numbers (one per channel).
            std: A positive number or a sequence of 1 or 3 positive numbers.

        Raises:
            ValueError: If ``mean`` or ``std`` is not of that form.
        """
        mean_t, std_t = _check_normalize((mean, std))
        return cls(mean=mean_t, std=std_t)

    @classmethod
    def parse(cls, value_range: Any = None, normalize: Any = None, *, argument_prefix: str = "") -> PixelSpace | None:
        """Validate user arguments ``value_range=`` / ``normalize=``; None when neither is given.

        :func:`coerce_pixel_space` with the errors naming the arguments ``<argument_prefix>value_range`` and
        ``<argument_prefix>normalize``.

        Args:
            value_range: ``(low, high)``, or None.
            normalize: ``(mean, std)`` or ``{"mean": ..., "std": ...}``, each a number or 1 or 3 numbers, or None.
            argument_prefix: Prefix of the argument names in error messages, e.g. ``"real_"`` for
                ``real_value_range`` / ``real_normalize``.

        Returns:
            The space, or None if both arguments are None (the caller infers it).

        Raises:
            ValueError: If both are given, or the given one is malformed; the message names the argument.
        """
        try:
            return coerce_pixel_space(value_range=value_range, normalize=normalize)
        except PixelSpaceError as err:
            raise err.naming(
                value_range=f"{argument_prefix}value_range", normalize=f"{argument_prefix}normalize"
            ) from None

    @property
    def kind(self) -> Literal["value_range", "normalize"]:
        """``"value_range"`` or ``"normalize"``: the argument this space is declared with."""
        return "value_range" if self.value_range is not None else "normalize"

    @property
    def num_channels(self) -> int:
        """1 if the space is the same for every channel, else 3."""
        if self.value_range is not None:
            return 1
        mean, std = self._normalize()
        return max(len(mean), len(std))

    def bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel ``(lows, highs)`` of the space in its own units (:attr:`num_channels` values each).

        For a normalisation these are the images of pixels 0 and 1: ``-mean / std`` and ``(1 - mean) / std``.
        """
        if self.value_range is not None:
            return (self.value_range[0],), (self.value_range[1],)
        mean, std = self._per_channel()
        return tuple(-m / s for m, s in zip(mean, std, strict=True)), tuple(
            (1.0 - m) / s for m, s in zip(mean, std, strict=True)
        )

    def _normalize(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` as given; only for a normalisation."""
        if self.mean is None or self.std is None:
            raise AssertionError("not a normalisation")
        return self.mean, self.std

    def _per_channel(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` with a single value repeated to :attr:`num_channels`."""
        mean, std = self._normalize()
        n = self.num_channels
        return (mean * n if len(mean) == 1 else mean), (std * n if len(std) == 1 else std)

    def describe(self, argument_prefix: str = "") -> str:
        """The argument declaring this space, as a user would write it.

        E.g. ``"value_range=(0.0, 1.0)"`` or ``"normalize=((0.1307,), (0.3081,))"`` (``(mean, std)``, the form
        :meth:`parse` accepts); ``argument_prefix="real_"`` gives ``"real_value_range=(0.0, 1.0)"``.
        """
        if self.value_range is not None:
            return f"{argument_prefix}value_range={_fmt(self.value_range)}"
        mean, std = self._normalize()
        return f"{argument_prefix}normalize=({_fmt(mean)}, {_fmt(std)})"

    def __str__(self) -> str:
        return self.describe()

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for cache keys and provenance): ``{"value_range": [lo, hi]}`` or
        ``{"normalize": {"mean": [...], "std": [...]}}``."""
        if self.value_range is not None:
            return {"value_range": list(self.value_range)}
        mean, std = self._normalize()
        return {"normalize": {"mean": list(mean), "std": list(std)}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> PixelSpace:
        """Inverse of :meth:`to_json`; also accepts the dict serialised as a JSON string.

        Raises:
            ValueError: If ``data`` is not such a dict.
        """
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, Mapping) or len(data) != 1 or next(iter(data)) not in _KINDS:
            raise ValueError(
                f"PixelSpace JSON must be {{'value_range': [lo, hi]}} or "
                f"{{'normalize': {{'mean': [...], 'std': [...]}}}}, got {data!r}."
            )
        if "value_range" in data:
            return cls(value_range=_check_value_range(data["value_range"]))
        mean, std = _check_normalize(data["normalize"])
        return cls(mean=mean, std=std)


def coerce_pixel_space(
    space: Any = None, *, value_range: Any = None, normalize: Any = None, required: bool = False
) -> PixelSpace | None:
    """The one way user arguments become a :class:`PixelSpace`.

    Args:
        space: A :class:`PixelSpace`, or ``(low, high)``.
        value_range: ``(low, high)``.
        normalize: ``(mean, std)`` or ``{"mean": ..., "std": ...}``, each a number or 1 or 3 numbers.
        required: Refuse to return None.

    Returns:
        The space, or None when all three are None (the caller infers it) and ``required`` is False.

    Raises:
        PixelSpaceError: More than one argument is given, or the given one is malformed. The message names the
            argument ``space``, ``value_range`` or ``normalize``; an entry point whose user calls it otherwise
            re-raises ``err.naming(value_range="real_value_range", ...)``.
    """
    arguments = zip(_ARGUMENTS, (space, value_range, normalize), strict=True)
    given = {key: value for key, value in arguments if value is not None}
    if len(given) > 1:
        named = [f"`{{{key}}}`" for key in given]
        shown = " and ".join(f"{{{key}}}={_shown(value)}" for key, value in given.items())
        raise PixelSpaceError(f"Pass either {' or '.join(named)}, not both; got {shown}.")
    if not given:
        if required:
            raise PixelSpaceError(_value_range_message(None, "space"))
        return None
    if isinstance(space, PixelSpace):
        return space
    if space is not None or value_range is not None:
        return PixelSpace(value_range=_check_value_range(value_range if space is None else space, next(iter(given))))
    mean, std = _check_normalize(normalize)
    return PixelSpace(mean=mean, std=std)


def _value_range_message(value: Any, key: str) -> str:
    also = " (or a PixelSpace)" if key == "space" else ""
    return f"`{{{key}}}` must be a pair of finite numbers (low, high) with low < high{also}, got {_shown(value)}."


def _check_value_range(value: Any, key: str = "value_range") -> tuple[float, float]:
    """``(low, high)`` as floats; errors name the argument ``key`` (``value_range`` or ``space``)."""
    message = _value_range_message(value, key)
    if isinstance(value, (str, bytes)) or value is None:
        raise PixelSpaceError(message)
    try:
        items = list(value)
        if any(isinstance(v, (bool, str, bytes)) for v in items):
            raise TypeError
        lo, hi = (float(v) for v in items)
    except (TypeError, ValueError):
        raise PixelSpaceError(message) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise PixelSpaceError(message)
    return lo, hi


def _check_normalize(value: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if isinstance(value, Mapping):
        if set(value) != {"mean", "std"}:
            raise PixelSpaceError(
                f"`{{normalize}}` as a mapping must have exactly the keys 'mean' and 'std', got {_shown(value)}."
            )
        mean, std = value["mean"], value["std"]
    else:
        try:
            if isinstance(value, (str, bytes, Tensor)):
                raise TypeError
            mean, std = value
        except (TypeError, ValueError):
            raise PixelSpaceError(
                "`{normalize}` must be a pair (mean, std), each a number or 1 or 3 numbers (one per channel), "
                f"e.g. ((0.1307,), (0.3081,)); got {_shown(value)}."
            ) from None
    mean_t = _channel_values(mean, "mean")
    std_t = _channel_values(std, "std")
    if not all(s > 0 for s in std_t):
        raise PixelSpaceError(f"`{{normalize}}` std must be positive, got {_shown(std)}.")
    return mean_t, std_t


def _argument_prefix(argument: str) -> str | None:
    """``"real_"`` for ``"real_value_range"`` or ``"real_normalize"``; None for another argument name."""
    for kind in _KINDS:
        if argument.endswith(kind):
            return argument[: -len(kind)]
    return None
