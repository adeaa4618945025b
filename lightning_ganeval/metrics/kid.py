"""Kernel Inception Distance: the unbiased MMD² with a polynomial kernel, on stored feature rows.

Conventions that change the numbers (Bińkowski et al. 2018, "Demystifying MMD GANs"; torch-fidelity's
``metric_kid``; StyleGAN's ``kernel_inception_distance``):

* kernel k(x, y) = (γ·xᵀy + c₀)^degree with degree 3, γ = 1/d and c₀ = 1 by default;
* the *unbiased* estimator: the within-set means skip the diagonal k(xᵢ, xᵢ), the cross mean keeps every pair,
  so MMD² can be slightly negative when the two sets come from the same distribution;
* KID is the mean over ``subsets`` random subsets of ``subset_size`` rows per side, each subset drawn without
  replacement and independently of the others (the same row may appear in several subsets), and its spread is
  the population standard deviation (``ddof=0``, ``np.std``) of the subset values, as in torch-fidelity.
  torchmetrics' ``KernelInceptionDistance`` reports ``torch.std`` (``ddof=1``), √(s/(s−1)) larger.

Everything is computed in float64 on the device of the inputs. The subsets are drawn by a CPU
:class:`torch.Generator` seeded with ``seed``, over row positions: with rows in global sample order the value
depends only on the features and the seed, not on how many processes produced them or on the device. The draws
differ from torch-fidelity's (``numpy.random.RandomState.choice``), so per-seed values differ from
torch-fidelity's by the subset sampling noise, while both average to :func:`mmd2_unbiased` of all rows.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_ganeval.metrics.base import PerSampleMetric

__all__ = ["KID", "kid_from_features", "kid_subset_values", "mmd2_unbiased"]

# Rows per block when summing a Gram matrix; bounds the temporary to _BLOCK_ROWS x N float64 values.
_BLOCK_ROWS = 4096
# Subsets evaluated together with one batched matmul: bounds both the gathered subset rows and the kernel
# matrices of a batch to this many float64 values (256 MiB) each.
_BATCH_ELEMENTS = 1 << 25


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return value


def _check_features(real: Tensor, fake: Tensor) -> None:
    for name, x in (("real", real), ("fake", fake)):
        if not isinstance(x, Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}.")
        if x.ndim != 2:
            raise ValueError(f"`{name}` must be a 2-D (rows, features) tensor, got shape {tuple(x.shape)}.")
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"`real` and `fake` must have the same feature dimension, got {real.shape[1]} and {fake.shape[1]}."
        )
    if real.shape[1] == 0:
        raise ValueError("`real` and `fake` have 0 features per row; at least 1 is needed.")


def _resolve_kernel(d: int, degree: int, gamma: float | None, coef0: float) -> tuple[int, float, float]:
    degree = _check_int(degree, "degree", 1)
    if gamma is None:
        gamma = 1.0 / d
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"`gamma` must be a positive finite number or None (meaning 1/d), got {gamma!r}.")
    if isinstance(coef0, bool) or not isinstance(coef0, (int, float)) or not math.isfinite(coef0):
        raise ValueError(f"`coef0` must be a finite number, got {coef0!r}.")
    return degree, float(gamma), float(coef0)


def _as_float64(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    x = real.detach().to(torch.float64)
    y = fake.detach().to(device=x.device, dtype=torch.float64)
    if not bool(torch.isfinite(x).all()) or not bool(torch.isfinite(y).all()):
        raise ValueError("`real` and `fake` must be finite; got NaN or Inf features.")
    return x, y


def _kernel(x: Tensor, y: Tensor, degree: int, gamma: float, coef0: float) -> Tensor:
    """k(x, y) = (γ·xᵀy + c₀)^degree for every pair; works batched over a leading subset dimension."""
    return torch.matmul(x, y.transpose(-1, -2)).mul_(gamma).add_(coef0).pow_(degree)


def _gram_sums(x: Tensor, y: Tensor, degree: int, gamma: float, coef0: float, same: bool) -> float:
    """Σᵢⱼ k(xᵢ, yⱼ) in blocks of rows, without the diagonal when ``same`` (x is y)."""
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        block = _kernel(x[start : start + _BLOCK_ROWS], y, degree, gamma, coef0)
        total += block.sum()
        if same:
            total -= block.diagonal(offset=start).sum()
    return float(total)


def mmd2_unbiased(
    real: Tensor, fake: Tensor, *, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> float:
    """Unbiased MMD² between all rows of ``real`` and all rows of ``fake``, polynomial kernel, float64.

    MMD²ᵤ = Σ_{i≠j} k(xᵢ, xⱼ) / (n(n−1)) + Σ_{i≠j} k(yᵢ, yⱼ) / (m(m−1)) − 2 Σᵢⱼ k(xᵢ, yⱼ) / (nm), with
    k(x, y) = (γ·xᵀy + c₀)^degree. With n = m this is torch-fidelity's ``mmd2(..., mmd_est="unbiased")`` on one
    subset holding every row, and it is the expectation of each subset value of :func:`kid_from_features`.
    The Gram matrices are summed in blocks of rows, so memory is O(4096 x max(n, m)), not O(n²).

    Args:
        real: ``(n, d)`` features, n >= 2.
        fake: ``(m, d)`` features, m >= 2, on any device (moved to ``real``'s).
        degree: Polynomial degree (3 for KID).
        gamma: Scale γ of the inner product; ``None`` means 1/d.
        coef0: Constant c₀ added before the power (1 for KID).

    Returns:
        The estimate as a Python float (may be slightly negative).

    Raises:
        ValueError: non-2-D inputs, different d, fewer than 2 rows on a side, non-finite features or bad kernel
            parameters.
    """
    _check_features(real, fake)
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] < 2:
            raise ValueError(f"`{name}` must have at least 2 rows for the unbiased MMD², got {x.shape[0]}.")
    degree, gamma, coef0 = _resolve_kernel(real.shape[1], degree, gamma, coef0)
    x, y = _as_float64(real, fake)
    n, m = x.shape[0], y.shape[0]
    k_xx = _gram_sums(x, x, degree, gamma, coef0, same=True)
    k_yy = _gram_sums(y, y, degree, gamma, coef0, same=True)
    k_xy = _gram_sums(x, y, degree, gamma, coef0, same=False)
    return k_xx / (n * (n - 1)) + k_yy / (m * (m - 1)) - 2 * k_xy / (n * m)


def _subset_mmd2(x: Tensor, y: Tensor, degree: int, gamma: float, coef0: float) -> Tensor:
    """Unbiased MMD² of each pair of equal-size subsets ``x[s]``, ``y[s]`` (``(s, m, d)`` each) → ``(s,)``."""
    m = x.shape[1]
    k_xx = _kernel(x, x, degree, gamma, coef0)
    within = k_xx.sum(dim=(1, 2)) - k_xx.diagonal(dim1=1, dim2=2).sum(dim=1)
    del k_xx
    k_yy = _kernel(y, y, degree, gamma, coef0)
    within += k_yy.sum(dim=(1, 2)) - k_yy.diagonal(dim1=1, dim2=2).sum(dim=1)
    del k_yy
    cross = _kernel(x, y, degree, gamma, coef0).sum(dim=(1, 2))
    return within / (m * (m - 1)) - 2 * cross / (m * m)


def kid_subset_values(
    real: Tensor,
    fake: Tensor,
    real_indices: Tensor,
    fake_indices: Tensor,
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> Tensor:
    """Unbiased MMD² of the given subsets: row ``s`` of ``real_indices`` against row ``s`` of ``fake_indices``.

    The building block of :func:`kid_from_features`, exposed so that a caller (or a test) can choose the
    subsets, e.g. to reproduce another implementation's draws.

    Args:
        real: ``(n, d)`` features.
        fake: ``(m, d)`` features.
        real_indices: ``(subsets, subset_size)`` integer row positions into ``real``.
        fake_indices: ``(subsets, subset_size)`` integer row positions into ``fake``.
        degree: Polynomial degree.
        gamma: Scale γ; ``None`` means 1/d.
        coef0: Constant c₀.

    Returns:
        ``(subsets,)`` float64 tensor of MMD² values on the device of ``real``.
    """
    _check_features(real, fake)
    degree, gamma, coef0 = _resolve_kernel(real.shape[1], degree, gamma, coef0)
    for name, idx in (("real_indices", real_indices), ("fake_indices", fake_indices)):
        if not isinstance(idx, Tensor) or idx.ndim != 2 or idx.is_floating_point() or idx.dtype == torch.bool:
            raise ValueError(f"`{name}` must be a 2-D integer tensor (subsets, subset_size), got {idx!r:.80}.")
    if real_indices.shape != fake_indices.shape or real_indices.shape[1] < 2:
        raise ValueError(
            "`real_indices` and `fake_indices` must have the same shape (subsets, subset_size >= 2), got "
            f"{tuple(real_indices.shape)} and {tuple(fake_indices.shape)}."
        )
    x, y = _as_float64(real, fake)
    real_indices = real_indices.to(x.device)
    fake_indices = fake_indices.to(x.device)
    size = real_indices.shape[1]
    per_batch = max(1, _BATCH_ELEMENTS // (size * max(size, x.shape[1])))
    values = [
        _subset_mmd2(x[ri], y[fi], degree, gamma, coef0)
        for ri, fi in zip(real_indices.split(per_batch), fake_indices.split(per_batch), strict=True)
    ]
    return torch.cat(values) if values else torch.zeros(0, dtype=torch.float64, device=x.device)


def kid_from_features(
    real: Tensor,
    fake: Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> tuple[float, float]:
    """KID: mean and population std (``ddof=0``) of the unbiased MMD² over random subsets.

    For each of ``subsets`` subsets, ``subset_size`` rows are drawn without replacement from ``real`` and,
    independently, from ``fake`` (``torch.randperm`` of a CPU generator seeded with ``seed``; the real draw
    comes first in each subset), and the unbiased MMD² with k(x, y) = (γ·xᵀy + c₀)^degree is computed in
    float64. The defaults are those of torch-fidelity and StyleGAN (100 subsets of 1000, degree 3, γ = 1/d,
    c₀ = 1). Rows are positions: pass them in global sample order for a result independent of the number of
    processes that produced them.

    Args:
        real: ``(n, d)`` real features.
        fake: ``(m, d)`` generated features, moved to ``real``'s device.
        subsets: Number of subsets, >= 1.
        subset_size: Rows per subset and side, 2 <= subset_size <= min(n, m).
        seed: Seed of the subset draws.
        degree: Polynomial degree.
        gamma: Scale γ; ``None`` means 1/d.
        coef0: Constant c₀.

    Returns:
        ``(mean, std)`` as Python floats; std is ``np.std`` of the subset values (``ddof=0``, as torch-fidelity;
        torchmetrics uses ``ddof=1``), 0.0 for a single subset.

    Raises:
        ValueError: ``subsets < 1``, ``subset_size`` outside [2, min(n, m)], non-2-D inputs, different d,
            non-finite features or bad kernel parameters.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> real, fake = torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g) + 1
        >>> mean, std = kid_from_features(real, fake, subsets=10, subset_size=20)
        >>> mean > 0
        True
    """
    _check_features(real, fake)
    subsets = _check_int(subsets, "subsets", 1)
    subset_size = _check_int(subset_size, "subset_size", 2)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer, got {seed!r}.")
    n, m = real.shape[0], fake.shape[0]
    if subset_size > min(n, m):
        raise ValueError(
            f"`subset_size` must be at most the number of rows on each side (real: {n}, fake: {m}), "
            f"got {subset_size}; lower subset_size or feed more samples."
        )
    generator = torch.Generator().manual_seed(seed)
    real_idx = torch.empty(subsets, subset_size, dtype=torch.long)
    fake_idx = torch.empty(subsets, subset_size, dtype=torch.long)
    for s in range(subsets):
        real_idx[s] = torch.randperm(n, generator=generator)[:subset_size]
        fake_idx[s] = torch.randperm(m, generator=generator)[:subset_size]
    values = kid_subset_values(real, fake, real_idx, fake_idx, degree=degree, gamma=gamma, coef0=coef0)
    return float(values.mean()), float(values.std(correction=0))


class KID(PerSampleMetric):
    """Kernel Inception Distance of the generated samples' features to real features.

    Per-sample features are kept on the CPU (a :class:`~lightning_ganeval.moments.FeatureBank`, N × d float32),
    gathered across ranks once per evaluation in global sample order, and scored on the evaluation device with
    :func:`kid_from_features`, so the value is the same for any number of processes.

    Args:
        name: Key of the mean; ``<name>_std`` holds the std over subsets (``ddof=0``).
        feature_extractor: Feature network (default: the evaluator's Inception, pool3 features).
        layer: Network output to read.
        subsets: Number of random subsets.
        subset_size: Rows per subset and side (at most the number of samples on each side).
        max_real: Real feature rows kept (a seeded uniform sample of the whole real set).
        seed: Seed of the subset draws.
    """

    def __init__(
        self,
        *,
        name: str = "kid",
        feature_extractor: torch.nn.Module | None = None,
        layer: str | None = None,
        subsets: int = 100,
        subset_size: int = 1000,
        max_real: int = 10_000,
        seed: int = 0,
    ) -> None:
        super().__init__(name=name, feature_extractor=feature_extractor, layer=layer, max_real=max_real)
        self.subsets = _check_int(subsets, "subsets", 1)
        self.subset_size = _check_int(subset_size, "subset_size", 2)
        self.seed = _check_int(seed, "seed", 0)

    def keys(self) -> list[str]:
        return [self.name, f"{self.name}_std", f"{self.name}_num_samples"]

    def min_samples(self) -> int:
        return self.subset_size

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "subsets": self.subsets, "subset_size": self.subset_size, "kid_seed": self.seed}

    def check_real(self, count: int) -> None:
        if count < self.subset_size:
            raise ValueError(
                f"`{self.name}`: subset_size={self.subset_size} is larger than the {count} real samples; lower"
                " `subset_size` or use more real data (`num_real`, `max_real`)."
            )

    def compute(self) -> dict[str, float]:
        fake = self.generated_features()
        self._nan_reasons = {}
        if len(fake) < self.subset_size:
            nan = float("nan")
            reason = (
                f"only {len(fake)} of the {self.num_samples} generated samples were finite (the others held NaN or"
                f" Inf and were left out), fewer than the subset_size={self.subset_size} rows each KID subset draws"
            )
            self._nan_reasons = {self.name: reason, f"{self.name}_std": reason}
            return {self.name: nan, f"{self.name}_std": nan, f"{self.name}_num_samples": float(len(fake))}
        mean, std = kid_from_features(
            self.real_features().to(self._device),
            fake.to(self._device),
            subsets=self.subsets,
            subset_size=self.subset_size,
            seed=self.seed,
        )
        return {self.name: mean, f"{self.name}_std": std, f"{self.name}_num_samples": float(len(fake))}
