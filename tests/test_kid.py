"""KID: the unbiased MMD² against a direct numpy implementation and torch-fidelity's ``metric_kid``."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

from lightning_ganeval.metrics.kid import kid_from_features, kid_subset_values, mmd2_unbiased

RTOL = 1e-10  # float64 on both sides; only the summation order differs
F64 = {"dtype": torch.float64}
# The float32 default against float64: |difference| <= FLOAT32_ATOL_SCALE x the mean cross kernel value, the
# size of each of the three kernel means whose difference MMD² is (measured: ~1e-10 of it, see below).
FLOAT32_ATOL_SCALE = 1e-5


def _features(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift).abs()  # non-negative, like pool3


def _numpy_mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0=1.0):
    """Textbook unbiased MMD² with the polynomial kernel, full Gram matrices."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    n, m = len(x), len(y)
    k_xx = (gamma * x @ x.T + coef0) ** degree
    k_yy = (gamma * y @ y.T + coef0) ** degree
    k_xy = (gamma * x @ y.T + coef0) ** degree
    within_x = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return within_x + within_y - 2 * k_xy.mean()


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def _torch_fidelity(real: torch.Tensor, fake: torch.Tensor, **kwargs) -> tuple[float, float]:
    out = kid_features_to_metric(real, fake, verbose=False, **kwargs)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def test_one_subset_of_every_sample_equals_numpy_and_torch_fidelity() -> None:
    n, d = 1000, 64
    real, fake = _features(n, d, seed=0), _features(n, d, seed=1, scale=1.1)
    expected = _numpy_mmd2_unbiased(real.numpy(), fake.numpy())
    assert expected > 0
    # float64 tensors make torch-fidelity compute in float64 too, so both sides are exact to rounding.
    tf_mean, tf_std = _torch_fidelity(real, fake, kid_subsets=1, kid_subset_size=n, rng_seed=3)
    mean, std = kid_from_features(real, fake, subsets=1, subset_size=n, seed=5, **F64)
    assert _rel(mean, expected) <= RTOL
    assert _rel(tf_mean, expected) <= RTOL
    assert std == 0.0 == tf_std
    assert _rel(mmd2_unbiased(real, fake, **F64), expected) <= RTOL


def test_mmd2_unbiased_with_unequal_sizes_and_custom_kernel() -> None:
    real, fake = _features(300, 16, seed=2), _features(170, 16, seed=3, shift=0.2)
    for kwargs in ({}, {"degree": 2, "gamma": 0.5, "coef0": 0.0}, {"degree": 1, "gamma": 2.0, "coef0": -1.0}):
        expected = _numpy_mmd2_unbiased(real.numpy(), fake.numpy(), **kwargs)
        assert _rel(mmd2_unbiased(real, fake, **kwargs, **F64), expected) <= RTOL


