"""The conversion of image batches in a pixel space to the uint8 RGB input of the feature networks, and the
inference of an undeclared pixel space (spaces themselves: :mod:`lightning_ganeval.pixel_space`).

A GAN's real and generated images live in one pixel space, declared by a :class:`PixelSpace`: either a value range
``(low, high)`` (``(-1, 1)`` for a ``tanh`` generator, ``(0, 1)`` for torchvision's ``ToTensor``, ``(0, 255)``) or
a normalisation ``(mean, std)`` as torchvision's ``Normalize`` applies it to ``[0, 1]`` pixels. When the user
declares nothing, :func:`infer_pixel_space` reads it off the dataset's transforms or the real batches.

Real and generated images go through the same :func:`to_uint8_rgb`, so both sides of FID see the same
quantization:

* a float batch is mapped per channel onto [0, 1] (``(x - low) / (high - low)``, or ``x * std + mean``), scaled by
  255, rounded to the nearest integer with ties to even (``torch.round``; e.g. 0.0 in (-1, 1) maps to 127.5 and
  becomes 128) and clamped to [0, 255] (the StyleGAN convention, which also clamps);
* uint8 passes unchanged (the space is ignored, uint8 is always [0, 255]);
* one channel is tiled to three.

Silent failure modes of ad-hoc pipelines are made loud or visible instead:

* non-finite samples (NaN/Inf from a diverged generator) are found *before* quantization, reported per sample in
  :attr:`ConvertedImages.finite` and zeroed, so they cannot poison the statistics; the caller decides what to do
  (the callbacks exclude and count them);
* out-of-range values depend on the side. Generated images are clamped and counted
  (:attr:`ConvertedImages.num_clamped`): a young generator overshoots, and StyleGAN clamps too. Only a gross scale
  mismatch, values beyond the space by more than its width (``[0, 255]`` images declared as ``(-1, 1)``), raises.
  Real images are data, not model output: leaving the declared space by more than :data:`RANGE_TOLERANCE` of its
  width is a mis-declaration and raises. Every error names the side, the values found, the space declared, the space
  the values look like and the argument that fixes it.

Host synchronisation: the range check needs the batch's extent on the host, which on CUDA waits for the device.
:func:`to_uint8_rgb` computes the extent on the device as part of the conversion and, by default, checks it with a
single device-to-host copy per float batch (the previous implementation made four). With ``check_range=False`` it
makes none: the caller merges the batches' :attr:`ConvertedImages.range_check` on the device
(:meth:`RangeCheck.merge`) and calls :meth:`RangeCheck.check` once at the end of a pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_ganeval.pixel_space import (
    _DEFAULT_ARGUMENT,
    _FLOAT_DTYPES,
    _MAX_WRAPPER_DEPTH,
    _SIDES,
    GENERATED_RANGE_TOLERANCE,
    RANGE_TOLERANCE,
    PixelSpace,
    PixelSpaceError,
    _argument_prefix,
    _fmt,
    coerce_pixel_space,
)

__all__ = ["ConvertedImages", "RangeCheck", "infer_pixel_space", "to_uint8_rgb"]


def _likely_space(found_lo: float, found_hi: float) -> tuple[PixelSpace | None, str]:
    """Guess which common convention data follow from their observed extent: (space or None, words)."""
    if found_lo >= -0.05 and 2.0 < found_hi <= 260.0:
        return PixelSpace.from_value_range(0.0, 255.0), "[0, 255] (8-bit pixel values)"
    if -1.05 <= found_lo < -0.05 and found_hi <= 1.05:
        return PixelSpace.from_value_range(-1.0, 1.0), "[-1, 1] (tanh output, or Normalize(0.5, 0.5))"
    if found_lo >= -0.05 and found_hi <= 1.05:
        return PixelSpace.from_value_range(0.0, 1.0), "[0, 1] (torchvision ToTensor)"
    if -10.0 < found_lo < -0.05 and 1.05 < found_hi < 10.0:
        return None, "normalised with a mean and std (torchvision Normalize)"
    return None, "no common convention"


def _range_error(
    side: str,
    argument: str,
    space: PixelSpace,
    found_lo: float,
    found_hi: float,
    allowed: str,
    inferred_from: str | None = None,
) -> ValueError:
    prefix = _argument_prefix(argument)
    declared = space.describe(prefix) if prefix is not None else f"{argument}={space.describe()}"
    both = ""
    if inferred_from is not None:
        # Nobody declared this space: advise the argument that sets it for both sides, so the generated images are
        # read in the corrected space too (a `real_` argument alone would leave them in the inferred one).
        prefix, argument = "", "value_range"
        declared = f"pixel space {space.describe()}, inferred (not declared) from {inferred_from},"
        both = " (it declares the space of both the real and the generated images)"
    likely, words = _likely_space(found_lo, found_hi)
    if likely is not None:
        fix = likely.describe(prefix) if prefix is not None else f"{argument}={likely.describe()}"
        advice = f"they look like {words}: pass {fix}{both}"
        if side == "generated":
            advice += " (or fix the generator's output activation)"
    elif "Normalize" in words:
        norm = f"{prefix}normalize" if prefix is not None else argument
        advice = f"they look {words}: pass {norm}=(mean, std) with the Normalize of your data pipeline{both}"
    else:
        source = "the generator's output activation" if side == "generated" else "the data pipeline"
        advice = f"check {source} and the `{argument}` argument{both}"
    lows, highs = space.bounds()
    return ValueError(
        f"{side.capitalize()} images have values in [{found_lo:.4g}, {found_hi:.4g}], outside the declared "
        f"{declared} (values in [{min(lows):.4g}, {max(highs):.4g}]) by more than {allowed}; {advice}."
    )


@dataclass(frozen=True)
class RangeCheck:
    """The extent of finite values converted by :func:`to_uint8_rgb`, held on the device until :meth:`check`.

    Attributes:
        minimum: float64 tensor of :attr:`PixelSpace.num_channels` per-channel minima of the finite values
            (``+inf`` where none were seen, e.g. for uint8 input), on the images' device.
        maximum: Likewise the maxima (``-inf`` where none were seen).
        space: The declared space.
        side: ``"generated"`` or ``"real"``.
        argument: The argument that declared the space, named in the error.
    """

    minimum: Tensor
    maximum: Tensor
    space: PixelSpace
    side: str
    argument: str

    def merge(self, other: RangeCheck) -> RangeCheck:
        """The extent of both, computed on the device (no host synchronisation).

        Raises:
            ValueError: If the two checks are for different spaces, sides or arguments.
        """
        if (self.space, self.side, self.argument) != (other.space, other.side, other.argument):
            raise ValueError(
                f"cannot merge range checks of {self.side} images in {self.space.describe()} and "
                f"{other.side} images in {other.space.describe()}."
            )
        other_min = other.minimum.to(self.minimum.device)
        other_max = other.maximum.to(self.maximum.device)
        return RangeCheck(
            torch.minimum(self.minimum, other_min),
            torch.maximum(self.maximum, other_max),
            self.space,
            self.side,
            self.argument,
        )

    def check(self, inferred_from: str | None = None) -> None:
        """Raise if the values left the space by more than the side allows; one device-to-host copy.

        Args:
            inferred_from: The space was inferred, not declared, from this (a reason of :func:`infer_pixel_space`):
                the error says so and advises ``value_range=`` / ``normalize=``, which set both sides.

        Raises:
            ValueError: Real values beyond :data:`RANGE_TOLERANCE` of the width, or generated values beyond
                :data:`GENERATED_RANGE_TOLERANCE` of it. The message names the side, the values found, the declared
                space, the space they look like and the argument that fixes it.
        """
        extent = torch.cat([self.minimum, self.maximum]).tolist()  # the one synchronisation
        n = len(extent) // 2
        mins, maxs = extent[:n], extent[n:]
        lows, highs = self.space.bounds()
        fraction = GENERATED_RANGE_TOLERANCE if self.side == "generated" else RANGE_TOLERANCE
        for lo_found, hi_found, low, high in zip(mins, maxs, lows, highs, strict=True):
            tol = fraction * (high - low)
            if lo_found < low - tol or hi_found > high + tol:
                break
        else:
            return
        allowed = (
            "its width (smaller overshoots of generated images are clamped and counted)"
            if self.side == "generated"
            else f"{RANGE_TOLERANCE:.0%} of its width (real images must lie in the declared space)"
        )
        raise _range_error(self.side, self.argument, self.space, min(mins), max(maxs), allowed, inferred_from)


@dataclass(frozen=True)
class ConvertedImages:
    """Result of :func:`to_uint8_rgb`.

    Attributes:
        images: uint8 tensor of shape N x 3 x H x W on the input's device.
        finite: bool tensor of shape (N,); False for samples that held NaN or Inf (their pixels are zeroed).
        num_clamped: 0-d int64 tensor on the input's device (not a Python int: reading it synchronises): the
            number of values of finite samples whose rounded value fell outside [0, 255], i.e. that lay more than
            half a quantization step (``0.5 / 255`` of the width) outside the space and were clamped. Always 0 for
            uint8 input.
        num_values: Number of values in the input batch (N x C x H x W, before tiling to 3 channels, non-finite
            samples included), for the clamped fraction ``num_clamped / num_values``.
        range_check: The batch's extent, for a deferred :meth:`RangeCheck.check` (already checked unless
            :func:`to_uint8_rgb` was called with ``check_range=False``).
    """

    images: Tensor
    finite: Tensor
    num_clamped: Tensor
    num_values: int
    range_check: RangeCheck

    @property
    def num_nonfinite(self) -> int:
        """Number of samples that held NaN or Inf (synchronises with the device)."""
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


def _to_255(x: Tensor, space: PixelSpace) -> Tensor:
    """Map ``x`` (in ``space``) onto [0, 255], unrounded, in ``x``'s dtype, as a new tensor."""
    if space.value_range is not None:
        lo, hi = space.value_range
        return (x - lo).mul_(255.0 / (hi - lo))
    mean, std = space._per_channel()
    if len(mean) == 1:
        return (x * std[0] + mean[0]).mul_(255.0)
    # Channel by channel with Python scalars: a per-channel constant tensor would need a host-to-device copy.
    out = torch.empty_like(x)
    for c, (m, s) in enumerate(zip(mean, std, strict=True)):
        out[:, c] = (x[:, c] * s + m) * 255.0
    return out


