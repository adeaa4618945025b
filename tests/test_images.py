"""Tests for lightning_ganeval.images.to_uint8_rgb: closed-form quantization, masks, and every refusal."""

from __future__ import annotations

import ast
import json
import math
import pickle
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, Subset, TensorDataset, random_split
from torchvision import transforms as tv1
from torchvision.datasets import FakeData, VisionDataset
from torchvision.transforms import v2

from lightning_ganeval.images import ConvertedImages, infer_pixel_space, to_uint8_rgb
from lightning_ganeval.pixel_space import RANGE_TOLERANCE, PixelSpace, PixelSpaceError, coerce_pixel_space


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


@pytest.mark.parametrize("side", ["generated", "real"])
@pytest.mark.parametrize(
    ("data_lo", "data_hi", "declared", "fix", "gross"),
    [
        # [-1, 1] data declared as [0, 1]: beyond by exactly one width, so generated images are only clamped.
        (-1.0, 1.0, (0.0, 1.0), "value_range=(-1.0, 1.0)", False),
        # [0, 255] float data declared as [-1, 1] or [0, 1]: a gross scale mismatch on both sides.
        (0.0, 255.0, (-1.0, 1.0), "value_range=(0.0, 255.0)", True),
        (0.0, 255.0, (0.0, 1.0), "value_range=(0.0, 255.0)", True),
        # [0, 1] data wrongly declared as [0.25, 0.75] (exceeds by 50% of the width)
        (0.0, 1.0, (0.25, 0.75), "value_range=(0.0, 1.0)", False),
    ],
)
def test_out_of_range_error_names_side_found_declared_and_fix(
    side: str, data_lo: float, data_hi: float, declared: tuple[float, float], fix: str, gross: bool
) -> None:
    x = torch.linspace(data_lo, data_hi, 2 * 3 * 4 * 4).view(2, 3, 4, 4)
    if side == "generated" and not gross:
        out = to_uint8_rgb(x, declared, side="generated")  # clamped, not refused
        lo, hi = declared
        expected = int(((x < lo - 0.5 / 255 * (hi - lo)) | (x > hi + 0.5 / 255 * (hi - lo))).sum())
        assert int(out.num_clamped) == expected > 0
        return
    prefix = "real_" if side == "real" else ""
    with pytest.raises(ValueError, match="outside the declared") as info:
        to_uint8_rgb(x, declared, side=side)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"{side.capitalize()} images have values in [{data_lo:.4g}, {data_hi:.4g}]")
    assert f"{prefix}value_range=({declared[0]!r}, {declared[1]!r})" in message  # the space declared
    assert f"pass {prefix}{fix}" in message  # the argument that fixes it


def test_real_images_just_beyond_tolerance_raise() -> None:
    over = 1.0 + 2.0 * RANGE_TOLERANCE * 1.5  # 1.5x the tolerance of (-1, 1), whose width is 2
    with pytest.raises(ValueError, match=r"Real images .* outside the declared"):
        to_uint8_rgb(_constant_batch([0.0, over]), side="real")
    # Within the tolerance: clamped.
    out = to_uint8_rgb(_constant_batch([0.0, 1.0 + 2.0 * RANGE_TOLERANCE * 0.5]), side="real")
    assert out.images[:, 0, 0, 0].tolist() == [128, 255]


@pytest.mark.parametrize(
    ("space", "channel", "low", "high"),
    [
        (PixelSpace.from_value_range(-1.0, 1.0), 0, -1.0, 1.0),
        (PixelSpace.from_value_range(0.0, 255.0), 1, 0.0, 255.0),
        # per channel: bounds -mean/std and (1 - mean)/std of that channel
        (PixelSpace.from_normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), 0, -0.485 / 0.229, 0.515 / 0.229),
        (PixelSpace.from_normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), 2, -0.406 / 0.225, 0.594 / 0.225),
    ],
)
@pytest.mark.parametrize("beyond_high", [True, False])
def test_generated_images_are_refused_only_beyond_one_width(
    space: PixelSpace, channel: int, low: float, high: float, beyond_high: bool
) -> None:
    width = high - low
    # 1.001 widths beyond the edge raises; 0.999 widths beyond is clamped (only the one pixel).
    for factor, refused in [(1.001, True), (0.999, False)]:
        x = torch.full((2, 3, 4, 4), (low + high) / 2, dtype=torch.float64)
        x[1, channel, 2, 3] = high + factor * width if beyond_high else low - factor * width
        if refused:
            with pytest.raises(ValueError, match=r"Generated images .* by more than its width"):
                to_uint8_rgb(x, space)
        else:
            out = to_uint8_rgb(x, space)
            assert int(out.num_clamped) == 1
            assert out.images[1, channel, 2, 3] == (255 if beyond_high else 0)


