"""Fréchet distance and Inception Score against closed forms and the reference implementations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from torch_fidelity.metric_isc import isc_features_to_metric
from torchmetrics.image.fid import _compute_fid

from lightning_ganeval.frechet import (
    NEGATIVE_DISTANCE_RTOL,
    PSD_RTOL,
    FrechetReference,
    GaussianStats,
    frechet_distance,
)
from lightning_ganeval.inception_score_math import inception_score, inception_score_from_sums, split_boundaries

FID_RTOL = 1e-6  # relative agreement required with closed forms and the peers' formulas
IS_RTOL = 1e-9  # relative agreement required with torch-fidelity's Inception Score


def _sample_stats(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and np.cov of n correlated samples in d dimensions (singular when n <= d)."""
    mixing = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    x = rng.standard_normal((n, d)) @ mixing + shift
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _rel(ours: float, ref: float) -> float:
    return abs(ours - ref) / max(abs(ref), 1e-300)


def _orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# ------------------------------------------------------------------------------------------- Fréchet distance
@pytest.mark.parametrize(
    ("n", "d"),
    [(500, 64), (20, 64), (3, 64), (60, 512)],
)
def test_identical_statistics_give_zero(n: int, d: int) -> None:
    mu, sigma = _sample_stats(np.random.default_rng(n + d), n, d, shift=0.5)
    value = frechet_distance(mu, sigma, mu, sigma)
    assert isinstance(value, float)
    assert abs(value) <= 1e-6  # absolute, as required for identical statistics


@pytest.mark.parametrize("d", [1, 16, 64])
def test_diagonal_covariances_match_closed_form(d: int) -> None:
    rng = np.random.default_rng(d)
    # Eigenvalues spread over eight decades, 1e-6 ... 1e2.
    a = 10.0 ** rng.uniform(-6, 2, d)
    b = 10.0 ** rng.uniform(-6, 2, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    value = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert _rel(value, expected) <= FID_RTOL


@pytest.mark.parametrize("d", [8, 64])
def test_commuting_covariances_match_closed_form(d: int) -> None:
    rng = np.random.default_rng(100 + d)
    q = _orthogonal(rng, d)
    a = np.logspace(-6, 2, d)
    b = rng.permutation(np.logspace(-6, 2, d))
    sigma1, sigma2 = (q * a) @ q.T, (q * b) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert _rel(frechet_distance(mu1, sigma1, mu2, sigma2), expected) <= FID_RTOL


@pytest.mark.parametrize("d", [64, 256])
def test_singular_commuting_covariances_match_closed_form_tightly(d: int) -> None:
    # Half of each spectrum exactly 0 (rank-deficient, like N < d): the rank tolerance keeps the square roots of
    # rounding noise out, so the result is far closer than FID_RTOL (pytorch-fid's sqrtm is off by ~2e-8 here).
    rng = np.random.default_rng(200 + d)
    q = _orthogonal(rng, d)
    a, b = 10.0 ** rng.uniform(-3, 2, d), 10.0 ** rng.uniform(-3, 2, d)
    a[rng.random(d) < 0.5] = 0.0
    b[rng.random(d) < 0.5] = 0.0
    sigma1, sigma2 = (q * a) @ q.T, (q * b) @ q.T
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    expected = float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert _rel(frechet_distance(np.zeros(d), sigma1, np.zeros(d), sigma2), expected) <= 1e-12
    assert abs(frechet_distance(np.zeros(d), sigma1, np.zeros(d), sigma1)) <= 1e-6


def test_equal_covariances_give_squared_mean_distance() -> None:
    rng = np.random.default_rng(3)
    mu1, sigma = _sample_stats(rng, 300, 32)
    mu2 = mu1 + rng.standard_normal(32)
    assert _rel(frechet_distance(mu1, sigma, mu2, sigma), float(np.sum((mu1 - mu2) ** 2))) <= FID_RTOL


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("n1", "n2", "d"),
    [(400, 300, 64), (1000, 1000, 64), (32, 40, 64), (10, 200, 64), (60, 50, 64)],
    ids=["full-rank", "full-rank-large-n", "both-singular", "one-singular", "near-square"],
)
def test_random_statistics_match_pytorch_fid_and_torchmetrics(n1: int, n2: int, d: int) -> None:
    rng = np.random.default_rng(n1 * 7 + n2)
    mu1, sigma1 = _sample_stats(rng, n1, d)
    mu2, sigma2 = _sample_stats(rng, n2, d, shift=0.3)
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    pytorch_fid = float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
    t = [torch.from_numpy(v) for v in (mu1, sigma1, mu2, sigma2)]
    torchmetrics_value = float(_compute_fid(*t))
    assert np.isfinite(ours)
    assert _rel(ours, pytorch_fid) <= FID_RTOL
    assert _rel(ours, torchmetrics_value) <= FID_RTOL


