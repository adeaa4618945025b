"""The fixed per-evaluation cost (issue 17): the Fréchet distance against a definite reference through its
Cholesky factor, and FID∞ without recomputing the full-sample distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lightning_ganeval.frechet as gmath
from lightning_ganeval.accumulators import FIDMoments
from lightning_ganeval.frechet import FrechetReference, GaussianStats
from lightning_ganeval.metrics.base import RealData
from lightning_ganeval.metrics.fid import FID


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def _orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q


@pytest.mark.parametrize("d", [64, 300])
@pytest.mark.parametrize("generated_singular", [False, True])
def test_reference_distance_uses_the_cholesky_factor_and_matches_the_closed_form(
    monkeypatch: pytest.MonkeyPatch, d: int, generated_singular: bool
) -> None:
    """Commuting covariances (closed form exact); d = 300 runs the blocked triangular products. The definite
    reference takes the Cholesky route (one triangular congruence per distance) and agrees with the closed form
    and with the eigendecomposition route within 1e-10 relative, also for a singular generated covariance."""
    rng = np.random.default_rng(d)
    q = _orthogonal(rng, d)
    a, b = 10.0 ** rng.uniform(-3, 2, d), 10.0 ** rng.uniform(-3, 2, d)
    if generated_singular:
        a[rng.random(d) < 0.5] = 0.0
    sigma_gen, sigma_ref = (q * a) @ q.T, (q * b) @ q.T
    mu_gen, mu_ref = rng.standard_normal(d), rng.standard_normal(d)
    expected = float(np.sum((mu_gen - mu_ref) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    reference = FrechetReference(mu_ref, sigma_ref)
    calls: list[int] = []
    congruence = gmath._triangular_congruence
    monkeypatch.setattr(gmath, "_triangular_congruence", lambda *args: calls.append(1) or congruence(*args))
    value = reference.distance(mu_gen, sigma_gen)
    assert calls == [1]
    assert _rel(value, expected) <= 1e-10
    reference._chol = None  # the eigendecomposition factor, as before
    assert _rel(reference.distance(mu_gen, sigma_gen), value) <= 1e-10


def test_singular_reference_keeps_the_eigendecomposition_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20, 40))  # 20 samples, 40 features: a rank-19 reference covariance
    reference = FrechetReference(x.mean(0), np.cov(x.T))
    assert reference._chol is None
    monkeypatch.setattr(gmath, "_triangular_congruence", None)  # would raise if called
    y = rng.standard_normal((200, 40))
    assert math.isfinite(reference.distance(y.mean(0), np.cov(y.T)))


def test_fid_inf_solves_one_eigenvalue_problem_per_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """5 extrapolation points: 5 Fréchet distances (the last prefix is the full-sample FID), not 6."""
    d, n = 16, 100
    g = torch.Generator().manual_seed(0)
    real = torch.randn(500, d, generator=g, dtype=torch.float64)
    stats = GaussianStats(n=500, mean=real.mean(0), cov=real.T.cov())
    fid = FID(extrapolate=True, extrapolation_points=5)
    fid.set_real(RealData(stats=stats))
    fid.reset(n, torch.device("cpu"))
    fid.update(torch.randn(n, d, generator=g) + 0.3, torch.arange(n))
    calls: list[int] = []
    eigvalsh = torch.linalg.eigvalsh
    monkeypatch.setattr(torch.linalg, "eigvalsh", lambda *a, **k: calls.append(1) or eigvalsh(*a, **k))
    values = fid.compute()
    assert len(calls) == 5
    assert math.isfinite(values["fid_inf"])
    monkeypatch.setattr(torch.linalg, "eigvalsh", eigvalsh)
    assert values["fid"] == fid._distance(_merged(fid))


def _merged(fid: FID) -> FIDMoments:
    """The chunks merged in order, as FID.compute merges them."""
    merged = FIDMoments(num_features=fid._chunks[0].num_features)
    for chunk in fid._chunks:
        merged.merge(chunk)
    return merged


def _fitted_fid(d: int, n: int, seed: int) -> FID:
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(3 * d, d, generator=g, dtype=torch.float64)
    stats = GaussianStats(n=3 * d, mean=real.mean(0), cov=real.T.cov())
    fid = FID()
    fid.set_real(RealData(stats=stats))
    fid.reset(n, torch.device("cpu"))
    fid.update(torch.randn(n, d, generator=g) * 1.1 + 0.2, torch.arange(n))
    return fid


def test_fid_reads_the_covariance_once_without_symmetrising_or_scanning_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """d = 300 (the blocked congruence): no finiteness scan and no symmetrised copy of the d x d covariance per
    evaluation (each a pass over d² values and a new matrix), and the same distance as from the symmetrised
    covariance within 1e-12 relative (M2 is symmetric up to rounding). Before: one isfinite over d² values."""
    d = 300
    fid = _fitted_fid(d, 400, seed=1)
    merged = _merged(fid)
    mean, m2 = merged.mean, merged.m2
    symmetric = (m2 / 399 + (m2 / 399).T) / 2
    expected = fid._reference.distance(mean, symmetric)
    scanned: list[int] = []
    isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda x: scanned.append(x.numel()) or isfinite(x))
    value = fid.compute()["fid"]
    assert [size for size in scanned if size >= d * d] == []
    assert _rel(value, expected) <= 1e-12
    assert fid.compute()["fid"] == value  # the kept buffer gives the same value on the next evaluation


def test_fid_of_non_finite_statistics_still_blames_the_features() -> None:
    """The finiteness check runs only when the distance fails, and still names the features."""
    fid = _fitted_fid(16, 50, seed=2)
    fid._chunks[0].m2[3, 5] = float("inf")
    with pytest.raises(ValueError, match="`fid`: the features are not finite"):
        fid.compute()