def test_per_channel_space_checks_each_channel_against_its_own_bounds() -> None:
    space = PixelSpace.from_normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    # 2.5 is inside channel 2's [-1.80, 2.64] but beyond channel 0's high 2.249 by 0.25 > 1% of its width 4.37.
    x = torch.zeros(1, 3, 2, 2)
    x[0, 2] = 2.5
    to_uint8_rgb(x, space, side="real")
    x[0, 0, 0, 0] = 2.5
    with pytest.raises(ValueError, match=r"Real images .* real_normalize=\(\(0\.485, 0\.456, 0\.406\), "):
        to_uint8_rgb(x, space, side="real")


@pytest.mark.parametrize(
    ("argument", "declared", "fix"),
    [
        ("normalize", "normalize=((0.5,), (0.5,))", "value_range=(0.0, 255.0)"),
        ("real_normalize", "real_normalize=((0.5,), (0.5,))", "real_value_range=(0.0, 255.0)"),
        ("space", "space=normalize=((0.5,), (0.5,))", "space=value_range=(0.0, 255.0)"),
    ],
)
def test_range_error_names_the_callers_argument(argument: str, declared: str, fix: str) -> None:
    x = torch.linspace(0.0, 255.0, 48).view(1, 3, 4, 4)
    with pytest.raises(ValueError, match="Real images have values in") as info:
        to_uint8_rgb(x, PixelSpace.from_normalize(0.5, 0.5), side="real", argument=argument)
    assert f"outside the declared {declared} " in str(info.value)
    assert f"pass {fix}" in str(info.value)


@pytest.mark.parametrize(
    ("data", "advice"),
    [
        # MNIST after Normalize((0.1307,), (0.3081,)), declared as [-1, 1]: the wrong-argument case.
        ((-0.4242, 2.8215), "real_normalize=(mean, std)"),
        ((-50.0, 50.0), "check the data pipeline and the `real_value_range` argument"),
    ],
)
def test_range_error_advice_without_a_common_range(data: tuple[float, float], advice: str) -> None:
    x = torch.linspace(*data, 48).view(1, 3, 4, 4)
    with pytest.raises(ValueError, match="outside the declared real_value_range=") as info:
        to_uint8_rgb(x, side="real")
    assert advice in str(info.value)


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


# --- PixelSpace -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("space", "described", "as_json"),
    [
        (PixelSpace.from_value_range(0, 1), "value_range=(0.0, 1.0)", {"value_range": [0.0, 1.0]}),
        (PixelSpace.from_value_range(-1.0, 1.0), "value_range=(-1.0, 1.0)", {"value_range": [-1.0, 1.0]}),
        (
            PixelSpace.from_normalize((0.1307,), (0.3081,)),
            "normalize=((0.1307,), (0.3081,))",
            {"normalize": {"mean": [0.1307], "std": [0.3081]}},
        ),
        (
            PixelSpace.from_normalize([0.485, 0.456, 0.406], torch.tensor([0.25, 0.5, 0.125])),
            "normalize=((0.485, 0.456, 0.406), (0.25, 0.5, 0.125))",
            {"normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.25, 0.5, 0.125]}},
        ),
        (
            PixelSpace.from_normalize(0.5, 0.5),
            "normalize=((0.5,), (0.5,))",
            {"normalize": {"mean": [0.5], "std": [0.5]}},
        ),
    ],
)
def test_pixel_space_describe_json_pickle_hash(space: PixelSpace, described: str, as_json: dict) -> None:
    assert space.describe() == described == str(space)
    assert space.describe("real_") == "real_" + described
    assert space.to_json() == as_json
    text = json.dumps(space.to_json())
    assert PixelSpace.from_json(text) == space
    assert PixelSpace.from_json(json.loads(text)) == space
    assert pickle.loads(pickle.dumps(space)) == space
    assert hash(PixelSpace.from_json(text)) == hash(space)
    assert len({space, PixelSpace.from_json(text)}) == 1
    # What describe() prints, parse() accepts back.
    kind, value = described.split("=", 1)
    assert PixelSpace.parse(**{kind: ast.literal_eval(value)}) == space
    with pytest.raises(AttributeError):
        space.value_range = (0.0, 2.0)  # type: ignore[misc]