def test_torch_and_numpy_inputs_agree_and_argument_order_is_symmetric() -> None:
    rng = np.random.default_rng(5)
    mu1, sigma1 = _sample_stats(rng, 200, 24)
    mu2, sigma2 = _sample_stats(rng, 150, 24, shift=1.0)
    from_numpy = frechet_distance(mu1, sigma1, mu2, sigma2)
    from_torch = frechet_distance(*(torch.from_numpy(v).float() for v in (mu1, sigma1, mu2, sigma2)))
    swapped = frechet_distance(mu2, sigma2, mu1, sigma1)
    assert _rel(swapped, from_numpy) <= 1e-9
    # float32 inputs are rounded to 7 digits before the float64 computation.
    assert _rel(from_torch, from_numpy) <= 1e-5


@pytest.mark.slow
def test_singular_pool3_sized_covariances() -> None:
    """d=2048 from 50-80 samples (N < d): identical statistics give 0, others a finite, real, positive value."""
    rng = np.random.default_rng(11)
    mu1, sigma1 = _sample_stats(rng, 50, 2048)
    mu2, sigma2 = _sample_stats(rng, 80, 2048, shift=0.1)
    reference = FrechetReference(mu1, sigma1)
    assert abs(reference.distance(mu1, sigma1)) <= 1e-6  # absolute
    value = reference.distance(mu2, sigma2)
    assert isinstance(value, float)
    assert np.isfinite(value)
    assert value > 0


def test_reference_reuse_equals_one_shot_distance() -> None:
    rng = np.random.default_rng(8)
    mu_ref, sigma_ref = _sample_stats(rng, 300, 32)
    reference = FrechetReference(mu_ref, sigma_ref)
    assert torch.allclose(reference.sqrt_cov @ reference.sqrt_cov, torch.from_numpy(sigma_ref), atol=1e-12)
    assert reference.trace == pytest.approx(np.trace(sigma_ref), rel=1e-12)
    for shift in (0.0, 0.5, 2.0):
        mu, sigma = _sample_stats(rng, 100, 32, shift=shift)
        assert reference.distance(mu, sigma) == pytest.approx(frechet_distance(mu, sigma, mu_ref, sigma_ref), rel=1e-12)
    stats = GaussianStats(n=300, mean=torch.from_numpy(mu_ref), cov=torch.from_numpy(sigma_ref))
    assert FrechetReference.from_stats(stats).distance(mu_ref, sigma_ref) <= 1e-9


def test_rounding_below_zero_is_reported_as_zero() -> None:
    # Identical statistics: the formula cancels to ±1e-12 (rounding), and the negative results are reported as
    # exactly 0 (an exact 0 from the raw formula would be a coincidence), positive ones stay tiny.
    mu, sigma = _sample_stats(np.random.default_rng(0), 500, 64)
    values = [frechet_distance(mu, sigma * scale, mu, sigma * scale) for scale in (1e-3, 0.1, 1.0, 3.0, 7.0, 1e3)]
    assert min(values) == 0.0
    assert all(0.0 <= v <= 1e-6 for v in values)


