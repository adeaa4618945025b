"""Precision/recall against torch-fidelity's ``metric_prc``; density/coverage against a brute-force numpy version."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch_fidelity.metric_prc import prc_features_to_metric

from lightning_ganeval.metrics.precision_recall import precision_recall_density_coverage

KEYS = ("precision", "recall", "density", "coverage")


def _brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Naeem et al.'s definitions with closed balls, from explicit differences (no Gram-matrix trick, no blocks).

    The radius is the k-th smallest distance to the *other* rows of the same set (self masked with +inf).
    """

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def radii(a: np.ndarray) -> np.ndarray:
        d = dist(a, a)
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    r_real, r_fake = radii(real), radii(fake)
    d_rf = dist(real, fake)  # (n, m)
    in_real_ball = d_rf <= r_real[:, None]
    return {
        "precision": float(in_real_ball.any(axis=0).mean()),
        "recall": float((d_rf <= r_fake[None, :]).any(axis=1).mean()),
        "density": float(in_real_ball.sum() / (k * len(fake))),
        "coverage": float(in_real_ball.any(axis=1).mean()),
    }


def _torch_fidelity(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    # torch-fidelity's convention: features_1 (input1) is the GENERATED set, features_2 the real one.
    return prc_features_to_metric(fake, real, prc_neighborhood=k, prc_batch_size=10000, verbose=False)


def _same_fraction(ours: float, theirs: float, count: int) -> bool:
    """torch-fidelity returns a float32 mean of 0/1 values; equal counts are what 'equal' means here."""
    return round(ours * count) == round(theirs * count)


def _gaussian(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * scale + shift


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_equal_torch_fidelity_on_continuous_features(k: int) -> None:
    # Partly overlapping clouds, so that neither metric is 0 or 1; ragged blocks of 300 rows.
    real, fake = _gaussian(1200, 32, seed=0), _gaussian(1000, 32, seed=1, shift=0.15, scale=0.9)
    ours = precision_recall_density_coverage(real, fake, k=k, block_size=300)
    theirs = _torch_fidelity(real, fake, k)
    assert 0.05 < ours["precision"] < 0.95
    assert 0.05 < ours["recall"] < 0.95
    assert _same_fraction(ours["precision"], theirs["precision"], 1000)
    assert _same_fraction(ours["recall"], theirs["recall"], 1200)


def test_all_four_equal_brute_force_on_continuous_features() -> None:
    real, fake = _gaussian(150, 8, seed=2), _gaussian(130, 8, seed=3, shift=0.3)
    ours = precision_recall_density_coverage(real, fake, k=4, block_size=64)
    expected = _brute_force(real.double().numpy(), fake.double().numpy(), k=4)
    # Fractions of the same integer counts, divided alike: exactly equal.
    assert ours == expected


def test_ties_on_integer_features_match_torch_fidelity_and_brute_force() -> None:
    """On a small integer lattice, many distances equal a radius exactly, and duplicates abound.

    Squared distances of small integers are exact in float32 and float64 alike, so every implementation sees
    the same ties; closed balls (``<=``) and the self-excluding radius decide them.
    """
    g = torch.Generator().manual_seed(4)
    real = torch.randint(0, 3, (120, 3), generator=g).float()
    fake = torch.randint(0, 4, (90, 3), generator=g).float()
    expected = _brute_force(real.double().numpy(), fake.double().numpy(), k=3)
    theirs = _torch_fidelity(real, fake, 3)
    for block_size in (7, 10_000):
        ours = precision_recall_density_coverage(real, fake, k=3, block_size=block_size)
        for key in KEYS:
            assert ours[key] == expected[key], (key, block_size)
        assert _same_fraction(ours["precision"], theirs["precision"], 90)
        assert _same_fraction(ours["recall"], theirs["recall"], 120)
    assert 0 < expected["precision"] < 1


def test_zero_radii_of_duplicated_real_samples() -> None:
    """Each of the 27 points of {0,1,2}³ repeated 4 times: with k = 3 every real radius is exactly 0."""
    lattice = torch.cartesian_prod(*[torch.arange(3.0)] * 3)
    real = lattice.repeat(4, 1)[torch.randperm(108, generator=torch.Generator().manual_seed(5))]
    fake = torch.randint(0, 4, (60, 3), generator=torch.Generator().manual_seed(6)).float()
    out = precision_recall_density_coverage(real, fake, k=3, block_size=50)
    on_lattice = (fake < 3).all(dim=1)
    # A fake is inside a real ball only on a lattice point, where it lies in the 4 copies' balls.
    assert out["precision"] == on_lattice.double().mean().item()
    assert out["density"] == 4 * on_lattice.sum().item() / (3 * 60)
    hit = {tuple(row) for row in fake[on_lattice].tolist()}
    assert out["coverage"] == len(hit) * 4 / 108
    assert out == _brute_force(real.double().numpy(), fake.double().numpy(), k=3)


def test_hand_computed_closed_balls() -> None:
    """Real points 0, 1, 2, 3 on a line with k = 1 have radius 1; a point at distance exactly 1 is inside."""
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    fake = torch.tensor([[0.5], [4.0], [9.0], [10.0]])  # fake radii (k=1): 3.5, 3.5, 1, 1
    out = precision_recall_density_coverage(real, fake, k=1)
    # 0.5 lies in the balls of 0 and 1, 4.0 (distance exactly 1) in the ball of 3, 9 and 10 in none.
    assert out["precision"] == 2 / 4
    assert out["density"] == (2 + 1) / (1 * 4)
    # Real balls holding a fake: those of 0, 1 and 3.
    assert out["coverage"] == 3 / 4
    # Real points within a fake ball: 0, 1, 2, 3 are all within 3.5 of 0.5 or 4.0.
    assert out["recall"] == 1.0


def test_identical_sets_and_duplicates() -> None:
    x = _gaussian(50, 4, seed=5)
    same = precision_recall_density_coverage(x, x.clone(), k=3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    # Each real point's ball holds the fake copy of itself and of its 3 nearest neighbours, at least.
    assert same["density"] >= (3 + 1) / 3
    # A fake set collapsed on one real sample (mode collapse): every fake radius is 0.
    collapsed = x[:1].repeat(20, 1)
    out = precision_recall_density_coverage(x, collapsed, k=3)
    assert out["precision"] == 1.0
    assert out["recall"] == 1 / 50  # only the real sample itself lies within the 0-radius fake balls
    expected = _brute_force(x.double().numpy(), collapsed.double().numpy(), k=3)
    assert out == expected
    assert 1 / 50 <= out["coverage"] < 0.2  # x[0]'s own ball, and those of the few points it neighbours


def test_block_size_and_device_argument_do_not_change_the_result() -> None:
    real, fake = _gaussian(97, 6, seed=6), _gaussian(83, 6, seed=7, shift=0.2)
    reference = precision_recall_density_coverage(real, fake, k=3, block_size=10_000)
    for block_size in (1, 5, 96, 97):
        assert precision_recall_density_coverage(real, fake, k=3, block_size=block_size) == reference
    assert precision_recall_density_coverage(real, fake, k=3, device="cpu") == reference
    assert precision_recall_density_coverage(real.double(), fake.double(), k=3) == reference


@pytest.mark.parametrize(
    ("kwargs", "n_real", "n_fake", "message"),
    [
        ({"k": 0}, 10, 10, "`k` must be an integer >= 1, got 0"),
        ({"k": 2.0}, 10, 10, "`k` must be an integer >= 1, got 2.0"),
        ({"k": 5}, 5, 10, "got k=5 with 5 `real` rows"),
        ({"k": 4}, 10, 4, "got k=4 with 4 `fake` rows"),
        ({"block_size": 0}, 10, 10, "`block_size` must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments(kwargs: dict, n_real: int, n_fake: int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        precision_recall_density_coverage(_gaussian(n_real, 3, seed=0), _gaussian(n_fake, 3, seed=1), **kwargs)


def test_bad_inputs() -> None:
    x = _gaussian(10, 3, seed=0)
    with pytest.raises(ValueError, match="same feature dimension, got 3 and 4"):
        precision_recall_density_coverage(x, _gaussian(10, 4, seed=1))
    with pytest.raises(ValueError, match=re.escape("`real` must be a 2-D (rows, features) tensor, got shape (10,)")):
        precision_recall_density_coverage(x[:, 0], x)
    with pytest.raises(ValueError, match="must be finite"):
        precision_recall_density_coverage(x, torch.full_like(x, float("inf")))
    with pytest.raises(TypeError, match=r"`fake` must be a torch\.Tensor"):
        precision_recall_density_coverage(x, x.numpy())


@pytest.mark.gpu
def test_cuda_equals_cpu_and_brute_force() -> None:
    real, fake = _gaussian(150, 8, seed=8), _gaussian(130, 8, seed=9, shift=0.3)
    expected = _brute_force(real.double().numpy(), fake.double().numpy(), k=3)
    assert precision_recall_density_coverage(real.cuda(), fake.cuda(), k=3, block_size=64) == expected
    assert precision_recall_density_coverage(real, fake, k=3, device="cuda") == expected


def _dyadic_ties(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real rows in pairs (x, x + δ) and one fake row x + (δ permuted) per pair, on a grid of step 1/64.

    Every value, square and sum is exact in float64, so ‖fake − x‖² = ‖δ‖² is *exactly* x's k = 1 radius (its
    nearest neighbour is x + δ): a fake row on the boundary of a closed real ball, for every pair. In float32
    the d = 2048-term inner products of values up to 8 round at ~1e-5, so a float32 decision flips about half
    of these ties.
    """
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 512, (n, d), generator=g, dtype=torch.float64) / 64
    delta = torch.randint(-3, 4, (n, d), generator=g, dtype=torch.float64) / 64
    real = torch.cat([base, base + delta])
    shuffled = torch.stack([row[torch.randperm(d, generator=g)] for row in delta])
    return real.float(), (base + shuffled).float()


def test_float32_default_equals_float64_on_exact_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    """The float32 distances settle every comparison near a radius in float64: the counts are float64's.

    With the float32 error bound set to 0 (no float64 recheck) the same call gets ties wrong, which shows that
    the recheck decides them (and that this test can fail).
    """
    import lightning_ganeval.metrics.precision_recall as pr

    real, fake = _dyadic_ties(40, 2048, seed=10)
    exact = precision_recall_density_coverage(real, fake, k=1, dtype=torch.float64)
    assert exact["precision"] == 1.0  # every fake row is on the boundary of its pair's ball, and inside it
    for block_size in (7, 10_000):
        assert precision_recall_density_coverage(real, fake, k=1, block_size=block_size) == exact
    monkeypatch.setattr(pr, "_float32_error_scale", lambda d: 0.0)
    assert precision_recall_density_coverage(real, fake, k=1)["precision"] < 1.0


def test_float32_default_equals_float64_on_pool3_like_features() -> None:
    """Continuous non-negative features, d = 2048, with duplicated rows: identical counts in both dtypes."""
    g = torch.Generator().manual_seed(11)
    real = (torch.randn(300, 2048, generator=g) + 0.5).abs()
    fake = (torch.randn(260, 2048, generator=g) * 1.1 + 0.5).abs()
    real[150:170] = real[100:120]  # duplicates: radii of exactly 0 for k = 1
    fake[:10] = real[:10]
    for k in (1, 3):
        exact = precision_recall_density_coverage(real, fake, k=k, dtype=torch.float64)
        assert precision_recall_density_coverage(real, fake, k=k, block_size=64) == exact
        assert 0 < exact["recall"] < 1


def test_rows_with_more_near_ties_than_kept_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows whose radius band holds more entries than the stored candidates are recomputed against every row."""
    import lightning_ganeval.metrics.precision_recall as pr

    g = torch.Generator().manual_seed(12)
    real = torch.randint(0, 2, (80, 4), generator=g).float()  # 16 distinct rows, ~5 copies each
    fake = torch.randint(0, 3, (70, 4), generator=g).float()
    expected = _brute_force(real.double().numpy(), fake.double().numpy(), k=3)
    monkeypatch.setattr(pr, "_SPARE_CANDIDATES", 0)
    calls = []
    original = pr._exact_squared_distances
    monkeypatch.setattr(pr, "_exact_squared_distances", lambda *a: calls.append(len(a[1])) or original(*a))
    assert precision_recall_density_coverage(real, fake, k=3, block_size=16) == expected
    assert calls[0] > 4 * 80  # the radii of both sets were settled from whole rows, not from k + 1 candidates


def test_float32_is_ieee_under_a_lowered_matmul_precision() -> None:
    """``set_float32_matmul_precision("medium")`` (bfloat16 products on oneDNN CPUs, TF32 on CUDA) changes nothing."""
    real, fake = _dyadic_ties(20, 2048, seed=13)
    expected = precision_recall_density_coverage(real, fake, k=1, dtype=torch.float64)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        assert precision_recall_density_coverage(real, fake, k=1) == expected
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


def test_bad_dtype() -> None:
    x = _gaussian(10, 3, seed=0)
    with pytest.raises(ValueError, match=r"`dtype` must be torch.float32 or torch.float64, got torch.bfloat16"):
        precision_recall_density_coverage(x, x, dtype=torch.bfloat16)


def test_distance_blocks_are_written_into_buffers_allocated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every float32 distance block (within sets and across) is written into a buffer made once per pass, not
    into a new matrix (a fresh allocation costs a page fault per 4 KiB), and the cross distances come in blocks
    of at most 1024 rows whatever ``block_size``: memory ~6 x 1024 x m bytes, not 9 x block_size x m. Before:
    a new matrix per block, 2500 x 2100 at once across the sets."""
    g = torch.Generator().manual_seed(20)
    real = (torch.randn(2500, 64, generator=g) + 0.5).abs()
    fake = (torch.randn(2100, 64, generator=g) * 1.1 + 0.5).abs()
    expected = precision_recall_density_coverage(real, fake, k=3, dtype=torch.float64)
    products: list[tuple[tuple[int, ...], int | None]] = []
    matmul = torch.matmul

    def recording(a: torch.Tensor, b: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        result = matmul(a, b, out=out) if out is not None else matmul(a, b)
        if a.dtype == torch.float32 and a.shape[0] >= 100 and b.shape[-1] >= 100:
            products.append((tuple(result.shape), None if out is None else out.untyped_storage().data_ptr()))
        return result

    monkeypatch.setattr(torch, "matmul", recording)
    assert precision_recall_density_coverage(real, fake, k=3) == expected
    assert len(products) > 3
    assert all(storage is not None for _, storage in products)
    assert len({storage for _, storage in products}) <= 3  # real set, generated set, cross
    assert max(shape[0] for shape, _ in products) <= 1024
