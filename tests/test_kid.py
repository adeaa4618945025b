"""KID: the unbiased MMD² against a direct numpy implementation and torch-fidelity's ``metric_kid``."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

from lightning_ganeval.metrics.kid import kid_from_features, kid_subset_values, mmd2_unbiased

RTOL = 1e-10  # float64 on both sides; only the summation order differs


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
    mean, std = kid_from_features(real, fake, subsets=1, subset_size=n, seed=5)
    assert _rel(mean, expected) <= RTOL
    assert _rel(tf_mean, expected) <= RTOL
    assert std == 0.0 == tf_std
    assert _rel(mmd2_unbiased(real, fake), expected) <= RTOL


def test_mmd2_unbiased_with_unequal_sizes_and_custom_kernel() -> None:
    real, fake = _features(300, 16, seed=2), _features(170, 16, seed=3, shift=0.2)
    for kwargs in ({}, {"degree": 2, "gamma": 0.5, "coef0": 0.0}, {"degree": 1, "gamma": 2.0, "coef0": -1.0}):
        expected = _numpy_mmd2_unbiased(real.numpy(), fake.numpy(), **kwargs)
        assert _rel(mmd2_unbiased(real, fake, **kwargs), expected) <= RTOL


def test_mmd2_unbiased_blocks_cover_every_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row blocks smaller than n (with a ragged last block) give the same sums as one block."""
    import lightning_ganeval.metrics.kid as kid

    real, fake = _features(103, 8, seed=4), _features(77, 8, seed=5, shift=0.1)
    expected = _numpy_mmd2_unbiased(real.numpy(), fake.numpy())
    monkeypatch.setattr(kid, "_BLOCK_ROWS", 10)
    assert _rel(mmd2_unbiased(real, fake), expected) <= RTOL


def test_several_subsets_equal_torch_fidelity_with_its_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given torch-fidelity's own subset indices, the subset values, mean and std (ddof=0) agree to rounding."""
    import lightning_ganeval.metrics.kid as kid

    n_real, n_fake, d, subsets, size, seed = 400, 350, 32, 12, 120, 2020
    real, fake = _features(n_real, d, seed=6), _features(n_fake, d, seed=7, shift=0.05)
    # torch-fidelity draws rng.choice(n1, size, replace=False) then rng.choice(n2, ...) for each subset.
    rng = np.random.RandomState(seed)
    draws = [(rng.choice(n_real, size, replace=False), rng.choice(n_fake, size, replace=False)) for _ in range(subsets)]
    real_idx = torch.from_numpy(np.stack([a for a, _ in draws]))
    fake_idx = torch.from_numpy(np.stack([b for _, b in draws]))
    monkeypatch.setattr(kid, "_BATCH_ELEMENTS", 5 * size * size)  # batches of 5 subsets: 5 + 5 + 2
    values = kid_subset_values(real, fake, real_idx, fake_idx)
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


def test_deterministic_in_seed_and_independent_of_device_dtype_and_batching(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_ganeval.metrics.kid as kid

    real, fake = _features(200, 16, seed=10), _features(180, 16, seed=11, shift=0.1)
    first = kid_from_features(real, fake, subsets=7, subset_size=50, seed=1)
    assert kid_from_features(real, fake, subsets=7, subset_size=50, seed=1) == first
    assert kid_from_features(real, fake, subsets=7, subset_size=50, seed=2) != first
    # float32 input is converted to float64 first: identical to passing the same values as float64.
    assert kid_from_features(real.float(), fake.float(), subsets=7, subset_size=50, seed=1) == kid_from_features(
        real.float().double(), fake.float().double(), subsets=7, subset_size=50, seed=1
    )
    monkeypatch.setattr(kid, "_BATCH_ELEMENTS", 1)  # one subset per batched matmul
    batched = kid_from_features(real, fake, subsets=7, subset_size=50, seed=1)
    assert _rel(batched[0], first[0]) <= RTOL
    assert _rel(batched[1], first[1]) <= RTOL


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
    """Same subsets (CPU generator) and float64 on both devices: equal to rounding."""
    real, fake = _features(300, 64, seed=14), _features(280, 64, seed=15, shift=0.1)
    cpu = kid_from_features(real, fake, subsets=10, subset_size=100, seed=3)
    cuda = kid_from_features(real.cuda(), fake.cuda(), subsets=10, subset_size=100, seed=3)
    assert _rel(cuda[0], cpu[0]) <= RTOL
    assert _rel(cuda[1], cpu[1]) <= RTOL
    assert _rel(mmd2_unbiased(real.cuda(), fake.cuda()), mmd2_unbiased(real, fake)) <= RTOL
