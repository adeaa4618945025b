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

The inner products run in IEEE float32 (``dtype=torch.float32``, the default) on rows centred by their mean, with
the large common part added in float64; the kernel sums accumulate in float64. The result is within 1e-5 of the
kernel's scale (the mean k(x, y), the size of the three kernel means whose difference MMD² is) of the all-float64
computation (``dtype=torch.float64``); measured on pool3-like features: ~1e-9 of the scale, ~2e-7 of a KID of
4e-3. Everything runs on the device of the inputs. The subsets are drawn by a CPU
:class:`torch.Generator` seeded with ``seed``, over row positions: with rows in global sample order the value
depends only on the features and the seed, not on how many processes produced them or on the device. The draws
differ from torch-fidelity's (``numpy.random.RandomState.choice``), so per-seed values differ from
torch-fidelity's by the subset sampling noise, while both average to :func:`mmd2_unbiased` of all rows.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from lightning_ganeval.metrics.base import PerSampleMetric, ieee_float32_matmul

__all__ = ["KID", "kid_from_features", "kid_subset_values", "mmd2_unbiased"]

# Rows per block of a Gram matrix: small enough that the lower triangle by blocks skips most of the upper half
# of a 2 x 1000-row subset, large enough for full-speed matrix products.
_BLOCK_ROWS = 256
# A float64 multiply-add costs about twice a float32 one; used by the cost model that picks one Gram matrix of
# every drawn row or one per subset.
_FLOAT64_COST = 2.0


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return value


def _check_dtype(dtype: object) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"`dtype` must be torch.float32 or torch.float64, got {dtype!r}.")
    assert isinstance(dtype, torch.dtype)
    return dtype


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