def test_pixel_space_scalars_and_one_element_sequences_are_the_same_space() -> None:
    assert PixelSpace.from_normalize(0.5, 0.5) == PixelSpace.from_normalize([0.5], (0.5,))
    assert PixelSpace.from_value_range(0, 1) == PixelSpace(value_range=(0.0, 1.0))
    assert PixelSpace.from_normalize(0.5, 0.5) != PixelSpace.from_value_range(-1, 1)  # same pixels, other argument


@pytest.mark.parametrize(
    ("space", "num_channels", "lows", "highs"),
    [
        (PixelSpace.from_value_range(-1, 1), 1, (-1.0,), (1.0,)),
        (PixelSpace.from_normalize(0.5, 0.25), 1, (-2.0,), (2.0,)),
        (PixelSpace.from_normalize((0.5, 0.0, 1.0), 0.5), 3, (-1.0, 0.0, -2.0), (1.0, 2.0, 0.0)),
    ],
)
def test_pixel_space_bounds(space: PixelSpace, num_channels: int, lows: tuple, highs: tuple) -> None:
    assert space.num_channels == num_channels
    assert space.bounds() == (lows, highs)  # exact: dyadic fractions


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (
            {"value_range": (1.0, 1.0)},
            "`real_value_range` must be a pair of finite numbers (low, high) with low < high",
        ),
        ({"value_range": (0.0, math.inf)}, "`real_value_range`"),
        ({"value_range": "01"}, "`real_value_range`"),
        ({"value_range": (True, 2)}, "`real_value_range`"),
        ({"value_range": (0.0, 1.0, 2.0)}, "got (0.0, 1.0, 2.0)"),
        ({"normalize": (0.5,)}, "`real_normalize` must be a pair (mean, std)"),
        ({"normalize": 0.5}, "`real_normalize` must be a pair (mean, std)"),
        ({"normalize": ((0.5, 0.5), 0.5)}, "`real_normalize` mean must have 1 or 3 channels"),
        ({"normalize": (0.5, (0.5, 0.5, 0.5, 0.5))}, "`real_normalize` std must have 1 or 3 channels"),
        ({"normalize": (0.5, 0.0)}, "`real_normalize` std must be positive, got 0.0"),
        ({"normalize": (0.5, -0.5)}, "`real_normalize` std must be positive"),
        ({"normalize": (math.nan, 0.5)}, "`real_normalize` mean must be finite"),
        ({"normalize": ("a", 0.5)}, "`real_normalize` mean must be a number or a sequence"),
        ({"normalize": {"mean": 0.5}}, "exactly the keys 'mean' and 'std'"),
        ({"value_range": (0, 1), "normalize": (0.5, 0.5)}, "either `real_value_range` or `real_normalize`, not both"),
    ],
)
def test_pixel_space_parse_errors_name_the_argument(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        PixelSpace.parse(**kwargs, argument_prefix="real_")


def test_pixel_space_parse_accepts_mappings_and_returns_none_for_nothing() -> None:
    assert PixelSpace.parse() is None
    assert PixelSpace.parse(normalize={"mean": 0.5, "std": [0.5]}) == PixelSpace.from_normalize(0.5, 0.5)
    assert PixelSpace.parse(value_range=[0, 255]) == PixelSpace.from_value_range(0.0, 255.0)


def test_coerce_pixel_space_takes_every_user_form() -> None:
    declared = PixelSpace.from_normalize(0.5, 0.5)
    assert coerce_pixel_space() is None
    assert coerce_pixel_space(declared) is declared
    assert coerce_pixel_space((0, 1)) == coerce_pixel_space(value_range=[0.0, 1.0]) == PixelSpace.from_value_range(0, 1)
    assert coerce_pixel_space(normalize={"mean": 0.5, "std": 0.5}) == declared
    with pytest.raises(PixelSpaceError, match=re.escape("`space` must be a pair of finite numbers (low, high)")):
        coerce_pixel_space(required=True)
    with pytest.raises(PixelSpaceError, match=re.escape("Pass either `space` or `normalize`, not both")):
        coerce_pixel_space((0, 1), normalize=(0.5, 0.5))


def test_pixel_space_error_is_renamed_on_the_way_up_and_pickles() -> None:
    with pytest.raises(PixelSpaceError) as info:
        coerce_pixel_space(normalize={"mean": 0.5, "std": {0.0}})  # braces in the value survive the renaming
    assert str(info.value) == "`normalize` std must be positive, got {0.0}."
    renamed = info.value.naming(normalize="real_normalize")
    assert str(renamed) == str(info.value).replace("`normalize`", "`real_normalize`")
    assert "{0.0}" in str(renamed)
    assert isinstance(renamed, ValueError)
    assert str(pickle.loads(pickle.dumps(renamed))) == str(renamed)


SPACE_MESSAGE = "`space` must be a pair of finite numbers (low, high) with low < high (or a PixelSpace), got "


@pytest.mark.parametrize("bad", [(1, -1), (0, 1, 2), "ab"])
def test_space_errors_name_the_users_argument_at_every_entry_point(bad: object) -> None:
    """`space=` of the Evaluator, of PPL and of the real pass is named `space` (on main: `value_range`, or a bare
    "too many values to unpack"); a callback's `real_value_range` keeps its own name through to_uint8_rgb."""
    from lightning_ganeval.evaluator import Evaluator
    from lightning_ganeval.metrics import FID, PerceptualPathLength
    from lightning_ganeval.real_pass import prepare_real_data

    expected = re.escape(SPACE_MESSAGE + repr(bad))
    with pytest.raises(ValueError, match=expected):
        Evaluator([FID()], num_samples=4, latent_shape=2, space=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=expected):
        PerceptualPathLength(2, space=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=expected):
        prepare_real_data([torch.zeros(2, 3, 4, 4)], [], space=bad, cache=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("`real_value_range` must be a pair of finite numbers")):
        to_uint8_rgb(torch.zeros(1, 3, 2, 2), bad, side="real")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [{}, {"value_range": [0, 1], "normalize": {}}, {"rgb": [0, 1]}, [0, 1], '{"value_range": [1, 0]}']
)
def test_pixel_space_from_json_refuses_other_data(bad: object) -> None:
    with pytest.raises(ValueError, match="value_range"):
        PixelSpace.from_json(bad)  # type: ignore[arg-type]