def test_mmd2_unbiased_blocks_cover_every_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row blocks smaller than n (with a ragged last block) give the same sums as one block."""
    import lightning_ganeval.metrics.kid as kid

    real, fake = _features(103, 8, seed=4), _features(77, 8, seed=5, shift=0.1)
    expected = _numpy_mmd2_unbiased(real.numpy(), fake.numpy())
    monkeypatch.setattr(kid, "_BLOCK_ROWS", 10)
    assert _rel(mmd2_unbiased(real, fake, **F64), expected) <= RTOL


@pytest.mark.parametrize("one_gram", [True, False])
def test_several_subsets_equal_torch_fidelity_with_its_draws(monkeypatch: pytest.MonkeyPatch, one_gram: bool) -> None:
    """Given torch-fidelity's own subset indices, the subset values, mean and std (ddof=0) agree to rounding.

    Both ways of computing the subsets: one Gram matrix of the drawn rows, and one per subset (in row blocks of
    50, so that the lower-triangle blocks and a ragged last block are exercised).
    """
    import lightning_ganeval.metrics.kid as kid

    n_real, n_fake, d, subsets, size, seed = 400, 350, 32, 12, 120, 2020
    real, fake = _features(n_real, d, seed=6), _features(n_fake, d, seed=7, shift=0.05)
    # torch-fidelity draws rng.choice(n1, size, replace=False) then rng.choice(n2, ...) for each subset.
    rng = np.random.RandomState(seed)
    draws = [(rng.choice(n_real, size, replace=False), rng.choice(n_fake, size, replace=False)) for _ in range(subsets)]
    real_idx = torch.from_numpy(np.stack([a for a, _ in draws]))
    fake_idx = torch.from_numpy(np.stack([b for _, b in draws]))
    monkeypatch.setattr(kid, "_one_gram_is_cheaper", lambda *args: one_gram)
    monkeypatch.setattr(kid, "_BLOCK_ROWS", 50)
    values = kid_subset_values(real, fake, real_idx, fake_idx, **F64)
    for s in range(subsets):
        expected = _numpy_mmd2_unbiased(real.numpy()[draws[s][0]], fake.numpy()[draws[s][1]])
        assert _rel(float(values[s]), expected) <= RTOL
    tf_mean, tf_std = _torch_fidelity(real, fake, kid_subsets=subsets, kid_subset_size=size, rng_seed=seed)
    assert _rel(float(values.mean()), tf_mean) <= RTOL
    assert _rel(float(values.std(correction=0)), tf_std) <= RTOL


def test_seeded_draws_agree_statistically_with_torch_fidelity() -> None:
    """Our torch.Generator draws differ from torch-fidelity's RandomState ones, so only the distributions agree.

    Given the pool of rows, each subset value is an i.i.d. draw whose expectation is the all-rows unbiased MMD²
    (the two sides are drawn independently, pairs i≠j uniformly). Both means must lie within 5 standard errors
    (std/√subsets) of it, and the two stds within 25% of each other (the std of a 100-subset std estimate is ~7%).
    """
    n, d, subsets, size = 600, 32, 100, 100
    real, fake = _features(n, d, seed=8), _features(n, d, seed=9, scale=1.05)
    full = mmd2_unbiased(real, fake)
    mean, std = kid_from_features(real, fake, subsets=subsets, subset_size=size, seed=0)
    tf_mean, tf_std = _torch_fidelity(real, fake, kid_subsets=subsets, kid_subset_size=size, rng_seed=0)
    assert mean != tf_mean  # different draws, as stated in the module docs
    for m, s in ((mean, std), (tf_mean, tf_std)):
        assert abs(m - full) <= 5 * s / subsets**0.5
    assert abs(std - tf_std) <= 0.25 * tf_std


def test_deterministic_in_seed_and_independent_of_input_dtype_and_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_ganeval.metrics.kid as kid

    real, fake = _features(200, 16, seed=10), _features(180, 16, seed=11, shift=0.1)
    first = kid_from_features(real, fake, subsets=7, subset_size=50, seed=1, **F64)
    assert kid_from_features(real, fake, subsets=7, subset_size=50, seed=1, **F64) == first
    assert kid_from_features(real, fake, subsets=7, subset_size=50, seed=2, **F64) != first
    # float32 input is converted to float64 first: identical to passing the same values as float64.
    for dtype in (torch.float32, torch.float64):
        assert kid_from_features(
            real.float(), fake.float(), subsets=7, subset_size=50, seed=1, dtype=dtype
        ) == kid_from_features(
            real.float().double(), fake.float().double(), subsets=7, subset_size=50, seed=1, dtype=dtype
        )
    monkeypatch.setattr(kid, "_BLOCK_ROWS", 7)  # many ragged blocks
    blocked = kid_from_features(real, fake, subsets=7, subset_size=50, seed=1, **F64)
    assert _rel(blocked[0], first[0]) <= RTOL
    assert _rel(blocked[1], first[1]) <= RTOL


def test_kid_is_near_zero_for_one_distribution_and_grows_with_the_shift() -> None:
    real = _features(400, 16, seed=12)
    same, _ = kid_from_features(real, _features(400, 16, seed=13), subsets=20, subset_size=200)
    shifted, _ = kid_from_features(real, _features(400, 16, seed=13, shift=0.5), subsets=20, subset_size=200)
    more, _ = kid_from_features(real, _features(400, 16, seed=13, shift=1.0), subsets=20, subset_size=200)
    assert abs(same) < 0.1 * shifted
    assert shifted < more


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subset_size": 11}, "`subset_size` must be at most the number of rows on each side (real: 20, fake: 10)"),
        ({"subset_size": 1}, "`subset_size` must be an integer >= 2, got 1"),
        ({"subsets": 0}, "`subsets` must be an integer >= 1, got 0"),
        ({"subsets": 2.0}, "`subsets` must be an integer >= 1, got 2.0"),
        ({"degree": 0}, "`degree` must be an integer >= 1, got 0"),
        ({"gamma": -1.0}, "`gamma` must be a positive finite number or None"),
        ({"coef0": float("nan")}, "`coef0` must be a finite number, got nan"),
        ({"seed": "0"}, "`seed` must be an integer, got '0'"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    real, fake = _features(20, 4, seed=0), _features(10, 4, seed=1)
    with pytest.raises(ValueError, match=re.escape(message)):
        kid_from_features(real, fake, **{"subset_size": 5, **kwargs})


def test_bad_inputs() -> None:
    x = _features(20, 4, seed=0)
    with pytest.raises(ValueError, match="same feature dimension, got 4 and 5"):
        kid_from_features(x, _features(20, 5, seed=1), subset_size=5)
    with pytest.raises(ValueError, match=r"`fake` must be a 2-D \(rows, features\) tensor, got shape \(20,\)"):
        kid_from_features(x, x[:, 0], subset_size=5)
    with pytest.raises(ValueError, match=r"`real` must be a 2-D"):
        mmd2_unbiased(x[None], x)
    with pytest.raises(ValueError, match="must be finite"):
        kid_from_features(x, torch.full_like(x, float("nan")), subset_size=5)
    with pytest.raises(ValueError, match="`fake` must have at least 2 rows"):
        mmd2_unbiased(x, x[:1])
    with pytest.raises(TypeError, match=r"`real` must be a torch\.Tensor"):
        mmd2_unbiased(x.numpy(), x)


@pytest.mark.gpu
def test_cuda_equals_cpu() -> None:
    """Same subsets (CPU generator): equal to rounding in float64, within the float32 bound by default."""
    real, fake = _features(300, 64, seed=14), _features(280, 64, seed=15, shift=0.1)
    cpu = kid_from_features(real, fake, subsets=10, subset_size=100, seed=3, **F64)
    cuda = kid_from_features(real.cuda(), fake.cuda(), subsets=10, subset_size=100, seed=3, **F64)
    assert _rel(cuda[0], cpu[0]) <= RTOL
    assert _rel(cuda[1], cpu[1]) <= RTOL
    assert _rel(mmd2_unbiased(real.cuda(), fake.cuda(), **F64), mmd2_unbiased(real, fake, **F64)) <= RTOL
    scale = _mean_cross_kernel(real, fake)
    assert abs(kid_from_features(real.cuda(), fake.cuda(), subsets=10, subset_size=100, seed=3)[0] - cpu[0]) <= (
        FLOAT32_ATOL_SCALE * scale
    )


def _mean_cross_kernel(real: torch.Tensor, fake: torch.Tensor) -> float:
    return float(((real.double() @ fake.double().T) / real.shape[1] + 1).pow(3).mean())


@pytest.mark.parametrize("shift", [0.0, 0.3])
@pytest.mark.parametrize("one_gram", [True, False])
def test_float32_default_agrees_with_float64(monkeypatch: pytest.MonkeyPatch, shift: float, one_gram: bool) -> None:
    """Pool3-like features (d = 2048, non-negative): the float32 default within 1e-5 of the kernel scale.

    Every subset value and the mean, for one distribution (KID ~ 0, where only the scale is meaningful) and a
    shifted one, with one Gram matrix or one per subset. Measured on this CPU: differences of ~4e-9 x the
    scale (~1e-6 of a KID of 2e-2), the float32 rounding of the kernel values, as with the float64 sums of
    before issue 17 (3.5e-9 and 9e-7 then): three orders of magnitude inside the tolerance.
    """
    import lightning_ganeval.metrics.kid as kid

    monkeypatch.setattr(kid, "_one_gram_is_cheaper", lambda *args: one_gram)
    real, fake = _features(500, 2048, seed=20).float(), _features(450, 2048, seed=21, shift=shift).float()
    g = torch.Generator().manual_seed(0)
    real_idx = torch.stack([torch.randperm(500, generator=g)[:150] for _ in range(4)])
    fake_idx = torch.stack([torch.randperm(450, generator=g)[:150] for _ in range(4)])
    exact = kid_subset_values(real, fake, real_idx, fake_idx, **F64)
    fast = kid_subset_values(real, fake, real_idx, fake_idx)
    scale = _mean_cross_kernel(real, fake)
    assert scale > 1
    assert float((fast - exact).abs().max()) <= FLOAT32_ATOL_SCALE * scale
    assert abs(mmd2_unbiased(real, fake) - mmd2_unbiased(real, fake, **F64)) <= FLOAT32_ATOL_SCALE * scale
    if shift:
        assert float(exact.min()) > 1e-3  # a clearly non-zero KID
        assert float(((fast - exact) / exact).abs().max()) <= 1e-5  # relative to the value itself too


def test_float32_is_ieee_under_a_lowered_matmul_precision() -> None:
    """``set_float32_matmul_precision("medium")`` allows bfloat16 products on oneDNN CPUs (TF32 on CUDA): KID
    forces IEEE float32 for its products (the same value bit for bit) and restores the caller's setting."""
    real, fake = _features(300, 256, seed=22).float(), _features(300, 256, seed=23, shift=0.2).float()
    expected = kid_from_features(real, fake, subsets=3, subset_size=100)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        assert kid_from_features(real, fake, subsets=3, subset_size=100) == expected
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


