"""Tests for lightning_ganeval.images.to_uint8_rgb: closed-form quantization, masks, and every refusal."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ganeval.images import RANGE_TOLERANCE, ConvertedImages, to_uint8_rgb


def _constant_batch(values: list[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One 3 x 2 x 2 image per value, every pixel equal to it."""
    return torch.tensor(values, dtype=torch.float64).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).to(dtype)


@pytest.mark.parametrize(
    ("value_range", "inputs", "expected"),
    [
        # (x + 1) * 127.5: -1 -> 0, 1 -> 255, 0 -> 127.5 -> 128 (ties to even), 0.5 -> 191.25 -> 191.
        ((-1.0, 1.0), [-1.0, 1.0, 0.0, 0.5, -0.5], [0, 255, 128, 191, 64]),
        # x * 255: 0.5 -> 127.5 -> 128 (ties to even), 1/255 -> 1, 0.2 -> 51.
        ((0.0, 1.0), [0.0, 1.0, 0.5, 1 / 255, 0.2], [0, 255, 128, 1, 51]),
        # identity on integers; 2.5 -> 2 and 3.5 -> 4 (ties to even).
        ((0.0, 255.0), [0.0, 255.0, 17.0, 2.5, 3.5], [0, 255, 17, 2, 4]),
    ],
)
def test_closed_form_values(value_range: tuple[float, float], inputs: list[float], expected: list[int]) -> None:
    out = to_uint8_rgb(_constant_batch(inputs), value_range)
    assert out.images.dtype == torch.uint8
    assert out.images.shape == (len(inputs), 3, 2, 2)
    assert out.images[:, 0, 0, 0].tolist() == expected  # exact integers
    assert out.finite.all()
    assert out.num_nonfinite == 0


def test_small_overshoot_is_clamped() -> None:
    # 1% of the width of (-1, 1) is 0.02: -1.015 and 1.015 are tolerated and clamped.
    out = to_uint8_rgb(_constant_batch([-1.015, 1.015]), (-1.0, 1.0))
    assert out.images[:, 0, 0, 0].tolist() == [0, 255]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_match_float32(dtype: torch.dtype) -> None:
    # Values that every dtype represents exactly, so the results must be identical.
    values = [-1.0, -0.5, 0.0, 0.25, 0.5, 1.0]
    out = to_uint8_rgb(_constant_batch(values, dtype))
    ref = to_uint8_rgb(_constant_batch(values, torch.float32))
    assert torch.equal(out.images, ref.images)