def test_pixel_space_needs_exactly_one_form() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        PixelSpace()
    with pytest.raises(ValueError, match="exactly one of"):
        PixelSpace(value_range=(0.0, 1.0), mean=(0.5,), std=(0.5,))


# --- to_uint8_rgb with a normalisation ------------------------------------------------------------------------------


NORMALIZATIONS = [
    ((0.1307,), (0.3081,)),  # MNIST
    ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ((0.5,), (0.5,)),  # one value broadcast over RGB
]


@pytest.mark.parametrize(("mean", "std"), NORMALIZATIONS)
@pytest.mark.parametrize("torchvision_version", ["v1", "v2"])
@pytest.mark.parametrize("side", ["generated", "real"])
def test_normalized_images_convert_back_to_the_uint8_originals_bit_exactly(
    mean: tuple, std: tuple, torchvision_version: str, side: str
) -> None:
    channels = 1 if len(mean) == 1 and mean != (0.5,) else 3
    # Every uint8 level in every channel, as ToTensor gives them (k / 255), then torchvision's own Normalize.
    originals = torch.arange(256, dtype=torch.uint8).repeat(channels, 4).view(1, channels, 16, 64)
    originals = torch.cat([originals, originals.flip(-1)])
    pixels = originals.float() / 255
    normalize = (tv1.Normalize if torchvision_version == "v1" else v2.Normalize)(list(mean), list(std))
    normalized = torch.stack([normalize(image) for image in pixels])
    out = to_uint8_rgb(normalized, PixelSpace.from_normalize(mean, std), side=side)  # type: ignore[arg-type]
    expected = originals.expand(-1, 3, -1, -1)
    assert torch.equal(out.images, expected)  # bit-exact
    assert int(out.num_clamped) == 0