def test_bad_dtype() -> None:
    real = _features(20, 4, seed=0)
    with pytest.raises(ValueError, match=r"`dtype` must be torch.float32 or torch.float64, got torch.float16"):
        kid_from_features(real, real, subset_size=5, dtype=torch.float16)


def test_float32_overflow_falls_back_to_float64() -> None:
    """Finite features whose kernel overflows float32 (P³ with P ~ 1e27) get the float64 result, not inf."""
    real, fake = _features(60, 8, seed=24) * 1e13, _features(50, 8, seed=25, shift=0.5) * 1e13
    expected = kid_from_features(real, fake, subsets=3, subset_size=40, **F64)
    assert math.isfinite(expected[0])
    assert kid_from_features(real, fake, subsets=3, subset_size=40) == expected
    assert mmd2_unbiased(real, fake) == mmd2_unbiased(real, fake, **F64)


def test_subsets_share_their_matrix_products(monkeypatch: pytest.MonkeyPatch) -> None:
    """One subset's Gram matrix per subset, computed a batch of subsets at a time: the number of matrix products
    (each a parallel operation that waits for every thread, costly on a loaded machine) does not grow with the
    number of subsets, and the values equal those of one subset at a time (float64, 1e-10 relative). Before:
    one product per row block per subset (20 for 10 subsets, 80 for 40)."""
    import lightning_ganeval.metrics.kid as kid

    monkeypatch.setattr(kid, "_one_gram_is_cheaper", lambda *args: False)
    real, fake = _features(300, 16, seed=30), _features(280, 16, seed=31, shift=0.1)
    g = torch.Generator().manual_seed(0)
    real_idx = torch.stack([torch.randperm(300, generator=g)[:100] for _ in range(40)])
    fake_idx = torch.stack([torch.randperm(280, generator=g)[:100] for _ in range(40)])
    calls: list[int] = []
    for name in ("matmul", "bmm"):
        original = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, original=original, **k: calls.append(1) or original(*a, **k))
    few = kid_subset_values(real, fake, real_idx[:10], fake_idx[:10], **F64)
    products_few = len(calls)
    calls.clear()
    many = kid_subset_values(real, fake, real_idx, fake_idx, **F64)
    assert len(calls) == products_few
    assert torch.allclose(many[:10], few, rtol=RTOL, atol=0)
    for s in (0, 39):
        expected = _numpy_mmd2_unbiased(real.numpy()[real_idx[s]], fake.numpy()[fake_idx[s]])
        assert _rel(float(many[s]), expected) <= RTOL
