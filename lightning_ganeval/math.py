"""Fréchet distance and Inception Score in float64: pure functions, no state, no collectives.

The Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) is

    d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁ Σ₂)^½.

The last trace is taken from a *symmetric* eigenvalue problem. With Σ₂ = V Λ Vᵀ (``torch.linalg.eigh``) and
Q = V Λ₊^½ (Λ₊ = max(Λ, 0)), the matrix Qᵀ Σ₁ Q is similar to Σ₂^½ Σ₁ Σ₂^½ and to Σ₁ Σ₂, and positive
semi-definite, so tr (Σ₁ Σ₂)^½ = Σᵢ √max(λᵢ(Qᵀ Σ₁ Q), 0). Compared with ``scipy.linalg.sqrtm`` (pytorch-fid) or
the eigenvalues of the non-symmetric product Σ₁ Σ₂ (torchmetrics, torch-fidelity) this is cheaper, real by
construction and never NaN, also for the singular covariances of fewer samples than features. The square root
of the reference covariance is computed once by :class:`FrechetReference`, because the real statistics do not
change during training; only one ``eigvalsh`` remains per evaluation.

Eigenvalues below a numerical-rank tolerance (λ_max · d · ε for Σ₂, the ``np.linalg.matrix_rank`` convention;
λ_max · √r · ε for Qᵀ Σ₁ Q) are treated as exactly 0. They are rounding noise of size ~ε‖Σ‖, and their square roots
(~1e-8 √‖Σ‖ each) would otherwise add up: for singular covariances (fewer samples than features) this keeps
the result within ~1e-14 relative of the closed form instead of ~1e-8, and identical statistics at ~1e-9
instead of ~1e-5.

The Inception Score follows the reference definition (Salimans et al. 2016, torch-fidelity): softmax over the
logits in float64, ``splits`` consecutive splits with boundaries ``i * N // splits``, per split
IS_k = exp(mean_x KL(p(y|x) ‖ p_k(y))), and the mean and *population* standard deviation (``ddof=0``, like
``np.std``) over the splits. torchmetrics' ``InceptionScore`` reports ``torch.std`` (``ddof=1``, larger by
√(splits/(splits−1))) and shuffles the samples first.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "FrechetReference",
    "GaussianStats",
    "frechet_distance",
    "inception_score",
    "inception_score_from_sums",
    "split_boundaries",
]


def _as_float64(value: Any, name: str, device: torch.device | str | None = None) -> Tensor:
    """A float64 tensor from a tensor or array-like; integer and floating inputs only."""
    tensor = torch.as_tensor(value)
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold real numbers, got dtype {tensor.dtype}.")
    return tensor.to(device=device if device is not None else tensor.device, dtype=torch.float64)


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

        The raw-sum formula cancels catastrophically when ‖μ‖ ≫ σ; prefer :class:`~lightning_ganeval.moments.
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
            the rank tolerance (including slightly negative ones from rounding) count as 0.
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
        eigenvalues, eigenvectors = torch.linalg.eigh(cov_t)
        # The reference rank uses np.linalg.matrix_rank's tolerance, λ_max · d · ε.
        keep = eigenvalues > _rank_tolerance(eigenvalues, eigenvalues.numel())
        # Q = V Λ₊^½, with the columns of (numerically) zero eigenvalues dropped: Qᵀ Σ Q has the same non-zero
        # eigenvalues as Σ_ref^½ Σ Σ_ref^½, and is smaller when the reference covariance is rank-deficient.
        self._sqrt_eigenvalues = eigenvalues[keep].sqrt()
        self._factor = eigenvectors[:, keep] * self._sqrt_eigenvalues
        self._mean = mean_t
        self._trace = float(torch.trace(cov_t))
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
            The squared Fréchet distance, a finite float ≥ 0 (rounding below 0 is reported as 0).
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
        diff = mean_t - self._mean
        try:
            eigenvalues = torch.linalg.eigvalsh(_lower_gram(self._factor, cov_t @ self._factor))
        except torch.linalg.LinAlgError:  # NaN/Inf input can make LAPACK fail to converge
            eigenvalues = None
        if eigenvalues is None or not bool(torch.isfinite(eigenvalues).all()):
            # Finiteness is checked only now: a pass over d² values costs a few percent of an evaluation.
            _check_gaussian(mean_t, cov_t, "mean", "cov")
            raise ValueError("The eigenvalue problem of the Fréchet distance did not converge.")
        # Measured rounding noise here stays below ~2 ε λ_max (d ≤ 512), while genuine eigenvalues can be a few
        # dozen ε λ_max (the square of a small eigenvalue of Σ); √r ε λ_max separates the two.
        significant = eigenvalues > _rank_tolerance(eigenvalues, eigenvalues.numel() ** 0.5)
        trace_sqrt_product = torch.where(significant, eigenvalues, 0.0).sqrt().sum()
        value = float(diff.dot(diff) + torch.trace(cov_t) + self._trace - 2 * trace_sqrt_product)
        if not math.isfinite(value):
            _check_gaussian(mean_t, cov_t, "mean", "cov")
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


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Accepts torch tensors (any device; computed on ``sigma2``'s) or numpy arrays. For repeated distances to
    the same statistics, build a :class:`FrechetReference` once instead.

    Args:
        mu1: Mean of the first Gaussian, shape ``(d,)``.
        sigma1: Covariance of the first Gaussian, shape ``(d, d)``.
        mu2: Mean of the second Gaussian, shape ``(d,)``.
        sigma2: Covariance of the second Gaussian, shape ``(d, d)``.

    Returns:
        A finite, real float ≥ 0, also when the covariances are singular.

    Example:
        >>> import torch
        >>> frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(2))
        0.0
    """
    return FrechetReference(mu2, sigma2).distance(mu1, sigma1)


