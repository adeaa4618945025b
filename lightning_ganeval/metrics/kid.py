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
the large common part added in float64; the kernel values, less a constant near all of them (which cancels in
MMD²), are summed in float32 over at most a few thousand terms and those sums added in float64. The result is
within 1e-5 of the kernel's scale (the mean k(x, y), the size of the three kernel means whose difference MMD² is)
of the all-float64 computation (``dtype=torch.float64``); measured on pool3-like features: ~4e-9 of the scale,
the float32 rounding of the kernel values themselves (the same as with float64 sums), ~1e-6 of a KID of
2e-2. Everything runs on the device of the inputs. The subsets are drawn by a CPU
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

from lightning_ganeval.metrics.base import PerSampleMetric, check_feature_pair, check_int, ieee_float32_matmul

__all__ = ["KID", "kid_from_features", "kid_subset_values", "mmd2_unbiased"]

# Rows per block of a Gram matrix. One Gram matrix of every drawn row (or of all rows, for mmd2_unbiased) is
# computed in blocks of this many rows against the rows before them (the lower triangle by blocks, about 2 % of
# the upper half computed at 20,000 rows); a subset of 2 x 1000 rows in blocks of half as many (4 blocks of 250
# per side: 12 % more than the exact half, against 50 % more with one block per side).
_BLOCK_ROWS = 512
# Budget of the gathered rows of the subsets computed together (one batched product per block), in bytes: larger
# batches mean fewer, larger operations (each parallel operation waits for every thread, which costs far more
# than its work on a loaded machine), smaller ones less memory.
_BATCH_BYTES = 96 * 2**20


def _check_dtype(dtype: object) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"`dtype` must be torch.float32 or torch.float64, got {dtype!r}.")
    assert isinstance(dtype, torch.dtype)
    return dtype


def _resolve_kernel(d: int, degree: int, gamma: float | None, coef0: float) -> tuple[int, float, float]:
    degree = check_int("degree", degree, 1)
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