def test_single_channel_images_with_a_three_channel_space_are_refused() -> None:
    space = PixelSpace.from_normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with pytest.raises(ValueError, match="per channel for 3 channels, but the real images have 1"):
        to_uint8_rgb(torch.zeros(1, 1, 2, 2), space, side="real")
    # uint8 ignores the space, as always
    assert to_uint8_rgb(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), space).images.shape == (1, 3, 2, 2)


@pytest.mark.parametrize("side", ["both", "", None, 1])
def test_bad_side_or_argument_is_refused(side: object) -> None:
    with pytest.raises(ValueError, match="`side` must be 'generated' or 'real'"):
        to_uint8_rgb(torch.zeros(1, 3, 2, 2), side=side)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`argument` must be a non-empty string"):
        to_uint8_rgb(torch.zeros(1, 3, 2, 2), argument="" if side else 3)  # type: ignore[arg-type]


# --- clamping counts ------------------------------------------------------------------------------------------------


def test_num_clamped_counts_values_quantized_outside_0_255() -> None:
    # (-1, 1): half a quantization step is 1 / 255 = 0.00392. -1.003 and 1.003 round to 0 and 255 (not clamped);
    # -1.005, 1.005, -1.5, 2.9 round outside [0, 255] (clamped). NaN sample: excluded and zeroed.
    values = [-1.003, 1.003, -1.005, 1.005, -1.5, 2.9, 0.0]
    x = torch.tensor(values).view(1, 1, 1, -1)
    x = torch.cat([x, torch.full_like(x, math.nan)])
    out = to_uint8_rgb(x)
    assert out.num_clamped.dtype == torch.int64
    assert out.num_clamped.dim() == 0
    assert out.num_clamped.device == x.device
    assert int(out.num_clamped) == 4
    assert out.num_values == 2 * len(values)  # all input values, the non-finite sample included
    assert out.images[0, 0, 0].tolist() == [0, 255, 0, 255, 0, 255, 128]