def _kernel_factors(
    real: Tensor, fake: Tensor, gamma: float, coef0: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Rows ``left``, ``right`` in ``dtype`` with γ·(leftᵢ·rightⱼ) = γ·xᵢᵀxⱼ + c₀, for the rows of real then fake.

    With a shift μ (the mean of all rows, rounded to ``dtype``), zᵢ = xᵢ − μ and hᵢ = μᵀzᵢ + (μᵀμ + c₀/γ)/2,
    xᵢᵀxⱼ + c₀/γ = zᵢᵀzⱼ + hᵢ + hⱼ, so leftᵢ = (zᵢ, hᵢ, 1) and rightⱼ = (zⱼ, 1, hⱼ): one matrix product yields the
    kernel's base with no element-wise pass (γ^degree multiplies the sums instead). Pool3 features are
    non-negative with a large common mean, so centred inner products are several times smaller than raw ones,
    and so is their rounding. float32 rows are centred in one rounding step, without float64 copies.
    """
    n, d = real.shape
    total = n + fake.shape[0]
    device = real.device
    fake = fake.to(device)
    mean = (real.sum(dim=0, dtype=torch.float64) + fake.sum(dim=0, dtype=torch.float64)) / total
    left = torch.empty(total, d + 2, dtype=dtype, device=device)
    if dtype == real.dtype == fake.dtype:
        shift = mean.to(dtype)
        torch.sub(real, shift, out=left[:n, :d])
        torch.sub(fake, shift, out=left[n:, :d])
    else:
        shift = mean.to(dtype).to(torch.float64)
        left[:n, :d] = real.to(torch.float64) - shift
        left[n:, :d] = fake.to(torch.float64) - shift
    with ieee_float32_matmul():
        offsets = (left[:, :d] @ shift.to(dtype)).to(torch.float64)
    offsets += (float(shift.to(torch.float64).dot(shift.to(torch.float64))) + coef0 / gamma) / 2
    right = left.clone()
    left[:, d], left[:, d + 1] = offsets, 1.0
    right[:, d], right[:, d + 1] = 1.0, offsets
    return left, right


def _block_bounds(start: int, stop: int, block_rows: int) -> list[int]:
    """Boundaries of about equal row blocks of at most ``block_rows`` rows covering [start, stop)."""
    count = max(1, -(-(stop - start) // block_rows))
    return [start + i * (stop - start) // count for i in range(count + 1)]


def _weighted_sum(block: Tensor, weights: Tensor | None, lo: int, hi: int, columns: tuple[int, int] | None) -> Tensor:
    """Σᵢⱼ wᵢ K[i, j] wⱼ over rows lo:hi of K (``block``) and ``columns`` (None: ``block``'s one column,
    unweighted), per column of ``weights``; every row weighs 1 when ``weights`` is None."""
    if columns is None:
        part, column_weights = block, None
    else:
        part = block[:, columns[0] : columns[1]]
        column_weights = None if weights is None else weights[columns[0] : columns[1]]
    if weights is None:
        return part.sum(dtype=torch.float64).reshape(1)
    row_sums = part if column_weights is None else part @ column_weights
    return (weights[lo:hi] * row_sums).sum(dim=0)


def _pair_sums(
    left: Tensor, right: Tensor, split: int, degree: int, weights: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Kernel sums over the pairs of a set of real rows (the first ``split``) and generated rows (the rest).

    Returns Σ_{i≠j} k(xᵢ, xⱼ), Σ_{i≠j} k(yᵢ, yⱼ) and Σᵢⱼ k(xᵢ, yⱼ), float64, for each column of ``weights``:
    with per-row multiplicities w (a subset of rows, possibly with repeats), the sums over the subset's pairs of
    positions are wᵀKw − Σᵢ wᵢKᵢᵢ within a set and wₓᵀK wᵧ across. ``weights=None`` means every row once.

    The kernel matrix K = (left rightᵀ)^degree is computed by row blocks aligned with the real/generated boundary,
    each against the rows up to the end of the block only: the symmetric within-set sums are twice the strictly
    lower blocks plus the diagonal blocks, so about half of the two within-set products is skipped. Products
    and the power run in the dtype of the factors (float32 by default, IEEE even where TF32/bfloat16 is
    allowed), two passes over each block; every sum is accumulated in float64.
    """
    n = left.shape[0]
    count = 1 if weights is None else weights.shape[1]
    within_x = torch.zeros(count, dtype=torch.float64, device=left.device)
    within_y = torch.zeros_like(within_x)
    cross = torch.zeros_like(within_x)
    bounds = _block_bounds(0, split, _BLOCK_ROWS) + _block_bounds(split, n, _BLOCK_ROWS)[1:]
    with ieee_float32_matmul():
        for lo, hi in itertools.pairwise(bounds):
            kernel = torch.matmul(left[lo:hi], right[:hi].T)
            if degree != 1:
                kernel.pow_(degree)
            if weights is not None:
                kernel = kernel.to(torch.float64)  # the products with the multiplicities, in float64
            trace = _weighted_sum(kernel[:, lo:hi].diagonal()[:, None], weights, lo, hi, None)
            if lo < split:
                within_x += 2 * _weighted_sum(kernel, weights, lo, hi, (0, lo))
                within_x += _weighted_sum(kernel, weights, lo, hi, (lo, hi)) - trace
            else:
                cross += _weighted_sum(kernel, weights, lo, hi, (0, split))
                within_y += 2 * _weighted_sum(kernel, weights, lo, hi, (split, lo))
                within_y += _weighted_sum(kernel, weights, lo, hi, (lo, hi)) - trace
            del kernel
    return within_x, within_y, cross


def mmd2_unbiased(
    real: Tensor,
    fake: Tensor,
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Unbiased MMD² between all rows of ``real`` and all rows of ``fake``, polynomial kernel.

    MMD²ᵤ = Σ_{i≠j} k(xᵢ, xⱼ) / (n(n−1)) + Σ_{i≠j} k(yᵢ, yⱼ) / (m(m−1)) − 2 Σᵢⱼ k(xᵢ, yⱼ) / (nm), with
    k(x, y) = (γ·xᵀy + c₀)^degree. With n = m this is torch-fidelity's ``mmd2(..., mmd_est="unbiased")`` on one
    subset holding every row, and it is the expectation of each subset value of :func:`kid_from_features`.
    The Gram matrices are computed in blocks of rows, so memory is O(256 x (n + m)), not O(n²).

    Args:
        real: ``(n, d)`` features, n >= 2.
        fake: ``(m, d)`` features, m >= 2, on any device (moved to ``real``'s).
        degree: Polynomial degree (3 for KID).
        gamma: Scale γ of the inner product; ``None`` means 1/d.
        coef0: Constant c₀ added before the power (1 for KID).
        dtype: Precision of the inner products: ``torch.float32`` (default; centred rows, kernel and sums in
            float64, see :func:`kid_from_features` for the agreement) or ``torch.float64`` (everything in float64).

    Returns:
        The estimate as a Python float (may be slightly negative).

    Raises:
        ValueError: non-2-D inputs, different d, fewer than 2 rows on a side, non-finite features, bad kernel
            parameters or another ``dtype``.
    """
    _check_features(real, fake)
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] < 2:
            raise ValueError(f"`{name}` must have at least 2 rows for the unbiased MMD², got {x.shape[0]}.")
    degree, gamma, coef0 = _resolve_kernel(real.shape[1], degree, gamma, coef0)
    dtype = _check_dtype(dtype)
    n, m = real.shape[0], fake.shape[0]
    for attempt in (dtype, torch.float64):
        left, right = _kernel_factors(real.detach(), fake.detach(), gamma, coef0, attempt)
        k_xx, k_yy, k_xy = _pair_sums(left, right, n, degree, None)
        value = float(k_xx / (n * (n - 1)) + k_yy / (m * (m - 1)) - 2 * k_xy / (n * m)) * gamma**degree
        if math.isfinite(value) or _check_finite(real, fake):
            return value
    return value


def _one_gram_is_cheaper(used: int, d: int, subsets: int, size: int) -> bool:
    """Whether one Gram matrix of the ``used`` distinct rows costs less than one per subset of 2 x ``size`` rows.

    Half of each Gram matrix is computed (the lower triangle by blocks): used² d / 2 multiply-adds once, plus the
    float64 products with the (used x subsets) multiplicity matrix, against subsets (2 size)² d / 2.
    """
    one = used * used * (d + _FLOAT64_COST * subsets) / 2
    per_subset = subsets * (2 * size) ** 2 * d / 2
    return one < per_subset


def kid_subset_values(
    real: Tensor,
    fake: Tensor,
    real_indices: Tensor,
    fake_indices: Tensor,
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Unbiased MMD² of the given subsets: row ``s`` of ``real_indices`` against row ``s`` of ``fake_indices``.

    The building block of :func:`kid_from_features`, exposed so that a caller (or a test) can choose the
    subsets, e.g. to reproduce another implementation's draws. When the subsets together draw few distinct rows
    compared with their total size (10,000 rows per side for 100 subsets of 1000, say), one Gram matrix of the
    distinct rows serves every subset, through float64 products with each subset's row multiplicities;
    otherwise each subset gets its own. Both give the same sums up to rounding.

    Args:
        real: ``(n, d)`` features.
        fake: ``(m, d)`` features.
        real_indices: ``(subsets, subset_size)`` integer row positions into ``real``.
        fake_indices: ``(subsets, subset_size)`` integer row positions into ``fake``.
        degree: Polynomial degree.
        gamma: Scale γ; ``None`` means 1/d.
        coef0: Constant c₀.
        dtype: Precision of the inner products, ``torch.float32`` (default) or ``torch.float64``; see
            :func:`kid_from_features`.

    Returns:
        ``(subsets,)`` float64 tensor of MMD² values on the device of ``real``.
    """
    _check_features(real, fake)
    degree, gamma, coef0 = _resolve_kernel(real.shape[1], degree, gamma, coef0)
    dtype = _check_dtype(dtype)
    for name, idx in (("real_indices", real_indices), ("fake_indices", fake_indices)):
        if not isinstance(idx, Tensor) or idx.ndim != 2 or idx.is_floating_point() or idx.dtype == torch.bool:
            raise ValueError(f"`{name}` must be a 2-D integer tensor (subsets, subset_size), got {idx!r:.80}.")
    if real_indices.shape != fake_indices.shape or real_indices.shape[1] < 2:
        raise ValueError(
            "`real_indices` and `fake_indices` must have the same shape (subsets, subset_size >= 2), got "
            f"{tuple(real_indices.shape)} and {tuple(fake_indices.shape)}."
        )
    subsets = real_indices.shape[0]
    device = real.device
    if subsets == 0:
        return torch.zeros(0, dtype=torch.float64, device=device)
    real_indices = real_indices.to(device=device, dtype=torch.long)
    fake_indices = fake_indices.to(device=device, dtype=torch.long)
    real_used, real_pos = torch.unique(real_indices, return_inverse=True)
    fake_used, fake_pos = torch.unique(fake_indices, return_inverse=True)
    # Only the drawn rows are read: with n much larger than subsets x size most rows are never needed.
    real_rows = real.detach() if len(real_used) == real.shape[0] else real.detach()[real_used]
    fake_rows = fake.detach().to(device)
    fake_rows = fake_rows if len(fake_used) == fake_rows.shape[0] else fake_rows[fake_used]
    values = _subset_values(real_rows, fake_rows, real_pos, fake_pos, degree, gamma, coef0, dtype)
    if not bool(torch.isfinite(values).all()) and not _check_finite(real, fake):
        # Finite features whose powers overflow float32: float64 has the range.
        values = _subset_values(real_rows, fake_rows, real_pos, fake_pos, degree, gamma, coef0, torch.float64)
    return values


def _check_finite(real: Tensor, fake: Tensor) -> bool:
    """Raise for NaN/Inf features; False when they are finite. Run only when a result is not finite, which
    saves a pass over the features on every ordinary call."""
    if not bool(torch.isfinite(real).all()) or not bool(torch.isfinite(fake).all()):
        raise ValueError("`real` and `fake` must be finite; got NaN or Inf features.")
    return False


def _subset_values(
    real: Tensor,
    fake: Tensor,
    real_pos: Tensor,
    fake_pos: Tensor,
    degree: int,
    gamma: float,
    coef0: float,
    dtype: torch.dtype,
) -> Tensor:
    """MMD² of each subset (rows ``real_pos[s]`` of ``real`` against ``fake_pos[s]`` of ``fake``)."""
    subsets, size = real_pos.shape
    device = real.device
    left, right = _kernel_factors(real, fake, gamma, coef0, dtype)
    split = real.shape[0]
    pairs = size * (size - 1)
    scale = gamma**degree
    if _one_gram_is_cheaper(left.shape[0], real.shape[1], subsets, size):
        # Multiplicity of each distinct row in each subset (a row drawn twice counts twice, as in the gather).
        weights = torch.zeros(left.shape[0], subsets, dtype=torch.float64, device=device)
        columns = torch.arange(subsets, device=device)[:, None].expand(subsets, size)
        ones = torch.ones(subsets * size, dtype=torch.float64, device=device)
        weights.index_put_((real_pos.flatten(), columns.flatten()), ones, accumulate=True)
        weights.index_put_(((fake_pos + split).flatten(), columns.flatten()), ones, accumulate=True)
        k_xx, k_yy, k_xy = _pair_sums(left, right, split, degree, weights)
        return ((k_xx + k_yy) / pairs - 2 * k_xy / (size * size)) * scale
    values = torch.empty(subsets, dtype=torch.float64, device=device)
    for s in range(subsets):
        picked = torch.cat([real_pos[s], fake_pos[s] + split])
        k_xx, k_yy, k_xy = _pair_sums(left[picked], right[picked], size, degree, None)
        values[s] = ((k_xx + k_yy) / pairs - 2 * k_xy / (size * size))[0] * scale
    return values


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
    dtype: torch.dtype = torch.float32,
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
    values = kid_subset_values(
        real, fake, real_idx, fake_idx, degree=degree, gamma=gamma, coef0=coef0, dtype=_check_dtype(dtype)
    )
    return float(values.mean()), float(values.std(correction=0))


class KID(PerSampleMetric):
    """Kernel Inception Distance of the generated samples' features to real features.

    Per-sample features are kept on the CPU (a :class:`~lightning_ganeval.accumulators.FeatureBank`, N × d float32),
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