def _conditioning_bound(a: np.ndarray, b: np.ndarray, sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """What rounding allows for commuting covariances with spectra ``a`` and ``b`` (absolute, on the distance).

    The congruent product holds the eigenvalues a_i b_i up to a perturbation of size δ = d ε ‖Σ₁‖_F ‖Σ₂‖_F (the
    stored entries' rounding, carried through the factor of the other covariance); by Weyl each moves by at most
    δ, so its square root by at most min(√δ, δ / √(a_i b_i)), and the distance by twice their sum.
    """
    delta = a.size * np.finfo(np.float64).eps * np.linalg.norm(sigma1) * np.linalg.norm(sigma2)
    product = a * b
    moved = np.where(product > 0, delta / np.sqrt(np.maximum(product, 1e-300)), np.inf)
    return float(2 * np.sum(np.minimum(np.sqrt(delta), moved)))


@pytest.mark.parametrize("d", [64, 300])
@pytest.mark.parametrize("singular", ["none", "sigma1", "sigma2"])
@pytest.mark.parametrize("perturbed", [False, True])
def test_one_shot_cholesky_path_matches_closed_form(d: int, singular: str, perturbed: bool) -> None:
    # Commuting covariances, so the closed form is exact; d=300 runs the blocked triangular products. When one
    # covariance is singular (half its spectrum exactly 0), the other one is factored. `perturbed` adds a few ε
    # of symmetric noise per entry, as another BLAS rounds differently: the noise in the null space of the
    # singular one must not come back as square roots (~1e-8 relative; the cut-off at ε ‖Σ₁‖ ‖Σ₂‖ keeps it out).
    rng = np.random.default_rng(300 + d)
    q = _orthogonal(rng, d)
    a, b = 10.0 ** rng.uniform(-3, 2, d), 10.0 ** rng.uniform(-3, 2, d)
    if singular == "sigma1":
        a[rng.random(d) < 0.5] = 0.0
    if singular == "sigma2":
        b[rng.random(d) < 0.5] = 0.0
    sigma1, sigma2 = (q * a) @ q.T, (q * b) @ q.T
    if perturbed:
        for sigma in (sigma1, sigma2):
            noise = rng.standard_normal((d, d)) * 4 * np.finfo(np.float64).eps * np.abs(sigma).max()
            sigma += (noise + noise.T) / 2
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    error = abs(frechet_distance(mu1, sigma1, mu2, sigma2) - expected)
    # First-order bound from the conditioning (~1e-7 relative here); a lost eigenvalue is far beyond it.
    assert error <= _conditioning_bound(a, b, sigma1, sigma2) + 8 * np.finfo(np.float64).eps * expected
    # The noise square roots the cut-off removes would add ~1e-8 relative (5.6e-10 to 1.3e-9 on AMD EPYC before
    # the cut-off); with it, ≤ 5e-15 measured, with and without the perturbation: 1e-11 leaves 2000x for BLAS.
    assert error <= 1e-11 * expected


def test_one_shot_solves_one_symmetric_eigenvalue_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    # Full-rank (and one singular) covariances: a Cholesky factor and a single eigvalsh, no eigendecomposition.
    rng = np.random.default_rng(12)
    mu1, sigma1 = _sample_stats(rng, 400, 64)
    mu2, sigma2 = _sample_stats(rng, 30, 64, shift=0.2)  # singular: sigma1 is factored instead
    expected = FrechetReference(mu2, sigma2).distance(mu1, sigma1)
    calls: list[str] = []
    eigvalsh = torch.linalg.eigvalsh

    def counting_eigvalsh(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append("eigvalsh")
        return eigvalsh(*args, **kwargs)

    def no_eigh(*args: object, **kwargs: object) -> None:
        raise AssertionError("the one-shot path must not need an eigendecomposition here")

    monkeypatch.setattr(torch.linalg, "eigvalsh", counting_eigvalsh)
    monkeypatch.setattr(torch.linalg, "eigh", no_eigh)
    for args in ((mu1, sigma1, mu2, sigma2), (mu2, sigma2, mu1, sigma1)):
        calls.clear()
        assert _rel(frechet_distance(*args), expected) <= 1e-10
        assert calls == ["eigvalsh"]


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_barely_full_rank_covariances_match_pytorch_fid() -> None:
    # n = d + 2 samples: positive definite but ill-conditioned, on the Cholesky path.
    rng = np.random.default_rng(13)
    mu1, sigma1 = _sample_stats(rng, 66, 64)
    mu2, sigma2 = _sample_stats(rng, 70, 64, shift=0.3)
    expected = float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
    assert _rel(frechet_distance(mu1, sigma1, mu2, sigma2), expected) <= FID_RTOL


@pytest.mark.parametrize("negative", ["sigma1", "sigma2"])
def test_negative_definite_covariance_is_refused(negative: str) -> None:
    # Before: sigma = -I gave 0.0, because the negative eigenvalues were clipped to 0 under the square root.
    minus, plus = -np.eye(4), np.eye(4)
    sigma1, sigma2 = (minus, plus) if negative == "sigma1" else (plus, minus)
    with pytest.raises(ValueError, match=rf"`{negative}`.*not positive semi-definite"):
        frechet_distance(np.zeros(4), sigma1, np.zeros(4), sigma2)


def test_frechet_reference_refuses_non_psd_covariances() -> None:
    with pytest.raises(ValueError, match=r"`cov` is not positive semi-definite"):
        FrechetReference(np.zeros(3), np.diag([1.0, 1.0, -0.5]))
    with pytest.raises(ValueError, match=r"`cov`.*not positive semi-definite"):
        FrechetReference(np.zeros(3), np.eye(3)).distance(np.zeros(3), -np.eye(3))


def _zero_mean_distance(sigma1: np.ndarray, sigma2: np.ndarray, one_shot: bool) -> float:
    """frechet_distance, or FrechetReference(sigma2).distance, between zero-mean Gaussians."""
    zeros = np.zeros(len(sigma1))
    if one_shot:
        return frechet_distance(zeros, sigma1, zeros, sigma2)
    return FrechetReference(zeros, sigma2).distance(zeros, sigma1)


@pytest.mark.parametrize("one_shot", [True, False])
def test_negative_distance_beyond_rounding_is_an_error(one_shot: bool) -> None:
    # The negative eigenvalue of sigma1 lies in the null space of the (singular) reference, where the congruent
    # matrix cannot see it: tr Σ₁ + tr Σ₂ - 2 tr(Σ₁Σ₂)^½ = 0 + 1 - 2 = -1. Before: reported as 0.0.
    with pytest.raises(ValueError, match=r"negative.*not positive semi-definite"):
        _zero_mean_distance(np.diag([1.0, -1.0]), np.diag([1.0, 0.0]), one_shot)


@pytest.mark.parametrize("one_shot", [True, False])
def test_negative_distance_tolerance(one_shot: bool) -> None:
    # sigma1 = diag(1, -t) against the singular diag(1, 0): the raw formula gives exactly -t, and the scale is
    # |tr Σ₁| + |tr Σ₂| = 2 - t. Below the tolerance it is rounding (reported as 0.0), above it an error.
    sigma2 = np.diag([1.0, 0.0])
    assert _zero_mean_distance(np.diag([1.0, -0.1 * NEGATIVE_DISTANCE_RTOL]), sigma2, one_shot) == 0.0
    with pytest.raises(ValueError, match="negative"):
        _zero_mean_distance(np.diag([1.0, -10 * NEGATIVE_DISTANCE_RTOL]), sigma2, one_shot)


@pytest.mark.parametrize("one_shot", [True, False])
def test_rounding_size_negative_eigenvalues_are_accepted(one_shot: bool) -> None:
    # An eigenvalue of -PSD_RTOL / 100 x the largest (like a float32-rounded singular covariance) counts as 0;
    # -PSD_RTOL x 100 x the largest is refused.
    rng = np.random.default_rng(14)
    q = _orthogonal(rng, 16)
    b = np.linspace(1.0, 2.0, 16)
    sigma2 = (q * b) @ q.T
    for small, accepted in ((-PSD_RTOL / 100, True), (-PSD_RTOL * 100, False)):
        a = np.linspace(0.5, 1.5, 16)
        a[0] = small * a.max()
        sigma1 = (q * a) @ q.T
        expected = float(np.sum((np.sqrt(np.maximum(a, 0)) - np.sqrt(b)) ** 2) + a[0])
        if accepted:
            assert _rel(_zero_mean_distance(sigma1, sigma2, one_shot), expected) <= 1e-9
        else:
            with pytest.raises(ValueError, match="not positive semi-definite"):
                _zero_mean_distance(sigma1, sigma2, one_shot)


@pytest.mark.parametrize(
    ("mu1", "sigma1", "match"),
    [
        (np.zeros((3, 1)), np.eye(3), r"shape \(d,\)"),
        (np.zeros(3), np.eye(4), r"shape \(3, 3\)"),
        (np.array([0.0, np.nan, 0.0]), np.eye(3), "NaN or Inf"),
        (np.zeros(3), np.diag([1.0, np.inf, 1.0]), "NaN or Inf"),
        (np.zeros(2), np.eye(2), "2 features but the reference has 3"),
    ],
)
def test_frechet_distance_rejects_bad_inputs(mu1: np.ndarray, sigma1: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        frechet_distance(mu1, sigma1, np.zeros(3), np.eye(3))


def test_frechet_distance_rejects_complex_input() -> None:
    with pytest.raises(TypeError, match="real numbers"):
        frechet_distance(np.zeros(2, dtype=complex), np.eye(2), np.zeros(2), np.eye(2))


# ------------------------------------------------------------------------------------------- GaussianStats
def test_gaussian_stats_sums_round_trip() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 6)) + 2.0
    stats = GaussianStats(n=50, mean=torch.from_numpy(x.mean(0)), cov=torch.from_numpy(np.cov(x, rowvar=False)))
    np.testing.assert_allclose(stats.feature_sum.numpy(), x.sum(0), rtol=1e-12)
    np.testing.assert_allclose(stats.outer_sum.numpy(), x.T @ x, rtol=1e-12)
    back = GaussianStats.from_sums(50, stats.feature_sum, stats.outer_sum)
    np.testing.assert_allclose(back.cov.numpy(), stats.cov.numpy(), rtol=1e-10, atol=1e-12)
    assert back.n == 50


def test_gaussian_stats_is_frozen_float64_and_validated() -> None:
    stats = GaussianStats(n=3, mean=torch.zeros(2, dtype=torch.float32), cov=np.eye(2, dtype=np.float32))
    assert stats.mean.dtype == stats.cov.dtype == torch.float64
    assert stats.num_features == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.n = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"`cov` must have shape \(2, 2\)"):
        GaussianStats(n=3, mean=torch.zeros(2), cov=torch.eye(3))
    with pytest.raises(ValueError, match="non-negative integer"):
        GaussianStats(n=-1, mean=torch.zeros(2), cov=torch.eye(2))
    unknown = GaussianStats(n=None, mean=torch.zeros(2), cov=torch.eye(2))
    with pytest.raises(ValueError, match="n=None"):
        _ = unknown.outer_sum