@pytest.mark.parametrize(
    "space", [PixelSpace.from_value_range(-1, 1), PixelSpace.from_normalize((0.1, 0.5, 0.9), (0.2, 0.3, 0.4))]
)
def test_num_clamped_equals_the_number_of_out_of_range_values(space: PixelSpace) -> None:
    gen = torch.Generator().manual_seed(0)
    lows, highs = (torch.tensor(b * (3 // len(b)), dtype=torch.float64).view(1, 3, 1, 1) for b in space.bounds())
    width = highs - lows
    u = torch.rand(4, 3, 8, 8, generator=gen, dtype=torch.float64)  # position within the space
    outside = torch.rand(4, 3, 8, 8, generator=gen) < 0.2
    # Out-of-range values lie 0.01 to 0.9 widths beyond an edge: far from the half-step boundary, within one width.
    shift = (0.01 + 0.89 * torch.rand(4, 3, 8, 8, generator=gen, dtype=torch.float64)) * torch.where(
        torch.rand(4, 3, 8, 8, generator=gen) < 0.5, -1.0, 1.0
    )
    u = torch.where(outside, torch.where(shift < 0, shift, 1 + shift), u)
    x = lows + u * width
    out = to_uint8_rgb(x, space)
    assert int(out.num_clamped) == int(outside.sum())
    assert out.num_values == x.numel()
    assert torch.equal(out.images, torch.round(u.clamp(0, 1) * 255).to(torch.uint8))  # u computed in float64


def test_uint8_input_clamps_nothing() -> None:
    out = to_uint8_rgb(torch.full((2, 1, 3, 3), 255, dtype=torch.uint8), (0.0, 1.0))
    assert int(out.num_clamped) == 0
    assert out.num_values == 18


# --- deferred range checks ------------------------------------------------------------------------------------------


def test_deferred_range_check_merges_batches_and_raises_at_the_end() -> None:
    good = torch.linspace(-1, 1, 48).view(1, 3, 4, 4)
    bad = good * 127.5 + 127.5  # [0, 255] declared as (-1, 1)
    first = to_uint8_rgb(good, check_range=False)
    second = to_uint8_rgb(bad, check_range=False)  # no error yet
    first.range_check.check()
    merged = first.range_check.merge(second.range_check)
    assert merged.minimum.tolist() == [-1.0]
    assert merged.maximum.tolist() == [255.0]
    with pytest.raises(ValueError, match=r"Generated images have values in \[-1, 255\]"):
        merged.check()
    with pytest.raises(ValueError, match="cannot merge"):
        first.range_check.merge(to_uint8_rgb(good, side="real").range_check)


def test_range_check_extent_ignores_nonfinite_samples_and_uint8() -> None:
    x = torch.full((3, 3, 2, 2), 0.25)
    x[0, 1] = 0.75
    x[1, 0, 0, 0] = math.inf
    x[2] = -0.5
    check = to_uint8_rgb(x, check_range=False).range_check
    assert check.minimum.tolist() == [-0.5]
    assert check.maximum.tolist() == [0.75]
    per_channel = PixelSpace.from_normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    check = to_uint8_rgb(x, per_channel).range_check
    assert check.minimum.tolist() == [-0.5, -0.5, -0.5]
    assert check.maximum.tolist() == [0.25, 0.75, 0.25]
    empty = to_uint8_rgb(x.to(torch.uint8)).range_check
    assert empty.minimum.tolist() == [math.inf]
    assert empty.maximum.tolist() == [-math.inf]
    empty.check()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "space",
    [
        PixelSpace.from_value_range(-1, 1),
        PixelSpace.from_normalize(0.5, 0.5),
        PixelSpace.from_normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ],
)
def test_deferred_conversion_does_not_synchronise_on_cuda(space: PixelSpace) -> None:
    x = torch.rand(4, 3, 16, 16, device="cuda") * 2 - 1
    x[1, 0, 0, 0] = math.nan
    to_uint8_rgb(x, space)  # warm up outside the guarded region
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        first = to_uint8_rgb(x, space, check_range=False)
        merged = first.range_check.merge(to_uint8_rgb(x, space, check_range=False).range_check)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    merged.check()
    assert int(first.num_clamped) == 0


# --- infer_pixel_space ----------------------------------------------------------------------------------------------

MNIST = ((0.1307,), (0.3081,))


class _InMemoryVision(VisionDataset):
    """A VisionDataset over uint8 CHW tensors, converted to PIL so that torchvision's v1 transforms apply."""

    def __init__(self, images: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(root="", **kwargs)
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, target = tv1.ToPILImage()(self.images[index]), 0
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def _uint8_images(n: int = 4, channels: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, 6, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _mnist_fake(**kwargs: Any) -> FakeData:
    return FakeData(size=6, image_size=(1, 6, 5), num_classes=2, **kwargs)


def _mnist_transform() -> tv1.Compose:
    return tv1.Compose([tv1.ToTensor(), tv1.Normalize(*MNIST)])


def test_infer_reads_normalize_of_a_torchvision_dataset_and_inverts_it_bit_exactly() -> None:
    dataset = _mnist_fake(transform=_mnist_transform())
    space, reason = infer_pixel_space(dataset, dataset_name="train dataset")
    assert space == PixelSpace.from_normalize(*MNIST)
    assert reason == (
        "torchvision Normalize(mean=(0.1307,), std=(0.3081,)) in the train dataset's transform (FakeData)"
    )
    # The same FakeData images as uint8 (FakeData draws image i from a seed depending on i only).
    originals = torch.stack([image for image, _ in _mnist_fake(transform=tv1.PILToTensor())])
    normalized = torch.stack([image for image, _ in dataset])
    out = to_uint8_rgb(normalized, space, side="real", argument="real_normalize")
    assert torch.equal(out.images, originals.expand(-1, 3, -1, -1))


def _wrapped(kind: str) -> tuple[Any, str]:
    base = _mnist_fake(transform=_mnist_transform())
    if kind == "Subset":
        return Subset(base, [0, 2]), "FakeData via Subset"
    if kind == "random_split":
        return random_split(base, [4, 2], generator=torch.Generator().manual_seed(0))[1], "FakeData via Subset"
    if kind == "nested":
        return Subset(Subset(base, [0, 1, 2]), [1]), "FakeData via Subset via Subset"
    if kind == "DataLoader":
        return DataLoader(Subset(base, [0]), batch_size=2), "FakeData via Subset via DataLoader"
    if kind == "ConcatDataset":
        return ConcatDataset([base, _mnist_fake(transform=_mnist_transform())]), "all 2 parts of ConcatDataset"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["Subset", "random_split", "nested", "DataLoader", "ConcatDataset"])
def test_infer_looks_through_wrappers(kind: str) -> None:
    dataset, where = _wrapped(kind)
    space, reason = infer_pixel_space(dataset)
    assert space == PixelSpace.from_normalize(*MNIST)
    assert reason.endswith(f"in the dataset's transform ({where})")


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        # v2 pipeline, per-channel Normalize given as lists
        (
            lambda: v2.Compose(
                [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.5])]
            ),
            PixelSpace.from_normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.5)),
        ),
        # the last Normalize applied wins, also inside a nested Compose
        (
            lambda: tv1.Compose(
                [tv1.ToTensor(), tv1.Normalize(0.5, 0.5), tv1.Compose([tv1.Normalize((0.1,), (0.2,))])]
            ),
            PixelSpace.from_normalize(0.1, 0.2),
        ),
        # a bare Normalize, and nn.Sequential of v1 transforms
        (lambda: tv1.Normalize((0.25,), (0.5,)), PixelSpace.from_normalize(0.25, 0.5)),
        (lambda: torch.nn.Sequential(tv1.Normalize((0.25,), (0.5,))), PixelSpace.from_normalize(0.25, 0.5)),
    ],
)
def test_infer_walks_transform_pipelines(transform: Callable[[], Any], expected: PixelSpace) -> None:
    dataset = _InMemoryVision(_uint8_images(channels=3), transform=transform())
    assert infer_pixel_space(dataset)[0] == expected