def _gram_sums(left: Tensor, right: Tensor, split: int, degree: int, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Kernel sums of weighted rows: real rows are the first ``split`` of ``left``/``right``, generated the rest.

    Returns, for each column w of ``weights`` (per-row multiplicities: a subset of rows, possibly with repeats, or
    every row once), Σ_{p≠q} k over the pairs of positions of the real rows (wᵀKw − Σᵢ wᵢKᵢᵢ), the same for the
    generated rows, and Σ k over the real-generated pairs (wₓᵀKwᵧ), as float64 ``(columns,)`` tensors.

    K = (left rightᵀ)^degree is computed by row blocks aligned with the real/generated boundary, each against the
    rows up to the end of the block only: the within-set sums are twice the strictly lower blocks plus the
    diagonal blocks, so about half of the two within-set products is skipped. Each block is reduced at once by
    one more product, Wᵀ K (the float32 sums of at most ``_BLOCK_ROWS`` terms), whose columns are weighted and
    summed in float64. The block and the reductions are written into buffers allocated once: a fresh allocation
    of this size costs a page fault per 4 KiB, more than the power itself.
    """
    n = left.shape[0]
    count = weights.shape[1]
    device = left.device
    w = weights.to(left.dtype).T.contiguous()  # (count, n), exact: small integers
    w64 = weights.to(torch.float64).T.contiguous()
    w64_twice = w64 * 2  # the strictly lower blocks stand for the upper ones too
    sums = torch.zeros(3, count, dtype=torch.float64, device=device)  # within real, within generated, cross
    centre = _typical_kernel(left, degree)
    bounds = _block_bounds(0, split, _BLOCK_ROWS) + _block_bounds(split, n, _BLOCK_ROWS)[1:]
    widest = max(hi - lo for lo, hi in itertools.pairwise(bounds))
    block_buffer = torch.empty(widest * n, dtype=left.dtype, device=device)
    reduced_buffer = torch.empty(count * n, dtype=left.dtype, device=device)
    reduced64_buffer = torch.empty(count * n, dtype=torch.float64, device=device)
    with ieee_float32_matmul():
        for lo, hi in itertools.pairwise(bounds):
            kernel = torch.matmul(left[lo:hi], right[:hi].T, out=block_buffer[: (hi - lo) * hi].view(hi - lo, hi))
            if degree != 1:
                kernel.pow_(degree)
            kernel.sub_(centre)
            reduced = torch.matmul(w[:, lo:hi], kernel, out=reduced_buffer[: count * hi].view(count, hi))
            reduced64 = reduced64_buffer[: count * hi].view(count, hi).copy_(reduced)
            trace = w64[:, lo:hi] @ kernel[:, lo:hi].diagonal().to(torch.float64)
            first = 0 if lo < split else split  # the first column of the block's own set
            row = 0 if lo < split else 1
            sums[row] += _column_dots(reduced64, w64_twice, first, lo) + _column_dots(reduced64, w64, lo, hi) - trace
            if lo >= split:
                sums[2] += _column_dots(reduced64, w64, 0, split)
    return sums[0], sums[1], sums[2]


def _typical_kernel(left: Tensor, degree: int) -> float:
    """The kernel's base to the power ``degree`` at the mean row (centred row 0, offset the mean offset): a value
    near every kernel value, subtracted from each before the sums.

    Every kernel mean of MMD² (within real, within generated, cross) shifts by the same constant, which cancels
    in k̄ₓₓ + k̄ᵧᵧ − 2k̄ₓᵧ; the float32 sums then add the kernel's variations around it instead of its
    large common part, and their rounding shrinks with them (measured: 30x less on pool3-like features).
    """
    base = 2 * float(left[:, -2].mean(dtype=torch.float64)) if left.dtype == torch.float32 else 0.0
    return base**degree


def _column_dots(reduced: Tensor, weights: Tensor, lo: int, hi: int) -> Tensor:
    """Σⱼ reduced[s, j] weights[s, j] over the columns lo:hi, for each row s (zeros for no columns)."""
    if hi <= lo:
        return reduced.new_zeros(reduced.shape[0])
    # A batch of (1 x len) @ (len x 1) products: one pass, no temporary of the products.
    return torch.bmm(reduced[:, None, lo:hi], weights[:, lo:hi, None]).flatten()


def _subset_sums(
    left: Tensor, right: Tensor, split: int, degree: int, real_pos: Tensor, fake_pos: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The kernel sums of :func:`_gram_sums` for each subset (rows ``real_pos[s]`` and ``split + fake_pos[s]``),
    from each subset's own Gram matrix.

    Subsets are computed a batch at a time: their rows gathered into one buffer, one batched product and one
    power per row block for the whole batch, and float32 row sums (of at most 2 x subset_size terms) added in
    float64.
    """
    subsets, size = real_pos.shape
    width = left.shape[1]
    device = left.device
    picked = torch.cat([real_pos, fake_pos + split], dim=1)  # (subsets, 2 size)
    batch = max(1, min(subsets, _BATCH_BYTES // (2 * 2 * size * width * left.element_size())))
    bounds = _block_bounds(0, size, _BLOCK_ROWS // 2) + _block_bounds(size, 2 * size, _BLOCK_ROWS // 2)[1:]
    widest = max(hi - lo for lo, hi in itertools.pairwise(bounds))
    left_buffer = torch.empty(batch * 2 * size, width, dtype=left.dtype, device=device)
    right_buffer = torch.empty_like(left_buffer)
    block_buffer = torch.empty(batch * widest * 2 * size, dtype=left.dtype, device=device)
    sums = torch.zeros(3, subsets, dtype=torch.float64, device=device)
    centre = _typical_kernel(left, degree)
    with ieee_float32_matmul():
        for start in range(0, subsets, batch):
            rows = picked[start : start + batch]
            b = rows.shape[0]
            x = torch.index_select(left, 0, rows.flatten(), out=left_buffer[: b * 2 * size]).view(b, 2 * size, width)
            y = torch.index_select(right, 0, rows.flatten(), out=right_buffer[: b * 2 * size]).view(b, 2 * size, width)
            for lo, hi in itertools.pairwise(bounds):
                out = block_buffer[: b * (hi - lo) * hi].view(b, hi - lo, hi)
                kernel = torch.bmm(x[:, lo:hi], y[:, :hi].transpose(1, 2), out=out)
                if degree != 1:
                    kernel.pow_(degree)
                kernel.sub_(centre)
                trace = kernel[:, :, lo:hi].diagonal(dim1=1, dim2=2).sum(dim=1, dtype=torch.float64)
                first = 0 if lo < size else size
                own = _row_sums(kernel, first, lo) * 2 + _row_sums(kernel, lo, hi) - trace
                sums[0 if lo < size else 1, start : start + b] += own
                if lo >= size:
                    sums[2, start : start + b] += _row_sums(kernel, 0, size)
    return sums[0], sums[1], sums[2]


def _row_sums(kernel: Tensor, lo: int, hi: int) -> Tensor:
    """Σ over the columns lo:hi and the rows of each batch entry: float32 row sums, added in float64."""
    if hi <= lo:
        return kernel.new_zeros(kernel.shape[0], dtype=torch.float64)
    return kernel[:, :, lo:hi].sum(dim=2).sum(dim=1, dtype=torch.float64)


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
    The Gram matrices are computed in blocks of rows, so memory is O(512 x (n + m)), not O(n²).

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
    check_feature_pair(real, fake)
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] < 2:
            raise ValueError(f"`{name}` must have at least 2 rows for the unbiased MMD², got {x.shape[0]}.")
    degree, gamma, coef0 = _resolve_kernel(real.shape[1], degree, gamma, coef0)
    dtype = _check_dtype(dtype)
    n, m = real.shape[0], fake.shape[0]
    for attempt in (dtype, torch.float64):
        left, right = _kernel_factors(real.detach(), fake.detach(), gamma, coef0, attempt)
        ones = torch.ones(n + m, 1, dtype=torch.float64, device=left.device)
        k_xx, k_yy, k_xy = _gram_sums(left, right, n, degree, ones)
        value = float(k_xx / (n * (n - 1)) + k_yy / (m * (m - 1)) - 2 * k_xy / (n * m)) * gamma**degree
        if math.isfinite(value) or _check_finite(real, fake):
            return value
    return value


def _one_gram_is_cheaper(used: int, d: int, subsets: int, size: int) -> bool:
    """Whether one Gram matrix of the ``used`` distinct rows costs less than one per subset of 2 x ``size`` rows.

    Both compute the lower triangle by row blocks (the diagonal blocks whole): used (used + block) d / 2
    multiply-adds once, plus the product with the (used x subsets) multiplicity matrix, against
    subsets x 2 size (2 size + block / 2) d / 2.
    """
    one = used * (used + _BLOCK_ROWS) * (d + subsets) / 2
    per_subset = subsets * 2 * size * (2 * size + _BLOCK_ROWS // 2) * d / 2
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
    distinct rows serves every subset, through products with each subset's row multiplicities; otherwise each
    subset gets its own, a batch of subsets at a time. Both give the same sums up to rounding.

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
    check_feature_pair(real, fake)
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
    real_used, real_pos = _used_rows(real_indices, real.shape[0])
    fake_used, fake_pos = _used_rows(fake_indices, fake.shape[0])
    # Only the drawn rows are read: with n much larger than subsets x size most rows are never needed.
    real_rows = real.detach() if len(real_used) == real.shape[0] else real.detach()[real_used]
    fake_rows = fake.detach().to(device)
    fake_rows = fake_rows if len(fake_used) == fake_rows.shape[0] else fake_rows[fake_used]
    values = _subset_values(real_rows, fake_rows, real_pos, fake_pos, degree, gamma, coef0, dtype)
    if not bool(torch.isfinite(values).all()) and not _check_finite(real, fake):
        # Finite features whose powers overflow float32: float64 has the range.
        values = _subset_values(real_rows, fake_rows, real_pos, fake_pos, degree, gamma, coef0, torch.float64)
    return values


def _used_rows(indices: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """The distinct rows drawn, ascending, and each index's position among them (``torch.unique``'s inverse),
    through a mask of the rows rather than a sort of every index (1.1 s for 2 x 100,000 indices, loaded)."""
    if len(indices) == 0 or int(indices.min()) < 0 or int(indices.max()) >= rows:
        return torch.unique(indices, return_inverse=True)  # let indexing raise or wrap as it does
    drawn = torch.zeros(rows, dtype=torch.bool, device=indices.device)
    drawn[indices.flatten()] = True
    used = drawn.nonzero().flatten()
    position = torch.cumsum(drawn, dim=0) - 1
    return used, position[indices]


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
        k_xx, k_yy, k_xy = _gram_sums(left, right, split, degree, weights)
    else:
        k_xx, k_yy, k_xy = _subset_sums(left, right, split, degree, real_pos, fake_pos)
    return ((k_xx + k_yy) / pairs - 2 * k_xy / (size * size)) * scale


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
    check_feature_pair(real, fake)
    subsets = check_int("subsets", subsets, 1)
    subset_size = check_int("subset_size", subset_size, 2)
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
        self.subsets = check_int("subsets", subsets, 1)
        self.subset_size = check_int("subset_size", subset_size, 2)
        self.seed = check_int("seed", seed, 0)

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