# ------------------------------------------------------------------------------------------- Inception Score
def _numpy_split_scores(logits: np.ndarray, splits: int) -> np.ndarray:
    """Per-split IS straight from the definition, in numpy, as an independent check."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(p)
    scores = []
    for k in range(splits):
        part = p[k * n // splits : (k + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = np.sum(part * (np.log(part) - np.log(marginal)), axis=1)
        scores.append(np.exp(kl.mean()))
    return np.array(scores)


@pytest.mark.parametrize("splits", [1, 3, 10])
def test_uniform_predictions_give_one(splits: int) -> None:
    mean, std = inception_score(torch.full((40, 1008), 0.25), splits=splits)
    assert mean == pytest.approx(1.0, rel=IS_RTOL)
    assert std == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("num_classes", [2, 10, 100])
def test_balanced_one_hot_predictions_give_number_of_classes(num_classes: int) -> None:
    splits = 4
    n = splits * num_classes * 3  # every split holds every class equally often
    labels = torch.arange(n) % num_classes
    logits = torch.full((n, 1008), -50.0)
    logits[torch.arange(n), labels] = 50.0
    mean, std = inception_score(logits, splits=splits)
    assert mean == pytest.approx(num_classes, rel=IS_RTOL)
    assert std == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("n", "splits"), [(103, 10), (50, 10), (37, 3), (12, 1)])
def test_matches_torch_fidelity_without_shuffle(n: int, splits: int) -> None:
    logits = torch.randn(n, 1008, generator=torch.Generator().manual_seed(n), dtype=torch.float32) * 4
    ours = inception_score(logits, splits=splits)
    theirs = isc_features_to_metric(logits, splits=splits, shuffle=False)
    assert _rel(ours[0], theirs["inception_score_mean"]) <= IS_RTOL
    assert _rel(ours[1], theirs["inception_score_std"]) <= IS_RTOL if splits > 1 else ours[1] == 0.0


def test_std_is_population_std_of_split_scores() -> None:
    # ddof=0 like np.std / torch-fidelity / the reference code; torchmetrics' ddof=1 would be sqrt(10/9) larger.
    logits = np.random.default_rng(4).standard_normal((95, 20)) * 3
    scores = _numpy_split_scores(logits, 10)
    mean, std = inception_score(logits, splits=10)
    assert _rel(mean, float(scores.mean())) <= IS_RTOL
    assert _rel(std, float(scores.std(ddof=0))) <= IS_RTOL
    assert _rel(std, float(scores.std(ddof=1))) > 1e-3


def test_fewer_samples_than_splits_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one sample per split: got 9 samples for splits=10"):
        inception_score(torch.randn(9, 1008), splits=10)


@pytest.mark.parametrize(
    ("logits", "splits", "error", "match"),
    [
        (torch.randn(20), 2, ValueError, r"shape \(N, num_classes\)"),
        (torch.full((20, 4), float("nan")), 2, ValueError, "NaN or Inf"),
        (torch.randn(20, 4), 0, ValueError, "positive integer"),
    ],
)
def test_inception_score_rejects_bad_inputs(logits: torch.Tensor, splits: int, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        inception_score(logits, splits=splits)


def test_from_sums_refuses_empty_split() -> None:
    with pytest.raises(ValueError, match=r"split\(s\) \[1\] received no samples"):
        inception_score_from_sums(torch.ones(2, 3), torch.zeros(2), torch.tensor([3, 0]))


def test_split_boundaries_are_the_reference_ones() -> None:
    assert split_boundaries(11, 10) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11]
    assert split_boundaries(10_000, 10)[1] == 1000