def test_random_floats_match_formula() -> None:
    x = torch.rand(4, 3, 5, 7, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected = torch.round((x.double() + 1) * 127.5).clamp(0, 255).to(torch.uint8)
    # float32 vs float64 arithmetic could flip a value sitting within 1 ulp of a .5 tie; none do for this seed.
    assert torch.equal(to_uint8_rgb(x).images, expected)


def test_uint8_passes_unchanged_and_ignores_value_range() -> None:
    x = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for value_range in [(-1.0, 1.0), (0.0, 1.0)]:
        out = to_uint8_rgb(x, value_range)
        assert torch.equal(out.images, x)
        assert out.finite.tolist() == [True, True]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_grayscale_is_tiled(dtype: torch.dtype) -> None:
    gray = torch.arange(2 * 1 * 3 * 4).view(2, 1, 3, 4).to(dtype)
    out = to_uint8_rgb(gray, (0.0, 255.0))
    assert out.images.shape == (2, 3, 3, 4)
    for c in range(3):
        assert torch.equal(out.images[:, c], gray[:, 0].to(torch.uint8))
    assert out.images.is_contiguous()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_samples_are_masked_and_zeroed(bad: float) -> None:
    x = torch.zeros(4, 3, 3, 3)
    x[0] = 0.5
    x[1, 2, 1, 1] = bad  # one pixel poisons its whole sample
    x[3, 0, 0, 0] = bad
    out = to_uint8_rgb(x, (-1.0, 1.0))
    assert out.finite.tolist() == [True, False, True, False]
    assert out.finite.dtype == torch.bool
    assert out.num_nonfinite == 2
    assert (out.images[1] == 0).all()
    assert (out.images[3] == 0).all()
    # Finite samples are untouched: 0.5 -> 191.25 -> 191, 0 -> 128.
    assert (out.images[0] == 191).all()
    assert (out.images[2] == 128).all()


def test_nonfinite_samples_do_not_count_for_the_range_check() -> None:
    x = torch.full((2, 3, 2, 2), 0.25)
    x[1, 0, 0, 0] = float("nan")
    x[1, 1] = 500.0  # out of range, but in a sample that is excluded anyway
    out = to_uint8_rgb(x, (-1.0, 1.0))
    assert out.num_nonfinite == 1


def test_all_samples_nonfinite() -> None:
    out = to_uint8_rgb(torch.full((2, 3, 2, 2), float("nan")))
    assert out.num_nonfinite == 2
    assert (out.images == 0).all()


def test_empty_batch() -> None:
    out = to_uint8_rgb(torch.zeros(0, 3, 4, 4))
    assert out.images.shape == (0, 3, 4, 4)
    assert out.num_nonfinite == 0


def test_converted_images_is_frozen() -> None:
    out = to_uint8_rgb(torch.zeros(1, 3, 2, 2))
    assert isinstance(out, ConvertedImages)
    with pytest.raises(AttributeError):
        out.images = out.images  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data_lo", "data_hi", "declared", "hint"),
    [
        # [-1, 1] data declared as [0, 1]
        (-1.0, 1.0, (0.0, 1.0), "value_range=(-1, 1)"),
        # [0, 255] float data declared as [-1, 1] or [0, 1]
        (0.0, 255.0, (-1.0, 1.0), "value_range=(0, 255)"),
        (0.0, 255.0, (0.0, 1.0), "value_range=(0, 255)"),
        # [0, 1] data wrongly declared as [0.25, 0.75] (exceeds by 25% of the width)
        (0.0, 1.0, (0.25, 0.75), "value_range=(0, 1)"),
    ],
)
def test_out_of_range_error_names_found_and_declared_range(
    data_lo: float, data_hi: float, declared: tuple[float, float], hint: str
) -> None:
    x = torch.linspace(data_lo, data_hi, 2 * 3 * 4 * 4).view(2, 3, 4, 4)
    with pytest.raises(ValueError, match="outside the declared") as info:
        to_uint8_rgb(x, declared)
    message = str(info.value)
    assert f"[{data_lo:.4g}, {data_hi:.4g}]" in message  # the range found
    assert f"value_range=({declared[0]:g}, {declared[1]:g})" in message  # the range declared
    assert hint in message


def test_just_beyond_tolerance_raises() -> None:
    over = 1.0 + 2.0 * RANGE_TOLERANCE * 1.5  # 1.5x the tolerance of (-1, 1), whose width is 2
    with pytest.raises(ValueError, match="outside the declared"):
        to_uint8_rgb(_constant_batch([0.0, over]))


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        ((2, 8, 8, 3), "channels-last"),  # NHWC RGB
        ((2, 8, 8, 1), "channels-last"),  # NHWC grayscale
        ((2, 4, 8, 8), "RGBA"),
        ((2, 2, 8, 8), "2 channels"),
        ((8, 8), "2-D|grayscale image H x W"),
        ((3, 8, 8), "single image C x H x W"),
        ((2, 2, 3, 8, 8), "video"),
        ((2,), "1-D"),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_bad_layouts_are_refused(shape: tuple[int, ...], fragment: str, dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match=r"N x C x H x W with C in \{1, 3\}") as info:
        to_uint8_rgb(torch.zeros(shape, dtype=dtype))
    assert str(tuple(shape)) in str(info.value)
    assert any(part in str(info.value) for part in fragment.split("|"))


@pytest.mark.parametrize(
    "value_range", [(1.0, 1.0), (1.0, -1.0), (0.0, math.inf), (math.nan, 1.0), (0.0,), "ab", None, (0.0, 1.0, 2.0)]
)
def test_bad_value_range_is_refused(value_range: object) -> None:
    with pytest.raises(ValueError, match="value_range"):
        to_uint8_rgb(torch.zeros(1, 3, 2, 2), value_range)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool, torch.complex64])
def test_bad_dtypes_are_refused(dtype: torch.dtype) -> None:
    with pytest.raises(TypeError, match="uint8 or floating point"):
        to_uint8_rgb(torch.zeros(1, 3, 2, 2, dtype=dtype))


def test_non_tensor_is_refused() -> None:
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        to_uint8_rgb([[0.0]])  # type: ignore[arg-type]