def test_infer_reads_joint_transforms_of_a_vision_dataset() -> None:
    joint = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.25])])
    dataset = _InMemoryVision(_uint8_images(), transforms=joint)
    space, reason = infer_pixel_space(dataset)
    assert space == PixelSpace.from_normalize(0.5, 0.25)
    assert reason.endswith("(_InMemoryVision)")
    # and the inferred space inverts what the dataset yields
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    assert torch.equal(to_uint8_rgb(images, space, side="real").images, _uint8_images().expand(-1, 3, -1, -1))


def test_infer_a_wrappers_own_normalize_runs_last() -> None:
    class Renormalized(torch.utils.data.Dataset):
        def __init__(self, dataset: Any) -> None:
            self.dataset = dataset
            self.transform = tv1.Normalize((0.0,), (2.0,))

        def __len__(self) -> int:
            return len(self.dataset)

        def __getitem__(self, index: int) -> Any:
            return self.transform(self.dataset[index][0])

    space, reason = infer_pixel_space(Renormalized(_mnist_fake(transform=_mnist_transform())))
    assert space == PixelSpace.from_normalize(0.0, 2.0)
    assert reason.endswith("(Renormalized)")


def test_infer_refuses_concat_parts_that_disagree() -> None:
    parts = [_mnist_fake(transform=_mnist_transform()), _mnist_fake(transform=tv1.ToTensor())]
    with pytest.raises(ValueError, match=r"parts of ConcatDataset normalise their images differently") as info:
        infer_pixel_space(ConcatDataset(parts))
    assert "part 0 (FakeData): normalize=((0.1307,), (0.3081,)); part 1 (FakeData): no Normalize" in str(info.value)


