"""CMMD: the MMD with a Gaussian RBF kernel on L2-normalised CLIP embeddings (Jayasumana et al., CVPR 2024).

Conventions that change the numbers, as the reference code (google-research ``cmmd/distance.py``) computes them:

* every feature row is L2-normalised first (the reference does it in its embedding step; doing it here gives a
  ``feature_extractor=`` network the same treatment);
* kernel k(x, y) = exp(−‖x − y‖² / (2σ²)) with σ = 10 (γ = 1/200), the squared distance computed as
  ‖x‖² + ‖y‖² − 2xᵀy as the reference does;
* value = 1000 × (mean K_xx + mean K_yy − 2 mean K_xy) with the means over the *full* kernel matrices, diagonal
  included: the biased V-statistic, although the paper calls the estimator unbiased. ``estimator="unbiased"``
  gives the U-statistic instead (the within-set means skip the diagonal), whose expectation is the population
  MMD² and which can be slightly negative.

The kernel sums run in float64 on the evaluation device, in blocks of rows (a block × N temporary, never N × N).
float64 matters: the three means are close to 1 and CMMD is their small difference (×1000), so float32 sums
would keep only 2-3 significant digits of a typical value. The real-side sum Σ K_xx does not change during
training: it is computed once per fit and reused. The reference's rounding of the embedding batches (it drops the
images after the last full batch of 32) is not reproduced: every sample counts.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_ganeval.metrics.base import PerSampleMetric, RealData

__all__ = ["CMMD", "ESTIMATORS", "SCALE", "SIGMA", "cmmd_from_features"]

SIGMA = 10.0
"""Bandwidth σ of the Gaussian RBF kernel (the reference's ``_SIGMA``)."""
SCALE = 1000.0
"""Factor applied to the MMD² (the reference's ``_SCALE``)."""
ESTIMATORS = ("biased", "unbiased")
"""``"biased"``: the reference's V-statistic (diagonal included, default). ``"unbiased"``: the U-statistic."""

# Rows per block of a kernel sum; bounds the temporary to _BLOCK_ROWS x N float64 values (256 MiB at N = 8192).
_BLOCK_ROWS = 4096


def _check_features(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"`{name}` must be a 2-D (rows, features) tensor with features, got shape {tuple(x.shape)}.")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    return x


def _normalized(x: Tensor, device: torch.device) -> Tensor:
    x = x.detach().to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("CMMD features must be finite; got NaN or Inf.")
    # A zero row stays zero (scikit-learn's `normalize` convention) instead of becoming NaN.
    return x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)


def rbf_kernel_sum(x: Tensor, y: Tensor, *, sigma: float = SIGMA, same: bool = False) -> tuple[float, float]:
    """``(Σᵢⱼ k(xᵢ, yⱼ), Σᵢ k(xᵢ, yᵢ))`` for the Gaussian RBF kernel, in blocks of rows, float64.

    The second value is the diagonal's sum when ``same`` (x is y), else 0. The squared distances are computed as
    ``‖x‖² + ‖y‖² − 2xᵀy``, the reference's arithmetic (so the diagonal is 1 only up to rounding).

    Args:
        x: ``(n, d)`` float64 rows.
        y: ``(m, d)`` float64 rows on the same device.
        sigma: Kernel bandwidth σ.
        same: Whether ``y`` is ``x`` (also return the diagonal's sum).
    """
    gamma = 1.0 / (2.0 * sigma * sigma)
    x_sq = (x * x).sum(dim=1)
    y_sq = x_sq if same else (y * y).sum(dim=1)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    diagonal = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        rows = slice(start, start + _BLOCK_ROWS)
        block = torch.mm(x[rows], y.T).mul_(-2.0).add_(x_sq[rows, None]).add_(y_sq[None, :])
        block = block.mul_(-gamma).exp_()
        total += block.sum()
        if same:
            diagonal += block.diagonal(offset=start).sum()
    return float(total), float(diagonal)


def _check_estimator(estimator: str) -> str:
    if estimator not in ESTIMATORS:
        raise ValueError(f"`estimator` must be one of {', '.join(map(repr, ESTIMATORS))}, got {estimator!r}.")
    return estimator


def _combine(
    xx: tuple[float, float], yy: tuple[float, float], xy: float, n: int, m: int, estimator: str, scale: float
) -> float:
    if estimator == "biased":
        mmd2 = xx[0] / (n * n) + yy[0] / (m * m) - 2.0 * xy / (n * m)
    else:
        mmd2 = (xx[0] - xx[1]) / (n * (n - 1)) + (yy[0] - yy[1]) / (m * (m - 1)) - 2.0 * xy / (n * m)
    return scale * mmd2


