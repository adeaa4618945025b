"""Fréchet distance in float64: Gaussian statistics, the cached reference, the one-shot distance (pure, no collectives).

The Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) is

    d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁ Σ₂)^½.

The last trace is taken from a *symmetric* eigenvalue problem. With Σ₂ = V Λ Vᵀ (``torch.linalg.eigh``) and
Q = V Λ₊^½ (Λ₊ = max(Λ, 0)), the matrix Qᵀ Σ₁ Q is similar to Σ₂^½ Σ₁ Σ₂^½ and to Σ₁ Σ₂, and positive
semi-definite, so tr (Σ₁ Σ₂)^½ = Σᵢ √max(λᵢ(Qᵀ Σ₁ Q), 0). Compared with ``scipy.linalg.sqrtm`` (pytorch-fid) or
the eigenvalues of the non-symmetric product Σ₁ Σ₂ (torchmetrics, torch-fidelity) this is cheaper, real by
construction and never NaN, also for the singular covariances of fewer samples than features. The square root
of the reference covariance is computed once by :class:`FrechetReference`, because the real statistics do not
change during training; only one ``eigvalsh`` remains per evaluation. The one-shot :func:`frechet_distance`
needs no eigendecomposition either: with a Cholesky factor Σ₂ = L Lᵀ (or of Σ₁), Lᵀ Σ₁ L is similar to Σ₁ Σ₂,
so one ``eigvalsh`` suffices; only when both covariances are singular does it fall back to the factor above.

Covariances must be positive semi-definite. A congruent matrix (Qᵀ Σ₁ Q, Lᵀ Σ₁ L) has as many negative
eigenvalues as Σ₁ (Sylvester's law of inertia, for an invertible factor), so an eigenvalue below −:data:`PSD_RTOL`
× the largest is refused instead of being clipped to 0, and so is a distance below −:data:`NEGATIVE_DISTANCE_RTOL`
× (tr Σ₁ + tr Σ₂ + ‖μ₁ − μ₂‖²), which a negative direction in the null space of a singular factor produces.

Eigenvalues below a numerical-rank tolerance (λ_max · d · ε for Σ₂, the ``np.linalg.matrix_rank`` convention;
λ_max · √r · ε for Qᵀ Σ₁ Q, or ε ‖Σ₁‖_F ‖Σ₂‖_F when larger: the rounding of Σ₁'s entries in its null space,
carried through the factor of Σ₂) are treated as exactly 0. They are rounding noise of size ~ε‖Σ‖, and their square
roots (~1e-8 √‖Σ‖ each) would otherwise add up: for singular covariances (fewer samples than features) this keeps
the result within ~1e-14 relative of the closed form instead of ~1e-8, and identical statistics at ~1e-9
instead of ~1e-5.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "NEGATIVE_DISTANCE_RTOL",
    "PSD_RTOL",
    "FrechetReference",
    "GaussianStats",
    "frechet_distance",
]


def _as_float64(value: Any, name: str, device: torch.device | str | None = None) -> Tensor:
    """A float64 tensor from a tensor or array-like; integer and floating inputs only."""
    tensor = torch.as_tensor(value)
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold real numbers, got dtype {tensor.dtype}.")
    return tensor.to(device=device if device is not None else tensor.device, dtype=torch.float64)


_EPS = torch.finfo(torch.float64).eps

PSD_RTOL = 1e-5
"""A covariance is refused as not positive semi-definite when an eigenvalue is below −PSD_RTOL × its largest
|eigenvalue|. Rounding a singular float64 covariance to float32 (as some tools store it) moves its zero
eigenvalues to about −1e-8 × λ_max (measured, d = 256 to 2048; the bound is ~6e-8 · √d · max|Σᵢⱼ|, ≈ 3e-6 λ_max
at d = 2048), which this tolerance accepts."""

NEGATIVE_DISTANCE_RTOL = 1e-6
"""A squared Fréchet distance below −NEGATIVE_DISTANCE_RTOL × (|tr Σ₁| + |tr Σ₂| + ‖μ₁ − μ₂‖²) is an error, not
rounding; above it, a negative value is reported as 0. Measured rounding on identical statistics (d ≤ 512, full
rank and singular, scales 1e-3 to 1e3) stays within ±1.3e-10 of that sum."""


def _rank_tolerance(eigenvalues: Tensor, factor: float) -> Tensor:
    """λ_max · factor · ε: eigenvalues below this are indistinguishable from rounding noise."""
    if eigenvalues.numel() == 0:
        return eigenvalues.new_zeros(())
    return eigenvalues.abs().max() * factor * torch.finfo(eigenvalues.dtype).eps


def _check_gaussian(mean: Tensor, cov: Tensor, mean_name: str, cov_name: str) -> None:
    if mean.ndim != 1:
        raise ValueError(f"`{mean_name}` must be a vector of shape (d,), got shape {tuple(mean.shape)}.")
    d = mean.shape[0]
    if cov.shape != (d, d):
        raise ValueError(
            f"`{cov_name}` must be a square matrix of shape ({d}, {d}) to match `{mean_name}`, "
            f"got shape {tuple(cov.shape)}."
        )
    if not bool(torch.isfinite(mean).all()):
        raise ValueError(f"`{mean_name}` contains NaN or Inf.")
    if not bool(torch.isfinite(cov).all()):
        raise ValueError(f"`{cov_name}` contains NaN or Inf.")


@dataclass(frozen=True)
class GaussianStats:
    """Sample mean and covariance of a set of feature vectors, in float64.

    Attributes:
        n: Number of samples the statistics were computed from; ``None`` when unknown (statistics files from
            other tools, such as pytorch-fid's ``--save-stats``, store only ``mu`` and ``sigma``).
        mean: ``(d,)`` float64 sample mean.
        cov: ``(d, d)`` float64 sample covariance, normalised by ``n - 1`` like ``np.cov``, pytorch-fid,
            torch-fidelity and torchmetrics (StyleGAN divides by ``n``).

    Inputs that are tensors or arrays of another floating dtype are converted to float64 on their device.
    """

    n: int | None
    mean: Tensor
    cov: Tensor

    def __post_init__(self) -> None:
        mean = _as_float64(self.mean, "mean")
        cov = _as_float64(self.cov, "cov", mean.device)
        if mean.ndim != 1:
            raise ValueError(f"`mean` must have shape (d,), got shape {tuple(mean.shape)}.")
        if cov.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(
                f"`cov` must have shape ({mean.shape[0]}, {mean.shape[0]}) to match `mean`, got {tuple(cov.shape)}."
            )
        if self.n is not None and (isinstance(self.n, bool) or int(self.n) != self.n or self.n < 0):
            raise ValueError(f"`n` must be a non-negative integer or None, got {self.n!r}.")
        # Frozen dataclass: the normalised values are written once, here.
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)
        if self.n is not None:
            object.__setattr__(self, "n", int(self.n))

    @property
    def num_features(self) -> int:
        """The feature dimension d."""
        return int(self.mean.shape[0])

    def _known_n(self, what: str) -> int:
        if self.n is None:
            raise ValueError(f"`{what}` needs the sample count, but these statistics have n=None (unknown).")
        return self.n

    @property
    def feature_sum(self) -> Tensor:
        """Σx = n·μ, shape ``(d,)``. Raises ``ValueError`` when ``n`` is unknown."""
        return self.mean * self._known_n("feature_sum")

    @property
    def outer_sum(self) -> Tensor:
        """Σxxᵀ = (n − 1)·Σ + n·μμᵀ, shape ``(d, d)``. Raises ``ValueError`` when ``n`` is unknown."""
        n = self._known_n("outer_sum")
        return self.cov * (n - 1) + torch.outer(self.mean, self.mean) * n

    @classmethod
    def from_sums(cls, n: int, feature_sum: Any, outer_sum: Any) -> GaussianStats:
        """Statistics from raw sums Σx and Σxxᵀ (the layout of torchmetrics' FID states and StyleGAN caches).

        The raw-sum formula cancels catastrophically when ‖μ‖ ≫ σ; prefer :class:`~lightning_ganeval.accumulators.
        FIDMoments` for accumulation. This is for reading sums that others stored.

        Args:
            n: Number of samples, at least 2.
            feature_sum: Σx, shape ``(d,)``.
            outer_sum: Σxxᵀ, shape ``(d, d)``.
        """
        if n < 2:
            raise ValueError(f"A covariance needs at least 2 samples, got n={n}.")
        s = _as_float64(feature_sum, "feature_sum")
        ss = _as_float64(outer_sum, "outer_sum", s.device)
        mean = s / n
        cov = (ss - torch.outer(s, mean)) / (n - 1)
        return cls(n=n, mean=mean, cov=(cov + cov.T) / 2)

    def to(self, device: torch.device | str) -> GaussianStats:
        """The same statistics on another device."""
        return GaussianStats(n=self.n, mean=self.mean.to(device), cov=self.cov.to(device))


class FrechetReference:
    """Fixed reference statistics (the real data) with their covariance square root computed once.

    Every :meth:`distance` call then costs two matrix products and one symmetric eigenvalue problem
    (``eigvalsh``) instead of a full matrix square root.

    Args:
        mean: Reference mean μ_ref, shape ``(d,)`` (tensor or array).
        cov: Reference covariance Σ_ref, shape ``(d, d)``, symmetric positive semi-definite. Eigenvalues below
            the rank tolerance (including slightly negative ones from rounding) count as 0; one below
            −:data:`PSD_RTOL` × the largest raises ``ValueError``.
        device: Where to keep the cached factors and compute distances; default: the device of ``cov``.

    Example:
        >>> import torch
        >>> ref = FrechetReference(torch.zeros(3), torch.eye(3))
        >>> round(ref.distance(torch.ones(3), 4 * torch.eye(3)), 6)  # 3 + 3 * (2 - 1) ** 2
        6.0
    """

    def __init__(self, mean: Any, cov: Any, *, device: torch.device | str | None = None) -> None:
        cov_t = _as_float64(cov, "cov", device)
        mean_t = _as_float64(mean, "mean", cov_t.device)
        _check_gaussian(mean_t, cov_t, "mean", "cov")
        cov_t = (cov_t + cov_t.T) / 2
        self._sqrt_eigenvalues, self._factor = _psd_square_root_factor(cov_t, "cov")
        # A definite reference (real statistics of more samples than features) also gets its Cholesky factor:
        # Lᵀ Σ L costs about 1.3 d³ multiply-adds per distance against 3 d³ for Qᵀ Σ Q (L is triangular).
        self._chol = _cholesky_if_definite(cov_t)
        self._work: tuple[Tensor, Tensor] | None = None  # the congruence's buffers, made at the first distance
        self._mean = mean_t
        self._trace = float(torch.trace(cov_t))
        self._norm = torch.linalg.matrix_norm(cov_t)  # Frobenius, for the rank tolerance of each distance
        self._trace_sqrt = float(self._sqrt_eigenvalues.sum())

    @classmethod
    def from_stats(cls, stats: GaussianStats, *, device: torch.device | str | None = None) -> FrechetReference:
        """A reference built from :class:`GaussianStats`."""
        return cls(stats.mean, stats.cov, device=device)

    @property
    def num_features(self) -> int:
        """The feature dimension d."""
        return int(self._mean.shape[0])

    @property
    def device(self) -> torch.device:
        """Device of the cached factors; :meth:`distance` moves its inputs here."""
        return self._mean.device

    @property
    def mean(self) -> Tensor:
        """Reference mean, float64."""
        return self._mean

    @property
    def trace(self) -> float:
        """tr Σ_ref."""
        return self._trace

    @property
    def trace_sqrt(self) -> float:
        """tr Σ_ref^½ (the sum of the square roots of the eigenvalues above the rank tolerance)."""
        return self._trace_sqrt

    @property
    def sqrt_cov(self) -> Tensor:
        """Σ_ref^½ = V Λ₊^½ Vᵀ, float64 ``(d, d)``, numerically zero eigenvalues dropped.

        Materialised on demand; :meth:`distance` does not need it.
        """
        return self._factor @ (self._factor / self._sqrt_eigenvalues).T

    def distance(self, mean: Any, cov: Any) -> float:
        """Fréchet distance between N(mean, cov) and the reference.

        Args:
            mean: Mean, shape ``(d,)``.
            cov: Covariance, shape ``(d, d)``, symmetric (up to rounding; only its products with the reference
                factor's lower triangle are read); may be singular (fewer samples than features).

        Returns:
            The squared Fréchet distance, a finite float ≥ 0 (rounding below 0, down to
            −:data:`NEGATIVE_DISTANCE_RTOL` × (tr Σ + tr Σ_ref + ‖μ − μ_ref‖²), is reported as 0).

        Raises:
            ValueError: Wrong shapes, NaN/Inf, or ``cov`` not positive semi-definite beyond rounding (an
                eigenvalue of the congruent matrix below −:data:`PSD_RTOL` × the largest, or a distance negative
                beyond the tolerance above).
        """
        cov_t = _as_float64(cov, "cov", self.device)
        mean_t = _as_float64(mean, "mean", self.device)
        if mean_t.ndim != 1 or cov_t.shape != (mean_t.shape[0], mean_t.shape[0]):
            _check_gaussian(mean_t, cov_t, "mean", "cov")  # raises, naming the shapes
        if mean_t.shape[0] != self.num_features:
            raise ValueError(
                f"`mean` has {mean_t.shape[0]} features but the reference has {self.num_features}; "
                "both must come from the same feature layer."
            )

        def check_inputs() -> None:
            _check_gaussian(mean_t, cov_t, "mean", "cov")

        if self._chol is not None:
            if self._work is None and self.num_features >= 256:
                self._work = (torch.empty_like(self._chol), torch.zeros_like(self._chol))
            product = _triangular_congruence(self._chol, cov_t, self._work)
        else:
            product = _lower_gram(self._factor, cov_t @ self._factor)
        trace_sqrt_product = _trace_sqrt_product(
            product, "cov", check_inputs, torch.linalg.matrix_norm(cov_t) * self._norm
        )
        diff = mean_t - self._mean
        return _distance_value(diff.dot(diff), torch.trace(cov_t), self._trace, trace_sqrt_product, "cov", check_inputs)


def _psd_square_root_factor(cov: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """(Λ₊^½, Q = V Λ₊^½) of a symmetric PSD ``cov`` = V Λ Vᵀ, columns of numerically zero eigenvalues dropped.

    Qᵀ Σ Q then has the same non-zero eigenvalues as cov^½ Σ cov^½, and is smaller when ``cov`` is
    rank-deficient. Raises ``ValueError`` when ``cov`` has an eigenvalue below −PSD_RTOL × max|λ|.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    _check_psd(eigenvalues, f"`{name}`")
    # The rank uses np.linalg.matrix_rank's tolerance, λ_max · d · ε.
    keep = eigenvalues > _rank_tolerance(eigenvalues, eigenvalues.numel())
    sqrt_eigenvalues = eigenvalues[keep].sqrt()
    return sqrt_eigenvalues, eigenvectors[:, keep] * sqrt_eigenvalues


def _check_psd(eigenvalues: Tensor, what: str) -> None:
    """Raise when the smallest eigenvalue is below −PSD_RTOL × the largest magnitude (not PSD beyond rounding)."""
    if eigenvalues.numel() == 0:
        return
    smallest, largest = float(eigenvalues.min()), float(eigenvalues.abs().max())
    if smallest < -PSD_RTOL * largest:
        raise ValueError(
            f"{what} is not positive semi-definite: eigenvalue {smallest:.6g} is below -{PSD_RTOL:g} x "
            f"{largest:.6g} (the largest |eigenvalue|). A covariance matrix must be symmetric positive "
            "semi-definite; these statistics are invalid."
        )


def _noise_scale(cov1: Tensor, cov2: Tensor) -> Tensor:
    """‖Σ₁‖_F ‖Σ₂‖_F: the size of the rounding a congruence by a factor of one covariance gives the other.

    The stored entries of Σ₁ carry rounding of ~ε ‖Σ₁‖ also in its null space, and the congruence multiplies it
    by up to ‖Σ₂‖, so eigenvalues of the product below ε ‖Σ₁‖ ‖Σ₂‖ cannot be told from 0 whatever its own
    largest eigenvalue is (the Frobenius norms bound the spectral ones and cost one pass each).
    """
    return torch.linalg.matrix_norm(cov1) * torch.linalg.matrix_norm(cov2)


def _trace_sqrt_product(
    product: Tensor, name: str, check_inputs: Callable[[], None], noise_scale: Tensor | None = None
) -> Tensor:
    """tr (Σ₁ Σ₂)^½ = Σᵢ √λᵢ from the (lower triangle of the) symmetric PSD matrix ``product``, similar to Σ₁Σ₂.

    ``product`` is congruent to the covariance named ``name`` (by an invertible factor of the other), so a
    negative eigenvalue beyond rounding means that covariance is not PSD. ``check_inputs`` names the culprit
    when the eigenvalue problem fails on non-finite input; finiteness is checked only then, because a pass over
    d² values costs a few percent of an evaluation.
    """
    try:
        eigenvalues = torch.linalg.eigvalsh(product)
    except torch.linalg.LinAlgError:  # NaN/Inf input can make LAPACK fail to converge
        eigenvalues = None
    if eigenvalues is None or not bool(torch.isfinite(eigenvalues).all()):
        check_inputs()
        raise ValueError("The eigenvalue problem of the Fréchet distance did not converge.")
    _check_psd(eigenvalues, f"`{name}` (seen through the congruent matrix of the Fréchet distance)")
    # Measured rounding noise here stays below ~2 ε λ_max (d ≤ 512) when the spectra are aligned, while genuine
    # eigenvalues can be a few dozen ε λ_max (the square of a small eigenvalue of Σ); √r ε λ_max separates the
    # two. When they are not aligned, the noise scale is ε ‖Σ₁‖ ‖Σ₂‖ (see _noise_scale), which can exceed λ_max.
    tolerance = _rank_tolerance(eigenvalues, eigenvalues.numel() ** 0.5)
    if noise_scale is not None:
        tolerance = torch.maximum(tolerance, noise_scale * _EPS)
    significant = eigenvalues > tolerance
    return torch.where(significant, eigenvalues, 0.0).sqrt().sum()


def _distance_value(
    squared_mean_distance: Tensor,
    trace1: Any,
    trace2: Any,
    trace_sqrt: Tensor,
    name: str,
    check_inputs: Callable[[], None],
) -> float:
    """‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½, with rounding below 0 reported as 0 and more refused."""
    trace1, trace2 = float(trace1), float(trace2)
    value = float(squared_mean_distance) + trace1 + trace2 - 2 * float(trace_sqrt)
    if not math.isfinite(value):
        check_inputs()  # names a NaN/Inf mean
        raise ValueError(f"The Fréchet distance overflows ({value}); the statistics hold values too large for float64.")
    scale = abs(trace1) + abs(trace2) + float(squared_mean_distance)
    if value < -NEGATIVE_DISTANCE_RTOL * scale:
        raise ValueError(
            f"The squared Fréchet distance came out negative, {value:.6g}, beyond rounding (tolerance "
            f"{NEGATIVE_DISTANCE_RTOL:g} x (|tr Σ₁| + |tr Σ₂| + ‖μ₁ − μ₂‖²) = {NEGATIVE_DISTANCE_RTOL * scale:.3g}): a "
            f"covariance (`{name}` or the reference) is not positive semi-definite; these statistics are invalid."
        )
    return max(value, 0.0)


def _lower_gram(left: Tensor, right: Tensor, blocks: int = 8) -> Tensor:
    """The lower triangle (by blocks) of ``left.T @ right``, which is all ``eigvalsh`` reads.

    For the symmetric product Qᵀ (Σ Q) this skips about half of the second matrix product. Entries above the
    diagonal blocks are left at 0.
    """
    size = left.shape[1]
    if size < 256:
        return left.T @ right
    out = left.new_zeros(size, size)
    bounds = [i * size // blocks for i in range(blocks + 1)]
    for lo, hi in itertools.pairwise(bounds):
        torch.matmul(left[:, lo:hi].T, right[:, :hi], out=out[lo:hi, :hi])
    return out


def _triangular_congruence(
    chol: Tensor, cov: Tensor, work: tuple[Tensor, Tensor] | None = None, blocks: int = 8
) -> Tensor:
    """The lower triangle (by blocks) of Lᵀ Σ L for a lower-triangular L, which is all ``eigvalsh`` reads.

    Both products skip the blocks where L is zero: Σ L costs about d³ flops instead of 2d³, and the lower
    triangle of Lᵀ (Σ L) about d³/3. Entries above the diagonal blocks are left at 0. ``work``: two d x d
    buffers to write into instead of new matrices (the second zero above its diagonal blocks, as this leaves
    it), which saves the page faults of two fresh 32 MB allocations per distance at d = 2048.
    """
    size = chol.shape[0]
    if size < 256:
        return chol.T @ (cov @ chol)
    bounds = [i * size // blocks for i in range(blocks + 1)]
    cov_chol = torch.empty_like(cov) if work is None else work[0]
    for lo, hi in itertools.pairwise(bounds):
        # Columns lo:hi of L are zero above row lo.
        torch.matmul(cov[:, lo:], chol[lo:, lo:hi], out=cov_chol[:, lo:hi])
    out = cov.new_zeros(size, size) if work is None else work[1]
    for lo, hi in itertools.pairwise(bounds):
        torch.matmul(chol[lo:, lo:hi].T, cov_chol[lo:, :hi], out=out[lo:hi, :hi])
    return out


def _cholesky_if_definite(cov: Tensor) -> Tensor | None:
    """The Cholesky factor of ``cov`` when it is numerically positive definite, else ``None``.

    A singular PSD covariance (fewer samples than features) either fails the factorisation or completes it with
    pivots of rounding size; the square roots of the spurious eigenvalues those leave would bias the result by
    ~1e-8 relative each. Pivots L_ii² below λ-scale · d · ε (the rank tolerance of the eigendecomposition path,
    with max Σ_ii for λ_max) thus count as singular.
    """
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        return None
    pivots = chol.diagonal().square()
    if pivots.numel() and float(pivots.min()) <= float(cov.diagonal().max()) * pivots.numel() * _EPS:
        return None
    return chol


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Accepts torch tensors (any device; computed on ``sigma2``'s) or numpy arrays. For repeated distances to
    the same statistics, build a :class:`FrechetReference` once instead.

    One symmetric eigenvalue problem: with a Cholesky factor Σ₂ = L Lᵀ (or of Σ₁, when Σ₂ is singular), the
    eigenvalues of Σ₁ Σ₂ are those of the symmetric Lᵀ Σ₁ L. When both covariances are singular (fewer samples
    than features in both), the eigendecomposition of Σ₂ of :class:`FrechetReference` gives the factor instead,
    which drops the null space exactly.

    Args:
        mu1: Mean of the first Gaussian, shape ``(d,)``.
        sigma1: Covariance of the first Gaussian, shape ``(d, d)``, symmetric positive semi-definite.
        mu2: Mean of the second Gaussian, shape ``(d,)``.
        sigma2: Covariance of the second Gaussian, shape ``(d, d)``, symmetric positive semi-definite.

    Returns:
        A finite, real float ≥ 0, also when the covariances are singular. Negative rounding (above
        −:data:`NEGATIVE_DISTANCE_RTOL` × (tr Σ₁ + tr Σ₂ + ‖μ₁ − μ₂‖²)) is reported as 0.

    Raises:
        ValueError: Wrong shapes, NaN/Inf, or a covariance that is not positive semi-definite beyond rounding
            (an eigenvalue below −:data:`PSD_RTOL` × the largest, seen through the congruent product), or a
            distance negative beyond rounding.

    Example:
        >>> import torch
        >>> frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(2))
        0.0
    """
    sigma2_t = _as_float64(sigma2, "sigma2")
    device = sigma2_t.device
    mu2_t = _as_float64(mu2, "mu2", device)
    mu1_t = _as_float64(mu1, "mu1", device)
    sigma1_t = _as_float64(sigma1, "sigma1", device)
    _check_gaussian(mu2_t, sigma2_t, "mu2", "sigma2")
    if mu1_t.ndim == 1 and mu1_t.shape[0] != mu2_t.shape[0]:
        raise ValueError(
            f"`mu1` has {mu1_t.shape[0]} features but the reference has {mu2_t.shape[0]} (`mu2`); both must "
            "come from the same feature layer."
        )
    _check_gaussian(mu1_t, sigma1_t, "mu1", "sigma1")
    sigma1_t, sigma2_t = (sigma1_t + sigma1_t.T) / 2, (sigma2_t + sigma2_t.T) / 2

    def check_inputs() -> None:  # checked above already
        return None

    for factored, other, name in ((sigma2_t, sigma1_t, "sigma1"), (sigma1_t, sigma2_t, "sigma2")):
        chol = _cholesky_if_definite(factored)
        if chol is None:
            continue
        trace_sqrt_product = _trace_sqrt_product(
            _triangular_congruence(chol, other), name, check_inputs, _noise_scale(sigma1_t, sigma2_t)
        )
        diff = mu1_t - mu2_t
        return _distance_value(
            diff.dot(diff), torch.trace(sigma1_t), torch.trace(sigma2_t), trace_sqrt_product, name, check_inputs
        )
    # Both singular: the eigendecomposition is rank-revealing where an unpivoted Cholesky factor is not.
    _, factor = _psd_square_root_factor(sigma2_t, "sigma2")
    trace_sqrt_product = _trace_sqrt_product(
        _lower_gram(factor, sigma1_t @ factor), "sigma1", check_inputs, _noise_scale(sigma1_t, sigma2_t)
    )
    diff = mu1_t - mu2_t
    return _distance_value(
        diff.dot(diff), torch.trace(sigma1_t), torch.trace(sigma2_t), trace_sqrt_product, "sigma1", check_inputs
    )
