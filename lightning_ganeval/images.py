"""Validate an image batch and convert it to the uint8 RGB input of the FID Inception.

Real and generated images go through the same function, so both sides of FID see the same quantization:

* a float batch in a declared ``value_range`` ``(lo, hi)`` is mapped linearly onto [0, 255], rounded to the
  nearest integer with ties to even (``torch.round``; e.g. 0.0 in (-1, 1) maps to 127.5 and becomes 128) and
  clamped to [0, 255] (the StyleGAN convention, which also clamps);
* uint8 passes unchanged (``value_range`` is ignored, uint8 is always [0, 255]);
* one channel is tiled to three.

Two silent failure modes of ad-hoc pipelines are made loud or visible instead:

* non-finite samples (NaN/Inf from a diverged generator) are found *before* quantization, reported per sample in
  :attr:`ConvertedImages.finite` and zeroed, so they cannot poison the statistics; the caller decides what to do
  (the callbacks exclude and count them);
* finite values outside the declared range by more than :data:`RANGE_TOLERANCE` of its width raise, because that is
  almost always a wrong ``value_range`` ([0, 1] vs [-1, 1] vs [0, 255]), and clamping would hide it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RANGE_TOLERANCE", "ConvertedImages", "to_uint8_rgb"]

RANGE_TOLERANCE = 0.01
"""Finite values may exceed the declared range by this fraction of its width (``hi - lo``) before
:func:`to_uint8_rgb` raises; e.g. 0.02 for (-1, 1). Small overshoots (bilinear upsampling, a generator without a
final ``tanh``) are clamped; larger ones indicate a wrong ``value_range``."""

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class ConvertedImages:
    """Result of :func:`to_uint8_rgb`.

    Attributes:
        images: uint8 tensor of shape N x 3 x H x W on the input's device.
        finite: bool tensor of shape (N,); False for samples that held NaN or Inf (their pixels are zeroed).
    """

    images: Tensor
    finite: Tensor

    @property
    def num_nonfinite(self) -> int:
        """Number of samples that held NaN or Inf."""
        return int((~self.finite).sum().item())


def _layout_error(images: Tensor, why: str) -> ValueError:
    return ValueError(
        f"images must be a batch laid out N x C x H x W with C in {{1, 3}}; got shape {tuple(images.shape)} ({why})."
    )


def _check_layout(images: Tensor) -> None:
    if images.dim() != 4:
        why = {
            2: "a single grayscale image H x W? add batch and channel dims",
            3: "a single image C x H x W? add a batch dim with images.unsqueeze(0)",
            5: "a video or a stack of batches? flatten it to N x C x H x W",
        }.get(images.dim(), f"{images.dim()}-D")
        raise _layout_error(images, why)
    channels, last = images.shape[1], images.shape[-1]
    if channels in (1, 3):
        return
    if last in (1, 3):
        raise _layout_error(images, "looks channels-last N x H x W x C; use images.permute(0, 3, 1, 2)")
    if channels == 4:
        raise _layout_error(images, "4 channels: RGBA? drop or composite the alpha channel first")
    raise _layout_error(images, f"{channels} channels")


def _check_value_range(value_range: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be a pair of numbers (lo, hi), got {value_range!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be two finite numbers with lo < hi, got {value_range!r}.")
    return lo, hi


def _range_hint(found_lo: float, found_hi: float) -> str:
    """Guess which common convention the data follows, from its observed extent."""
    if found_lo >= -0.05 and found_hi > 2.0:
        return "the data look like [0, 255]: pass value_range=(0, 255) or convert to uint8"
    if found_lo < -0.05 and found_lo >= -1.05 and found_hi <= 1.05:
        return "the data look like [-1, 1] (tanh output): pass value_range=(-1, 1)"
    if found_lo >= -0.05 and found_hi <= 1.05:
        return "the data look like [0, 1]: pass value_range=(0, 1)"
    return "check the generator's output activation and the value_range argument"


def to_uint8_rgb(images: Tensor, value_range: Sequence[float] = (-1.0, 1.0)) -> ConvertedImages:
    """Convert a batch to uint8 RGB, N x 3 x H x W, flagging non-finite samples.

    Float inputs (float16, bfloat16, float32, float64; computed in float32 or float64) are mapped from
    ``value_range`` onto [0, 255] as ``(x - lo) * 255 / (hi - lo)``, rounded half to even (``torch.round``) and
    clamped to [0, 255]. uint8 inputs are used as they are and ``value_range`` is ignored. Single-channel images
    are tiled to three channels.

    Args:
        images: Batch laid out N x C x H x W with C in {1, 3}, uint8 or floating point, on any device.
        value_range: ``(lo, hi)`` of float inputs, e.g. ``(-1, 1)`` for a ``tanh`` generator, ``(0, 1)`` for
            torchvision's ``ToTensor``.

    Returns:
        :class:`ConvertedImages` with the uint8 batch and the per-sample ``finite`` mask. Non-finite samples are
        zeroed; the caller reports ``num_nonfinite``.

    Raises:
        TypeError: If ``images`` is not a tensor or has an unsupported dtype.
        ValueError: If the layout is not N x C x H x W with C in {1, 3}, if ``value_range`` is invalid, or if
            finite values leave ``value_range`` by more than :data:`RANGE_TOLERANCE` of its width.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}.")
    lo, hi = _check_value_range(value_range)
    _check_layout(images)

    if images.dtype == torch.uint8:
        finite = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
        out = images
    elif images.dtype in _FLOAT_DTYPES:
        # float64 stays float64 (no precision lost); half types are widened before any arithmetic.
        x = images if images.dtype == torch.float64 else images.float()
        finite = torch.isfinite(x).flatten(1).all(dim=1)
        all_finite = bool(finite.all())
        if not all_finite:
            # Filling with lo quantizes to exactly 0, and no NaN ever reaches the uint8 cast.
            x = torch.where(finite.view(-1, 1, 1, 1), x, torch.full((), lo, dtype=x.dtype, device=x.device))
        if x.numel() > 0 and bool(finite.any()):
            # Zeroed samples must not count towards the range check: use only the finite samples' extent.
            valid = x if all_finite else x[finite]
            found_lo, found_hi = (float(v) for v in torch.aminmax(valid))
            tol = RANGE_TOLERANCE * (hi - lo)
            if found_lo < lo - tol or found_hi > hi + tol:
                raise ValueError(
                    f"images have values in [{found_lo:.4g}, {found_hi:.4g}], outside the declared "
                    f"value_range=({lo:g}, {hi:g}) by more than {RANGE_TOLERANCE:.0%} of its width; "
                    f"{_range_hint(found_lo, found_hi)}."
                )
        scaled = (x - lo) * (255.0 / (hi - lo))
        out = torch.round(scaled).clamp_(0, 255).to(torch.uint8)
    else:
        raise TypeError(
            f"images must be uint8 or floating point (float16, bfloat16, float32, float64), got {images.dtype}."
        )

    if out.shape[1] == 1:
        out = out.expand(-1, 3, -1, -1)
    out = out.contiguous()
    return ConvertedImages(images=out, finite=finite)
