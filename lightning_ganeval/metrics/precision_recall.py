"""Improved precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020).

Every sample gets a ball whose radius is the distance to its k-th nearest neighbour *within its own set*,
not counting itself (an exact duplicate does count, at distance 0). With real rows xᵢ (n of them), generated
rows yⱼ (m of them) and radii r(·):

* precision = (1/m) Σⱼ 1[∃ i: ‖yⱼ − xᵢ‖ ≤ r(xᵢ)]  — generated samples inside the real manifold;
* recall    = (1/n) Σᵢ 1[∃ j: ‖xᵢ − yⱼ‖ ≤ r(yⱼ)]  — real samples inside the generated manifold;
* density   = (1/(k·m)) Σⱼ Σᵢ 1[‖yⱼ − xᵢ‖ ≤ r(xᵢ)] — how many real balls hold each generated sample, over k;
* coverage  = (1/n) Σᵢ 1[∃ j: ‖xᵢ − yⱼ‖ ≤ r(xᵢ)]  — real balls that hold at least one generated sample.

Conventions that change the numbers:

* Balls are closed (``≤``), as in torch-fidelity's ``prc_features_to_metric``, whose radius is
  ``kthvalue(k + 1)`` of the distances to its own set including the zero self-distance: the same value. The
  reference density/coverage code (``prdc``) uses open balls (``<``); the two differ only when a distance
  equals a radius exactly (duplicated or quantised features). All four metrics here use the same closed balls,
  so that precision > 0 exactly when density > 0.
* Distances are Euclidean and compared squared; every decision is that of the float64 distance Σ(xᵢ − yⱼ)²
  against the float64 radius (the self-distance is exactly 0). By default (``dtype=torch.float32``) they come
  from float32 products of centred rows, and every comparison within the rigorous float32 error bound of its
  radius is redone in float64 from explicit differences, so exact ties (duplicated or quantised features) are
  decided as in float64. ``dtype=torch.float64`` computes every distance in float64 as ‖x‖² + ‖y‖² − 2xᵀy (clamped
  at 0); the two can differ only for a distance within ~1e-13 relative of a radius that is not an exact tie.
  torch-fidelity uses float32 ``torch.cdist``; the decisions agree except for distances within float32 rounding
  of a radius.
* k = 3 by default (torch-fidelity's ``prc_neighborhood``, StyleGAN's ``pr50k3``; Naeem et al. use k = 5).

Memory is O(block_size x max(n, m)) besides the inputs: the n x n, m x m and n x m distance matrices are
never held whole, so 50,000 samples per side fit on one GPU (about 6 bytes x block_size x 50,000 = 3 GB at
the default block size in float32, plus float32 centred copies of the features; float64: 9 bytes and float64
copies).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_ganeval.metrics.base import PerSampleMetric, check_feature_pair, check_int, ieee_float32_matmul

__all__ = ["PrecisionRecall", "precision_recall_density_coverage"]


def _check_args(real: Tensor, fake: Tensor, k: int, block_size: int) -> None:
    check_feature_pair(real, fake)
    check_int("k", k, 1)
    for name, x in (("real", real), ("fake", fake)):
        if k >= x.shape[0]:
            raise ValueError(
                f"`k` must be smaller than the number of rows of each set (a k-th neighbour other than the sample "
                f"itself is needed), got k={k} with {x.shape[0]} `{name}` rows."
            )
    check_int("block_size", block_size, 1)


def _squared_distances(a: Tensor, a_norms: Tensor, b: Tensor, b_norms: Tensor) -> Tensor:
    """‖aᵢ − bⱼ‖² for a block of rows ``a`` against every row of ``b``, clamped at 0 (one new allocation)."""
    out = torch.addmm(b_norms.unsqueeze(0), a, b.T, beta=1.0, alpha=-2.0)
    return out.add_(a_norms.unsqueeze(1)).clamp_min_(0.0)


def _kth_neighbour_sq_radii(x: Tensor, norms: Tensor, k: int, block_size: int) -> Tensor:
    """Squared distance from each row to its k-th nearest other row (duplicates count, self does not)."""
    radii = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], block_size):
        block = _squared_distances(x[start : start + block_size], norms[start : start + block_size], x, norms)
        # Rounding can leave ‖x‖² + ‖x‖² − 2xᵀx slightly above 0; the self-distance is exactly 0.
        block.diagonal(offset=start).zero_()
        # The (k+1)-th smallest including self: the k-th neighbour whatever the self-distance's rank among ties.
        radii[start : start + block.shape[0]] = block.topk(k + 1, dim=1, largest=False, sorted=True).values[:, k]
    return radii


# Stored nearest-neighbour candidates per row beyond the k + 1 needed: a row whose candidate band holds more
# is recomputed whole (rare: many ties or near-ties at its radius).
_SPARE_CANDIDATES = 8
# Pairs whose float64 distance is recomputed at once; bounds the temporary to this many rows of d float64 values.
_RECHECK_CHUNK = 4096
# Rows per block of the symmetric within-set distances: the lower triangle of blocks skips about half of them.
_TRIANGLE_BLOCK = 1024


def _float32_error_scale(d: int) -> float:
    """c such that |D₃₂ − ‖x − y‖²| <= c (‖x̃‖² + ‖ỹ‖²) for the float32 distances of :func:`_distance_factors`.

    Rounding the centred float64 rows x̃, ỹ to float32 moves ‖x̃ − ỹ‖² by at most (4u + 2u²)(‖x̃‖² + ‖ỹ‖²)
    (u = 2⁻²⁴). D₃₂ is one float32 inner product of d + 2 terms, (x̃, ‖x̃‖², 1)·(−2ỹ, 1, ‖ỹ‖²), whose absolute
    terms sum to at most 2(‖x̃‖² + ‖ỹ‖²); in any summation order it errs by at most γ_{d+2} = (d + 2)u/(1 − (d + 2)u)
    times that (Higham, Accuracy and Stability, 3.1), and the norms' own rounding adds u each. The float64
    recomputation errs by ~dε₆₄ relative. The bound below covers all of it with room to spare.
    """
    u = 2.0**-24
    return 2 * (d + 16) * u / (1 - (d + 16) * u) + 8 * d * 2.0**-53


def _distance_factors(rows: Tensor, shift: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """float32 (x̃, ‖x̃‖², 1) and (−2x̃, 1, ‖x̃‖²) of the rows x̃ = x − shift, and float64 ‖x̃‖² per row.

    left_i · right_j = ‖x̃ᵢ‖² + ‖x̃ⱼ‖² − 2x̃ᵢᵀx̃ⱼ: one matrix product gives the squared distances, no element-wise
    pass. The subtraction rounds each centred value once (relative error at most u = 2⁻²⁴).
    """
    n, d = rows.shape
    left = torch.empty(n, d + 2, dtype=torch.float32, device=rows.device)
    if rows.dtype == shift.dtype == torch.float32:
        torch.sub(rows, shift, out=left[:, :d])
    else:
        left[:, :d] = rows.to(torch.float64) - shift.to(torch.float64)
    norms = torch.linalg.vector_norm(left[:, :d], dim=1, dtype=torch.float64).square_()
    right = left.mul(-2.0)  # exact: a power of 2
    left[:, d], left[:, d + 1] = norms, 1.0
    right[:, d], right[:, d + 1] = 1.0, norms
    return left, right, norms


def _exact_squared_distances(a: Tensor, rows: Tensor, b: Tensor, cols: Tensor) -> Tensor:
    """Σ (a[rows] − b[cols])² in float64, from explicit differences, for index vectors of equal length."""
    out = torch.empty(len(rows), dtype=torch.float64, device=a.device)
    for start in range(0, len(rows), _RECHECK_CHUNK):
        stop = start + _RECHECK_CHUNK
        diff = a[rows[start:stop]].to(torch.float64) - b[cols[start:stop]].to(torch.float64)
        out[start:stop] = diff.square_().sum(dim=1)
    return out


def _round_down(value: Tensor) -> Tensor:
    """float64 → float32 rounded towards −∞ (never above ``value``)."""
    low = value.to(torch.float32)
    return torch.where(low.to(torch.float64) > value, torch.nextafter(low, low.new_tensor(-float("inf"))), low)


def _round_up(value: Tensor) -> Tensor:
    """float64 → float32 rounded towards +∞ (never below ``value``)."""
    high = value.to(torch.float32)
    return torch.where(high.to(torch.float64) < value, torch.nextafter(high, high.new_tensor(float("inf"))), high)


def _merge_smallest(values: Tensor, indices: Tensor, new_values: Tensor, new_indices: Tensor) -> None:
    """Keep, in place, the ``values.shape[1]`` smallest of (values, new_values) per row, sorted, with indices."""
    width = values.shape[1]
    kept, order = torch.cat([values, new_values], dim=1).topk(width, dim=1, largest=False, sorted=True)
    indices.copy_(torch.cat([indices, new_indices], dim=1).gather(1, order))
    values.copy_(kept)


def _nearest_float32(left: Tensor, right: Tensor, k: int, block_size: int) -> tuple[Tensor, Tensor]:
    """The k + 1 + _SPARE_CANDIDATES smallest float32 squared distances of each row to the rows of its own set
    (self included, at exactly 0), sorted, and their column indices.

    Only the lower triangle is computed, one strip of rows at a time against every row up to the strip's end:
    the matrix is symmetric, so a strip serves its rows (one ``topk`` along its rows) and, read down its
    columns, the earlier rows (one ``topk`` along its columns, merged with what they hold). A strip at a time
    rather than a block: each operation runs on every thread and waits for all of them, which on a loaded
    machine costs far more than its work, and strips take a tenth as many operations as square blocks.
    """
    n = left.shape[0]
    width = min(n, k + 1 + _SPARE_CANDIDATES)
    device = left.device
    best = torch.full((n, width), float("inf"), dtype=torch.float32, device=device)
    best_idx = torch.zeros((n, width), dtype=torch.long, device=device)
    step = min(block_size, _TRIANGLE_BLOCK)
    # One buffer for every strip: a fresh allocation of this size costs a page fault per 4 KiB.
    buffer = torch.empty(step * n, dtype=torch.float32, device=device)
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        dist = torch.matmul(left[lo:hi], right[:hi].T, out=buffer[: (hi - lo) * hi].view(hi - lo, hi))
        dist[:, lo:hi].diagonal().zero_()  # the self-distance is exactly 0
        values, where = dist.topk(min(width, hi), dim=1, largest=False, sorted=True)
        _merge_smallest(best[lo:hi], best_idx[lo:hi], values, where)
        if lo > 0:
            values, where = dist[:, :lo].topk(min(width, hi - lo), dim=0, largest=False, sorted=True)
            _merge_smallest(best[:lo], best_idx[:lo], values.T, where.T + lo)
    return best, best_idx


def _exact_radii(
    which: Tensor,
    nearest: tuple[Tensor, Tensor],
    factors: tuple[Tensor, Tensor],
    rows: Tensor,
    tolerance: Tensor,
    k: int,
    block_size: int,
) -> Tensor:
    """float64 squared k-NN radii (duplicates count, self does not) of the rows ``which`` of ``rows``.

    The true distances lie within ``tolerance`` (per row) of the float32 ones, so with t the float32 (k+1)-th
    smallest of a row, every entry below t − 2·tolerance is truly below the (k+1)-th smallest and every entry
    above t + 2·tolerance truly above it. The entries in between (usually the one at t alone) are recomputed in
    float64 from explicit differences, and the radius is the right-ranked one among them. A row with more such
    entries than :func:`_nearest_float32` kept is recomputed against every row.
    """
    best, best_idx = nearest[0][which], nearest[1][which]
    left, right = factors
    count, width = best.shape
    device = best.device
    tol = tolerance[which]
    kth = best[:, k].to(torch.float64)
    low, high = _round_down(kth - 2 * tol)[:, None], _round_up(kth + 2 * tol)[:, None]
    below = (best < low).sum(dim=1)
    candidate = (best >= low) & (best <= high)
    overflow = candidate[:, -1].clone() if width < rows.shape[0] else torch.zeros_like(candidate[:, 0])
    candidate[overflow] = False
    pos, slots = candidate.nonzero(as_tuple=True)
    cols = best_idx[pos, slots]
    full = overflow.nonzero().flatten()
    for start in range(0, len(full), block_size):
        chunk = full[start : start + block_size]
        dist = left[which[chunk]] @ right.T
        dist[torch.arange(len(chunk), device=device), which[chunk]] = 0.0
        below[chunk] = (dist < low[chunk]).sum(dim=1)
        r, c = ((dist >= low[chunk]) & (dist <= high[chunk])).nonzero(as_tuple=True)
        pos, cols = torch.cat([pos, chunk[r]]), torch.cat([cols, c])
    exact = _exact_squared_distances(rows, which[pos], rows, cols)
    # Sort by row, then by value: the radius is the (k − below)-th (0-based) value of each row's run.
    order = exact.argsort(stable=True)
    order = order[pos[order].argsort(stable=True)]
    counts = torch.bincount(pos, minlength=count)
    starts = torch.cumsum(counts, dim=0) - counts
    return exact[order][starts + k - below]


def _fast_counts(real: Tensor, fake: Tensor, k: int, block_size: int) -> tuple[Tensor, Tensor, Tensor] | None:
    """(real balls holding each fake row, real rows in some fake ball, real balls holding some fake row).

    float32 distances of centred rows decide every comparison farther than the float32 error bounds (of the
    distance and of the radius) from the float32 radius; the few within them are recomputed in float64 from
    explicit differences, with the float64 radius of the rows concerned, so every decision is that of the float64
    distances Σ(xᵢ − yⱼ)² against the float64 radii. ``real`` and ``fake`` are the features in any floating
    dtype (float32 features are converted to float64 only for the rows recomputed). Returns None when the
    centred rows are not finite (non-finite input, or values near the float32 limit).
    """
    # Distances do not depend on the shift; centred rows have smaller norms, hence smaller rounding. The shift is
    # the real mean rounded to the rows' dtype, so that float32 rows are centred in one rounding step.
    shift = real.mean(dim=0, dtype=torch.float64).to(torch.float32 if real.dtype == torch.float32 else torch.float64)
    x_factors = _distance_factors(real, shift)
    y_factors = _distance_factors(fake, shift)
    x_norms, y_norms = x_factors[2], y_factors[2]
    if not bool(torch.isfinite(x_norms).all()) or not bool(torch.isfinite(y_norms).all()):
        return None
    scale = _float32_error_scale(real.shape[1])
    n, m = real.shape[0], fake.shape[0]
    device = real.device
    x_tol, y_tol = scale * (x_norms + x_norms.max()), scale * (y_norms + y_norms.max())
    # Bounds for a real row's pairs with any fake row, and for a fake row's pairs with any real row.
    row_tol, col_tol = scale * (x_norms + y_norms.max()), scale * (x_norms.max() + y_norms)
    real_balls_per_fake = torch.zeros(m, dtype=torch.long, device=device)
    real_in_fake_ball = torch.empty(n, dtype=torch.bool, device=device)
    real_ball_covered = torch.empty(n, dtype=torch.bool, device=device)
    near_real: list[tuple[Tensor, Tensor]] = []
    near_fake: list[tuple[Tensor, Tensor]] = []
    with ieee_float32_matmul():
        x_nearest = _nearest_float32(x_factors[0], x_factors[1], k, block_size)
        y_nearest = _nearest_float32(y_factors[0], y_factors[1], k, block_size)
        # A pair is decided in float32 when it is farther from the float32 radius than both bounds together.
        x_kth, y_kth = x_nearest[0][:, k].to(torch.float64), y_nearest[0][:, k].to(torch.float64)
        row_low = _round_down(x_kth - x_tol - row_tol)[:, None]
        row_high = _round_up(x_kth + x_tol + row_tol)[:, None]
        col_low, col_high = _round_down(y_kth - y_tol - col_tol), _round_up(y_kth + y_tol + col_tol)
        # Row blocks of at most _TRIANGLE_BLOCK rows in buffers allocated once: a fresh allocation of this size
        # costs a page fault per 4 KiB, and smaller blocks keep the comparisons' passes closer to the cache.
        step = min(block_size, _TRIANGLE_BLOCK)
        buffer = torch.empty(step * m, dtype=torch.float32, device=device)
        sure_buffer = torch.empty(step * m, dtype=torch.bool, device=device)
        near_buffer = torch.empty_like(sure_buffer)
        for start in range(0, n, step):
            stop = min(start + step, n)
            size = (stop - start) * m
            dist = torch.matmul(x_factors[0][start:stop], y_factors[1].T, out=buffer[:size].view(-1, m))
            sure, near = sure_buffer[:size].view(-1, m), near_buffer[:size].view(-1, m)
            # Precision, density, coverage: the real row's ball.
            torch.le(dist, row_low[start:stop], out=sure)
            real_balls_per_fake += sure.sum(dim=0)
            real_ball_covered[start:stop] = sure.any(dim=1)
            torch.le(dist, row_high[start:stop], out=near).logical_xor_(sure)
            rows, cols = near.nonzero(as_tuple=True)
            near_real.append((rows + start, cols))
            # Recall: the fake row's ball.
            torch.le(dist, col_low, out=sure)
            real_in_fake_ball[start:stop] = sure.any(dim=1)
            torch.le(dist, col_high, out=near).logical_xor_(sure)
            rows, cols = near.nonzero(as_tuple=True)
            near_fake.append((rows + start, cols))
        # The undecided pairs, against the float64 radii of the rows they concern.
        rows, cols = (torch.cat(part) for part in zip(*near_real, strict=True))
        if len(rows):
            which, position = torch.unique(rows, return_inverse=True)
            radii = _exact_radii(which, x_nearest, x_factors[:2], real, x_tol, k, block_size)[position]
            inside = _exact_squared_distances(real, rows, fake, cols) <= radii
            real_balls_per_fake.index_add_(0, cols[inside], torch.ones_like(cols[inside]))
            real_ball_covered[rows[inside]] = True
        rows, cols = (torch.cat(part) for part in zip(*near_fake, strict=True))
        if len(rows):
            which, position = torch.unique(cols, return_inverse=True)
            radii = _exact_radii(which, y_nearest, y_factors[:2], fake, y_tol, k, block_size)[position]
            inside = _exact_squared_distances(real, rows, fake, cols) <= radii
            real_in_fake_ball[rows[inside]] = True
    return real_balls_per_fake, real_in_fake_ball, real_ball_covered


def precision_recall_density_coverage(
    real: Tensor,
    fake: Tensor,
    *,
    k: int = 3,
    block_size: int = 10_000,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """Precision, recall, density and coverage of generated features against real ones (k-NN balls).

    Precision and recall equal torch-fidelity's ``prc_features_to_metric(fake, real, prc_neighborhood=k)``
    (its ``input1`` is the generated set); density and coverage follow Naeem et al. 2020 with the same closed
    balls. See the module docstring for the definitions and conventions.

    Args:
        real: ``(n, d)`` real features.
        fake: ``(m, d)`` generated features.
        k: Neighbourhood size: each ball's radius is the distance to the k-th nearest neighbour in its own set,
            excluding the sample itself; 1 <= k < min(n, m).
        block_size: Rows of distances computed at once; memory is about 9 x block_size x max(n, m) bytes.
        device: Where to compute (default: ``real``'s device). The features are copied there in float64.
        dtype: Precision of the distance matrices. ``torch.float32`` (default) computes them in float32 from
            centred rows and settles every comparison within the float32 error bound of its radius in float64
            (explicit differences), so the counts are those of float64 distances, at about half the cost.
            ``torch.float64`` computes every distance in float64 as ‖x‖² + ‖y‖² − 2xᵀy.

    Returns:
        ``{"precision", "recall", "density", "coverage"}`` as Python floats; precision, recall and coverage lie
        in [0, 1], density in [0, n/k].

    Raises:
        ValueError: non-2-D inputs, different d, ``k < 1``, ``k >= n`` or ``k >= m``, ``block_size < 1`` or
            non-finite features.

    Example:
        >>> import torch
        >>> real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> fake = torch.tensor([[0.5], [4.0], [9.0]])
        >>> precision_recall_density_coverage(real, fake, k=1)["precision"]  # 9 is in no real ball
        0.6666666666666666
    """
    _check_args(real, fake, k, block_size)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"`dtype` must be torch.float32 or torch.float64, got {dtype!r}.")
    target = torch.device(device) if device is not None else real.device
    if dtype == torch.float32:
        x, y = real.detach().to(target), fake.detach().to(target)
        x = x if x.is_floating_point() else x.to(torch.float64)
        y = y if y.is_floating_point() else y.to(torch.float64)
        counts = _fast_counts(x, y, k, block_size)  # None: not finite, checked below (one pass fewer when finite)
        if counts is not None:
            return _fractions(*counts, k)
    x = real.detach().to(device=target, dtype=torch.float64)
    y = fake.detach().to(device=target, dtype=torch.float64)
    if not bool(torch.isfinite(x).all()) or not bool(torch.isfinite(y).all()):
        raise ValueError("`real` and `fake` must be finite; got NaN or Inf features.")
    n, m = x.shape[0], y.shape[0]
    x_norms = x.square().sum(dim=1)
    y_norms = y.square().sum(dim=1)
    real_radii = _kth_neighbour_sq_radii(x, x_norms, k, block_size)
    fake_radii = _kth_neighbour_sq_radii(y, y_norms, k, block_size)

    # One pass over real x fake distances serves all four metrics.
    real_balls_per_fake = torch.zeros(m, dtype=torch.long, device=target)
    real_in_fake_ball = torch.empty(n, dtype=torch.bool, device=target)
    real_ball_covered = torch.empty(n, dtype=torch.bool, device=target)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        dist = _squared_distances(x[start:stop], x_norms[start:stop], y, y_norms)
        in_real_ball = dist <= real_radii[start:stop].unsqueeze(1)
        real_balls_per_fake += in_real_ball.sum(dim=0)
        real_ball_covered[start:stop] = in_real_ball.any(dim=1)
        del in_real_ball
        real_in_fake_ball[start:stop] = (dist <= fake_radii.unsqueeze(0)).any(dim=1)
        del dist

    return _fractions(real_balls_per_fake, real_in_fake_ball, real_ball_covered, k)


def _fractions(
    real_balls_per_fake: Tensor, real_in_fake_ball: Tensor, real_ball_covered: Tensor, k: int
) -> dict[str, float]:
    n, m = len(real_in_fake_ball), len(real_balls_per_fake)
    return {
        "precision": int((real_balls_per_fake > 0).sum()) / m,
        "recall": int(real_in_fake_ball.sum()) / n,
        "density": int(real_balls_per_fake.sum()) / (k * m),
        "coverage": int(real_ball_covered.sum()) / n,
    }


class PrecisionRecall(PerSampleMetric):
    """Precision, recall, density and coverage of the generated samples against real samples (k-NN manifolds).

    Per-sample features are kept on the CPU, gathered once per evaluation in global sample order and compared in
    blocks on the evaluation device (:func:`precision_recall_density_coverage`).

    Args:
        name: ``"pr"`` (default) returns the keys ``precision``, ``recall``, ``density``, ``coverage`` and
            ``pr_num_samples``; any other name prefixes them all (``<name>_precision``, ...), so that two instances
            can coexist.
        feature_extractor: Feature network (default: the evaluator's Inception, pool3 features; published pr50k3
            numbers use VGG16 features instead, so they are not comparable).
        layer: Network output to read.
        k: Neighbourhood size of the k-NN balls.
        max_real: Real feature rows kept (a seeded uniform sample of the whole real set).
        block_size: Rows of pairwise distances computed at once on the evaluation device.
    """

    def __init__(
        self,
        *,
        name: str = "pr",
        feature_extractor: torch.nn.Module | None = None,
        layer: str | None = None,
        k: int = 3,
        max_real: int = 10_000,
        block_size: int = 10_000,
    ) -> None:
        super().__init__(name=name, feature_extractor=feature_extractor, layer=layer, max_real=max_real)
        self.k = check_int("k", k, 1)
        self.block_size = block_size

    def key(self, what: str) -> str:
        """The returned key of ``what`` (``precision``, ``recall``, ``density``, ``coverage``, ``num_samples``)."""
        return what if self.name == "pr" and what != "num_samples" else f"{self.name}_{what}"

    def keys(self) -> list[str]:
        return [self.key(w) for w in ("precision", "recall", "density", "coverage", "num_samples")]

    def primary_key(self) -> str:
        return self.key("precision")

    def min_samples(self) -> int:
        return self.k + 1

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "k": self.k}

    def check_real(self, count: int) -> None:
        if count <= self.k:
            raise ValueError(
                f"`{self.name}`: k={self.k} needs more than k real samples, got {count}; lower `k` or use more real"
                " data."
            )

    def compute(self) -> dict[str, float]:
        fake = self.generated_features()
        self._nan_reasons = {}
        if len(fake) <= self.k:
            values = dict.fromkeys(("precision", "recall", "density", "coverage"), float("nan"))
            reason = (
                f"only {len(fake)} of the {self.num_samples} generated samples were finite (the others held NaN or"
                f" Inf and were left out); k={self.k} nearest neighbours need more than {self.k}"
            )
            self._nan_reasons = {self.key(w): reason for w in values}
        else:
            values = precision_recall_density_coverage(
                self.real_features(), fake, k=self.k, block_size=self.block_size, device=self._device
            )
        values["num_samples"] = float(len(fake))
        return {self.key(w): float(v) for w, v in values.items()}