def cmmd_from_features(
    real: Tensor,
    fake: Tensor,
    *,
    sigma: float = SIGMA,
    scale: float = SCALE,
    estimator: str = "biased",
    device: torch.device | str | None = None,
) -> float:
    """CMMD between two sets of embeddings: rows L2-normalised, RBF kernel, ×1000 (see the module docstring).

    Symmetric in its two arguments. Equal to the reference ``distance.mmd(x, y)`` on the normalised rows, up to
    float64 rounding (the reference runs in float32).

    Args:
        real: ``(n, d)`` reference embeddings (any scale: rows are normalised here).
        fake: ``(m, d)`` evaluated embeddings.
        sigma: Kernel bandwidth σ (10 in the reference).
        scale: Factor applied to the MMD² (1000 in the reference).
        estimator: ``"biased"`` (the reference's V-statistic) or ``"unbiased"`` (the U-statistic, n, m >= 2).
        device: Where the sums run; default ``real``'s device.

    Returns:
        The value as a Python float.

    Raises:
        ValueError: non-2-D inputs, different widths, too few rows, non-finite values or a bad ``estimator``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g) + 0.5
        >>> cmmd_from_features(x, x)
        0.0
        >>> cmmd_from_features(x, y) > 0
        True
    """
    real, fake = _check_features("real", real), _check_features("fake", fake)
    estimator = _check_estimator(estimator)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"`real` and `fake` must have the same width, got {real.shape[1]} and {fake.shape[1]}.")
    minimum = 2 if estimator == "unbiased" else 1
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] < minimum:
            raise ValueError(f"`{name}` needs at least {minimum} rows for the {estimator} estimator, got {x.shape[0]}.")
    target = torch.device(device) if device is not None else real.device
    x, y = _normalized(real, target), _normalized(fake, target)
    xx = rbf_kernel_sum(x, x, sigma=sigma, same=True)
    yy = rbf_kernel_sum(y, y, sigma=sigma, same=True)
    xy, _ = rbf_kernel_sum(x, y, sigma=sigma)
    return _combine(xx, yy, xy, x.shape[0], y.shape[0], estimator, scale)


class CMMD(PerSampleMetric):
    """CMMD of the generated samples' embeddings to real embeddings (CLIP ViT-L/14-336 in the callbacks).

    The generated rows are kept on the CPU (a :class:`~lightning_ganeval.accumulators.FeatureBank`, N × d float32, 30 MB
    at N = 10k and d = 768), gathered on every rank in global sample order, and scored on the evaluation device
    with the blocked float64 kernel sums of :func:`cmmd_from_features`; the real side's Σ K_xx is computed at the
    first evaluation of a fit and reused. The value is the same for any number of processes.

    Args:
        name: Key of the value (``cmmd``).
        feature_extractor: Feature network; the callbacks pass a :class:`~lightning_ganeval.clip.CLIPExtractor`.
            ``None`` reads the evaluator's Inception pool3 features (not CMMD as published).
        layer: Network output to read.
        estimator: ``"biased"`` (reference) or ``"unbiased"``.
        max_real: Real feature rows kept (the first ``max_real`` real samples).
        sigma: Kernel bandwidth.
        scale: Factor applied to the MMD².
    """

    def __init__(
        self,
        *,
        name: str = "cmmd",
        feature_extractor: torch.nn.Module | None = None,
        layer: str | None = None,
        estimator: str = "biased",
        max_real: int = 10_000,
        sigma: float = SIGMA,
        scale: float = SCALE,
    ) -> None:
        super().__init__(name=name, feature_extractor=feature_extractor, layer=layer, max_real=max_real)
        self.estimator = _check_estimator(estimator)
        for argument, value in (("sigma", sigma), ("scale", scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"`{argument}` must be a positive finite number, got {value!r}.")
        self.sigma = float(sigma)
        self.scale = float(scale)
        self._real_sums: tuple[str, tuple[float, float]] | None = None

    def keys(self) -> list[str]:
        return [self.name, f"{self.name}_num_samples"]

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "estimator": self.estimator, "sigma": self.sigma, "scale": self.scale}

    def check_real(self, count: int) -> None:
        if count < 2:
            raise ValueError(f"`{self.name}` needs at least 2 real samples, got {count}.")

    def set_real(self, real: RealData) -> None:
        super().set_real(real)
        self._real_sums = None

    def compute(self) -> dict[str, float]:
        fake = self.generated_features()
        count = float(len(fake))
        self._nan_reasons = {}
        if len(fake) < 2:
            self._nan_reasons = {
                self.name: f"only {len(fake)} of the {self.num_samples} generated samples were finite (the others held"
                " NaN or Inf and were left out); the unbiased MMD needs at least 2"
            }
            return {self.name: math.nan, f"{self.name}_num_samples": count}
        x = _normalized(self.real_features(), self._device)
        y = _normalized(fake, self._device)
        key = str(self._device)
        if self._real_sums is None or self._real_sums[0] != key:
            self._real_sums = (key, rbf_kernel_sum(x, x, sigma=self.sigma, same=True))
        yy = rbf_kernel_sum(y, y, sigma=self.sigma, same=True)
        xy, _ = rbf_kernel_sum(x, y, sigma=self.sigma)
        value = _combine(self._real_sums[1], yy, xy, len(x), len(y), self.estimator, self.scale)
        return {self.name: value, f"{self.name}_num_samples": count}