def split_boundaries(num_samples: int, splits: int) -> list[int]:
    """Reference split boundaries ``[i * num_samples // splits for i in 0..splits]`` (torch-fidelity, openai).

    Split ``k`` holds the samples with index in ``[b[k], b[k+1])``.
    """
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"`splits` must be a positive integer, got {splits!r}.")
    if num_samples < splits:
        raise ValueError(
            f"The Inception Score needs at least one sample per split: got {num_samples} samples for "
            f"splits={splits}. Use more samples or fewer splits."
        )
    return [i * num_samples // splits for i in range(splits + 1)]


def inception_score_from_sums(prob_sum: Any, plogp_sum: Any, count: Any) -> tuple[float, float]:
    """Inception Score from per-split sums (what :class:`~lightning_ganeval.moments.ISMarginals` accumulates).

    Per split k with n_k samples, m_k = Σ_x p(y|x) / n_k and

        IS_k = exp(Σ_x Σ_y p log p / n_k − Σ_y m_k log m_k),

    which equals exp(mean_x KL(p(y|x) ‖ m_k)).

    Args:
        prob_sum: Σ_x p(y|x) per split, shape ``(splits, C)``.
        plogp_sum: Σ_x Σ_y p log p per split, shape ``(splits,)``.
        count: Number of samples per split, shape ``(splits,)``; every split must be non-empty.

    Returns:
        ``(mean, std)`` over the splits, std with ``ddof=0`` (``np.std``, torch-fidelity, the reference code;
        torchmetrics uses ``ddof=1``).
    """
    probs = _as_float64(prob_sum, "prob_sum")
    plogp = _as_float64(plogp_sum, "plogp_sum", probs.device)
    counts = _as_float64(count, "count", probs.device)
    if probs.ndim != 2 or plogp.shape != (probs.shape[0],) or counts.shape != (probs.shape[0],):
        raise ValueError(
            "Expected prob_sum (splits, C), plogp_sum (splits,) and count (splits,), got "
            f"{tuple(probs.shape)}, {tuple(plogp.shape)} and {tuple(counts.shape)}."
        )
    empty = (counts <= 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"Inception Score split(s) {empty} received no samples; every split needs at least one "
            f"(counts per split: {counts.long().tolist()})."
        )
    marginal = probs / counts[:, None]
    # xlogy gives 0·log 0 = 0 for classes no sample in the split predicts.
    neg_entropy_marginal = torch.special.xlogy(marginal, marginal).sum(dim=1)
    scores = torch.exp(plogp / counts - neg_entropy_marginal)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"Inception Score is not finite (split scores {scores.tolist()}); were the logits finite?")
    return float(scores.mean()), float(scores.std(correction=0))


def _split_sums(log_probs: Tensor, split_ids: Tensor, splits: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-split Σp, Σ p log p and counts from per-sample log-probabilities; deterministic (no atomics)."""
    probs = log_probs.exp()
    plogp = (probs * log_probs).sum(dim=1)
    one_hot = torch.nn.functional.one_hot(split_ids, splits).to(log_probs.dtype)
    return one_hot.T @ probs, one_hot.T @ plogp, one_hot.sum(dim=0)


def inception_score(logits: Any, splits: int = 10) -> tuple[float, float]:
    """Inception Score of stored logits, the reference computation (no shuffling).

    Equals torch-fidelity's ``isc_features_to_metric(logits, splits, shuffle=False)`` and the openai/TTUR code
    on the same, unshuffled samples.

    Args:
        logits: ``(N, C)`` logits (for the reference: the 1008 bias-free Inception logits), tensor or array.
        splits: Number of consecutive splits; split k holds samples ``[k*N//splits, (k+1)*N//splits)``.

    Returns:
        ``(mean, std)`` of the per-split scores; std with ``ddof=0`` like ``np.std`` and torch-fidelity
        (torchmetrics' ``InceptionScore`` uses ``ddof=1`` and a random permutation).

    Raises:
        ValueError: ``logits`` is not 2-D or not finite, or has fewer samples than ``splits``.

    Example:
        >>> import torch
        >>> mean, std = inception_score(torch.zeros(20, 5), splits=2)  # uniform predictions
        >>> round(mean, 9), round(std, 9)
        (1.0, 0.0)
    """
    x = _as_float64(logits, "logits")
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"`logits` must have shape (N, num_classes), got {tuple(x.shape)}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("`logits` contains NaN or Inf.")
    n = x.shape[0]
    bounds = split_boundaries(n, splits)
    split_ids = _split_of(torch.arange(n, device=x.device), bounds)
    prob_sum, plogp_sum, count = _split_sums(torch.log_softmax(x, dim=1), split_ids, splits)
    return inception_score_from_sums(prob_sum, plogp_sum, count)


def _split_of(indices: Tensor, bounds: Sequence[int]) -> Tensor:
    """Split id of each global sample index for boundaries ``bounds`` (length splits + 1, increasing)."""
    left = torch.tensor(bounds[:-1], device=indices.device, dtype=torch.long)
    return torch.searchsorted(left, indices.long(), right=True) - 1