def to_uint8_rgb(
    images: Tensor,
    space: PixelSpace | Sequence[float] = (-1.0, 1.0),
    *,
    side: Literal["generated", "real"] = "generated",
    argument: str | None = None,
    check_range: bool = True,
) -> ConvertedImages:
    """Convert a batch to uint8 RGB, N x 3 x H x W, flagging non-finite samples and counting clamped values.

    Float inputs (float16, bfloat16, float32, float64; computed in float32 or float64) are mapped from ``space``
    onto [0, 255]: ``(x - low) * 255 / (high - low)`` for a value range, ``(x * std + mean) * 255`` per channel for
    a normalisation; then rounded half to even (``torch.round``) and clamped to [0, 255]. uint8 inputs are used as
    they are and ``space`` is ignored. Single-channel images are tiled to three channels.

    Out-of-range values: generated images are clamped, counted in ``num_clamped`` and only refused beyond one width
    of the space; real images are refused beyond :data:`RANGE_TOLERANCE` of the width (see the module docstring).

    Args:
        images: Batch laid out N x C x H x W with C in {1, 3}, uint8 or floating point, on any device.
        space: A :class:`PixelSpace`, or ``(low, high)`` of float inputs, e.g. ``(-1, 1)`` for a ``tanh``
            generator, ``(0, 1)`` for torchvision's ``ToTensor``.
        side: ``"generated"`` (clamp, refuse only a gross scale mismatch) or ``"real"`` (strict).
        argument: The user argument that declared the space, named in errors; default ``"value_range"`` for
            generated and ``"real_value_range"`` for real images (e.g. pass ``"real_normalize"``).
        check_range: Check the range now (one device-to-host copy for a float batch). If False, the caller must
            call ``result.range_check.check()`` later, e.g. once after merging the batches of a pass with
            :meth:`RangeCheck.merge`; the conversion itself then never synchronises with the device.

    Returns:
        :class:`ConvertedImages` with the uint8 batch, the per-sample ``finite`` mask, the clamped count and the
        batch's range check. Non-finite samples are zeroed; the caller reports ``num_nonfinite``.

    Raises:
        TypeError: If ``images`` is not a tensor or has an unsupported dtype.
        ValueError: If the layout is not N x C x H x W with C in {1, 3}, if ``side``, ``space`` or ``argument`` is
            invalid, if a per-channel space does not match the images' channels, or if finite values leave the
            space by more than ``side`` allows.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}.")
    if side not in _SIDES:
        raise ValueError(f"`side` must be 'generated' or 'real', got {side!r}.")
    if argument is None:
        argument = _DEFAULT_ARGUMENT[side]
    elif not isinstance(argument, str) or not argument:
        raise ValueError(f"`argument` must be a non-empty string naming the user's argument, got {argument!r}.")
    try:
        space = coerce_pixel_space(space, required=True)
    except PixelSpaceError as err:
        # A pair here came from the user's `value_range`-like argument (`argument` names the declaring one).
        prefix = _argument_prefix(argument)
        raise err.naming(space=f"{prefix}value_range" if prefix is not None else argument) from None
    assert space is not None
    _check_layout(images)

    device = images.device
    k = space.num_channels
    none_seen = torch.full((k,), math.inf, dtype=torch.float64, device=device)
    if images.dtype == torch.uint8:
        n = images.shape[0]
        return ConvertedImages(
            images=(images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images).contiguous(),
            finite=torch.ones(n, dtype=torch.bool, device=device),
            num_clamped=torch.zeros((), dtype=torch.int64, device=device),
            num_values=images.numel(),
            range_check=RangeCheck(none_seen, -none_seen, space, side, argument),
        )
    if images.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"images must be uint8 or floating point (float16, bfloat16, float32, float64), got {images.dtype}."
        )
    if k == 3 and images.shape[1] != 3:
        prefix = _argument_prefix(argument)
        raise ValueError(
            f"{space.describe(prefix if prefix is not None else '')} is per channel for 3 channels, but the "
            f"{side} images have {images.shape[1]}; pass one mean and std for grayscale images."
        )

    # float64 stays float64 (no precision lost); half types are widened before any arithmetic.
    x = images if images.dtype == torch.float64 else images.float()
    n, c = x.shape[:2]
    if x.numel() > 0:
        # Each sample's per-channel extent; amin/amax propagate NaN (and Inf is an extreme), so they also find the
        # non-finite samples without an isfinite pass. (Over dims (2, 3) they are much faster than aminmax(dim=).)
        mins, maxs = x.amin(dim=(2, 3)), x.amax(dim=(2, 3))
        finite = torch.isfinite(mins).all(dim=1) & torch.isfinite(maxs).all(dim=1)
        keep = finite.view(-1, 1)
        minimum = torch.where(keep, mins, math.inf).amin(dim=0).double()
        maximum = torch.where(keep, maxs, -math.inf).amax(dim=0).double()
        if k == 1 and c == 3:
            minimum, maximum = minimum.amin().view(1), maximum.amax().view(1)
    else:
        finite = torch.ones(n, dtype=torch.bool, device=device)
        minimum, maximum = none_seen, -none_seen
    range_check = RangeCheck(minimum, maximum, space, side, argument)
    if check_range:
        range_check.check()

    # Zeroing after scaling: non-finite samples quantize to exactly 0 and no NaN reaches the uint8 cast. Applied
    # unconditionally, because asking whether any sample is non-finite would synchronise. `_to_255` returns a new
    # tensor (never `images`), so the in-place steps are safe.
    scaled = _to_255(x, space).masked_fill_(~finite.view(-1, 1, 1, 1), 0.0).round_()
    clamped = scaled.clamp(0, 255)
    num_clamped = torch.count_nonzero(scaled.sub_(clamped))  # int64, on the device
    out = clamped.to(torch.uint8)
    if out.shape[1] == 1:
        out = out.expand(-1, 3, -1, -1)
    return ConvertedImages(
        images=out.contiguous(),
        finite=finite,
        num_clamped=num_clamped,
        num_values=images.numel(),
        range_check=range_check,
    )


def _torchvision_normalize_types() -> tuple[type, ...]:
    try:
        from torchvision import transforms as v1
    except ImportError:  # pragma: no cover - torchvision is a dependency, but the walk is optional
        return ()
    types: list[type] = [v1.Normalize]
    try:
        from torchvision.transforms import v2

        types.append(v2.Normalize)
    except ImportError:  # pragma: no cover - torchvision < 0.15
        pass
    return tuple(types)


def _normalizes_in(transform: Any, depth: int = 0) -> list[PixelSpace]:
    """The torchvision Normalize transforms in a (possibly composed) transform, in the order they are applied."""
    if transform is None or depth > _MAX_WRAPPER_DEPTH:
        return []
    normalize_types = _torchvision_normalize_types()
    if normalize_types and isinstance(transform, normalize_types):
        try:
            return [PixelSpace.from_normalize(transform.mean, transform.std)]
        except ValueError as err:
            raise ValueError(
                f"cannot use {transform!r} as the pixel space ({err}); pass `value_range=` or `normalize=` explicitly."
            ) from None
    found: list[PixelSpace] = []
    # v1 and v2 Compose keep their steps in `transforms`, applied in order.
    inner = getattr(transform, "transforms", None)
    if isinstance(inner, (list, tuple, torch.nn.ModuleList)):
        for part in inner:
            found.extend(_normalizes_in(part, depth + 1))
    elif isinstance(transform, torch.nn.Sequential):
        for part in transform:
            found.extend(_normalizes_in(part, depth + 1))
    else:
        # StandardTransform (a VisionDataset's `transforms` built from `transform`) holds the image transform.
        image_transform = getattr(transform, "transform", None)
        if image_transform is not None and image_transform is not transform:
            found.extend(_normalizes_in(image_transform, depth + 1))
    return found


def _dataset_normalize(dataset: Any, depth: int = 0) -> tuple[PixelSpace, str] | None:
    """The last Normalize a dataset applies to its images, through its wrappers, with where it was found."""
    if depth > _MAX_WRAPPER_DEPTH:
        return None
    name = type(dataset).__name__
    parts = getattr(dataset, "datasets", None)
    if isinstance(parts, (list, tuple)) and parts:  # ConcatDataset: every part must agree
        results = [_dataset_normalize(part, depth + 1) for part in parts]
        if len({None if r is None else r[0] for r in results}) > 1:
            described = "; ".join(
                f"part {i} ({type(part).__name__}): {'no Normalize' if r is None else r[0].describe()}"
                for i, (part, r) in enumerate(zip(parts, results, strict=True))
            )
            raise ValueError(
                f"the parts of {name} normalise their images differently ({described}); one pixel space is needed: "
                "make them agree or pass `value_range=` or `normalize=` explicitly."
            )
        first = results[0]
        return None if first is None else (first[0], f"all {len(parts)} parts of {name}")
    found: tuple[PixelSpace, str] | None = None
    inner = getattr(dataset, "dataset", None)
    if inner is not None and inner is not dataset:  # Subset, random_split, DataLoader, custom wrappers
        found = _dataset_normalize(inner, depth + 1)
        if found is not None:
            found = (found[0], f"{found[1]} via {name}")
    # A wrapper's own transform runs after the wrapped dataset's: its Normalize, if any, is the last one applied.
    transform = getattr(dataset, "transform", None)
    own = _normalizes_in(transform if transform is not None else getattr(dataset, "transforms", None))
    if own:
        found = (own[-1], name)
    return found


def _observed_space(batches: Iterable[Any], argument_prefix: str, batches_name: str | None) -> tuple[PixelSpace, str]:
    lo, hi = math.inf, -math.inf
    count = 0
    all_uint8 = True
    for i, batch in enumerate(batches):
        if not isinstance(batch, Tensor) or not (batch.dtype == torch.uint8 or batch.dtype in _FLOAT_DTYPES):
            what = batch.dtype if isinstance(batch, Tensor) else type(batch).__name__
            raise TypeError(f"`batches` must yield uint8 or floating point image tensors, got {what} at position {i}.")
        count += 1
        all_uint8 = all_uint8 and batch.dtype == torch.uint8
        values = batch.double()
        values = values[torch.isfinite(values)]
        if values.numel():
            batch_lo, batch_hi = torch.aminmax(values)
            lo, hi = min(lo, float(batch_lo)), max(hi, float(batch_hi))
    ask = f"pass `{argument_prefix}value_range=(low, high)` or `{argument_prefix}normalize=(mean, std)`"
    if lo > hi:
        raise ValueError(f"cannot infer the pixel space: no Normalize in a dataset transform, no real values; {ask}.")
    seen = batches_name or ("the first real batch" if count == 1 else f"the first {count} real batches")
    if all_uint8:
        return PixelSpace.from_value_range(0.0, 255.0), f"uint8 dtype of {seen}"
    reason = f"observed range [{lo:.3f}, {hi:.3f}] of {seen}"
    # Up to the tolerance to_uint8_rgb grants real images, so what is inferred here also passes its check.
    tol = RANGE_TOLERANCE
    if lo >= -tol and hi <= 1.0 + tol:
        return PixelSpace.from_value_range(0.0, 1.0), reason
    if -1.0 - 2 * tol <= lo < -tol and hi <= 1.0 + 2 * tol:
        return PixelSpace.from_value_range(-1.0, 1.0), reason
    # Not negative at all: data normalised by a mean and std (e.g. MNIST's [-0.42, 2.82]) must not pass for [0, 255].
    if lo >= 0.0 and hi <= 255.0 * (1 + tol):
        return PixelSpace.from_value_range(0.0, 255.0), reason
    raise ValueError(f"cannot infer the pixel space from the {reason}: it is none of [0, 1], [-1, 1], [0, 255]; {ask}.")


def infer_pixel_space(
    dataset: Any = None,
    batches: Iterable[Tensor] = (),
    *,
    dataset_name: str = "dataset",
    argument_prefix: str = "",
    batches_name: str | None = None,
) -> tuple[PixelSpace, str]:
    """Infer the pixel space of real images from the dataset's transforms, else from a few real batches.

    First the transform pipeline is read: a torchvision ``VisionDataset``'s ``transform`` (or joint
    ``transforms``), any dataset's ``transform`` attribute, ``Compose`` (v1 and ``transforms.v2``) and
    ``nn.Sequential``, through wrappers with a ``dataset`` attribute (``Subset``, ``random_split``, a
    ``DataLoader``) and ``ConcatDataset`` (whose parts must agree). The last ``Normalize`` (v1 or v2) applied gives a
    normalisation space. Without one (e.g. ``ToTensor()`` alone), the observed values of ``batches`` decide:
    uint8 is [0, 255]; floats within [0, 1] are [0, 1], within [-1, 1] are [-1, 1], within [0, 255] are [0, 255]
    (each up to :data:`RANGE_TOLERANCE` of the width, the tolerance :func:`to_uint8_rgb` grants real images).

    A ``Normalize`` after a transform that does not produce [0, 1] pixels (``ToImage()`` without
    ``ToDtype(..., scale=True)``) cannot be told apart; the strict real-image check in :func:`to_uint8_rgb` catches
    the resulting mismatch.

    Args:
        dataset: A dataset or ``DataLoader``, or None to use only ``batches``.
        batches: Image tensors (N x C x H x W, uint8 or float) of real data; consumed only if the transforms do
            not tell. Non-finite values are ignored.
        dataset_name: How the reason refers to ``dataset``, e.g. ``"train dataset"``.
        argument_prefix: Prefix of the argument names suggested in errors, e.g. ``"real_"``.
        batches_name: How the reason refers to ``batches`` (default ``"the first N real batches"``), e.g.
            ``"64 real images at seeded positions spread over all 50000"``.

    Returns:
        ``(space, reason)``, the reason a one-line explanation for logs, e.g.
        ``"torchvision Normalize(mean=(0.1307,), std=(0.3081,)) in the dataset's transform (FakeData via Subset)"``
        or
        ``"observed range [0.000, 1.000] of the first 2 real batches"``.

    Raises:
        ValueError: If the parts of a ``ConcatDataset`` disagree, a ``Normalize`` has other than 1 or 3 channels, or
            the observed values fit no common range (or none were given); the message asks for ``value_range=`` or
            ``normalize=``.
        TypeError: If ``batches`` yields something other than uint8 or float tensors.
    """
    if dataset is not None:
        found = _dataset_normalize(dataset)
        if found is not None:
            space, where = found
            mean, std = space._normalize()
            return space, (
                f"torchvision Normalize(mean={_fmt(mean)}, std={_fmt(std)}) in the {dataset_name}'s transform ({where})"
            )
    return _observed_space(batches, argument_prefix, batches_name)