def test_infer_refuses_a_normalize_with_other_channel_counts() -> None:
    dataset = _InMemoryVision(_uint8_images(), transform=tv1.Normalize((0.5, 0.5), (0.5, 0.5)))
    with pytest.raises(ValueError, match="pass `value_range=` or `normalize=` explicitly"):
        infer_pixel_space(dataset)


def _batches(data: torch.Tensor, size: int = 4) -> list[torch.Tensor]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda u: u.float() / 255, (0.0, 1.0)),
        (lambda u: u.float() / 127.5 - 1, (-1.0, 1.0)),
        (lambda u: u, (0.0, 255.0)),
        (lambda u: u.double(), (0.0, 255.0)),
    ],
)
def test_infer_falls_back_to_the_observed_range_of_tensor_datasets(
    make: Callable[[torch.Tensor], torch.Tensor], expected: tuple[float, float]
) -> None:
    levels = torch.arange(256, dtype=torch.uint8).view(8, 1, 4, 8)  # every level: the full range is observed
    dataset = TensorDataset(make(levels))
    batches = [batch for (batch,) in DataLoader(dataset, batch_size=4)]
    space, reason = infer_pixel_space(dataset, batches)
    assert space == PixelSpace.from_value_range(*expected)
    if levels.dtype == make(levels).dtype:
        assert reason == "uint8 dtype of the first 2 real batches"
    else:
        assert reason == f"observed range [{expected[0]:.3f}, {expected[1]:.3f}] of the first 2 real batches"
    # What is inferred passes the strict real-image check and gives back the levels exactly.
    assert torch.equal(to_uint8_rgb(make(levels), space, side="real").images, levels.expand(-1, 3, -1, -1))


def test_infer_with_a_to_tensor_only_pipeline_uses_the_batches() -> None:
    dataset = _mnist_fake(transform=tv1.ToTensor())
    batches = [next(iter(DataLoader(dataset, batch_size=6)))[0]]
    space, reason = infer_pixel_space(dataset, batches)
    assert space == PixelSpace.from_value_range(0.0, 1.0)
    low, high = float(batches[0].min()), float(batches[0].max())
    assert reason == f"observed range [{low:.3f}, {high:.3f}] of the first real batch"


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (-0.01, 1.01, (0.0, 1.0)),  # within 1% of [0, 1]
        (-0.011, 1.0, (-1.0, 1.0)),  # a negative beyond it: [-1, 1]
        (-1.02, 1.02, (-1.0, 1.0)),
        (0.0, 1.02, (0.0, 255.0)),  # max > 1 beyond the tolerance
        (0.0, 257.55, (0.0, 255.0)),
    ],
)
def test_infer_observed_range_boundaries(low: float, high: float, expected: tuple[float, float]) -> None:
    batch = torch.tensor([low, (low + high) / 2, high, math.nan], dtype=torch.float64).view(1, 1, 2, 2)
    assert infer_pixel_space(batches=[batch])[0] == PixelSpace.from_value_range(*expected)


@pytest.mark.parametrize(("low", "high"), [(-3.0, 3.0), (-1.03, 1.0), (0.0, 258.0), (-0.5, 200.0), (-0.4242, 2.8215)])
def test_infer_refuses_an_unrecognised_range(low: float, high: float) -> None:
    batch = torch.tensor([low, high]).view(1, 1, 1, 2)
    with pytest.raises(ValueError, match=r"pass `real_value_range=\(low, high\)` or `real_normalize=\(mean, std\)`"):
        infer_pixel_space(TensorDataset(batch), [batch], argument_prefix="real_")


def test_infer_needs_something_to_infer_from() -> None:
    with pytest.raises(ValueError, match="no Normalize in a dataset transform, no real values"):
        infer_pixel_space(TensorDataset(torch.zeros(2)))
    with pytest.raises(ValueError, match="no real values"):
        infer_pixel_space(batches=[torch.full((1, 1, 2, 2), math.nan)])
    with pytest.raises(TypeError, match="image tensors, got list at position 1"):
        infer_pixel_space(batches=[torch.zeros(1, 1, 2, 2), [0.0]])
    with pytest.raises(TypeError, match=r"got torch\.int64 at position 0"):
        infer_pixel_space(batches=[torch.zeros(1, 1, 2, 2, dtype=torch.int64)])
