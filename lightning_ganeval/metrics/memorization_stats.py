"""The statistics behind the memorisation scores: k-nearest neighbours in blocks, AuthPct from neighbours,
exact PCA, seeded k-means, the Mann–Whitney U of two samples and the C_T statistic of the cells (float64).

They are the pieces of :mod:`lightning_ganeval.metrics.memorization` (whose docstring states the conventions that
can change the numbers), kept apart so that each file holds one job: here the statistics, there the training-side
reference, the per-evaluation scores and the metric unit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "CT_CELLS",
    "CT_KMEANS_INIT",
    "CT_PCA_DIMS",
    "CT_TAU_COUNT",
    "assign_to_centres",
    "authpct_from_neighbours",
    "check_rows",
    "ct_statistic",
    "fit_kmeans",
    "fit_pca",
    "mann_whitney_u",
    "nearest_neighbours",
]

#: dgm-eval's constants (``metrics/ct.py``): PCA width, k-means cells and initialisations, τ = CT_TAU_COUNT / m.
CT_PCA_DIMS = 64
CT_CELLS = 3
CT_KMEANS_INIT = 10
CT_TAU_COUNT = 20


def check_rows(name: str, x: Tensor, width: int | None = None) -> None:
    """Refuse anything but a 2-D tensor of finite rows (of ``width`` columns, if given), naming the argument."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D (rows, features) tensor, got shape {tuple(x.shape)}.")
    if width is not None and x.shape[1] != width:
        raise ValueError(f"`{name}` must have {width} features per row like the training rows, got {x.shape[1]}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"`{name}` must be finite; got NaN or Inf features.")


def nearest_neighbours(
    queries: Tensor,
    reference: Tensor,
    *,
    block_size: int = 4096,
    exclude_self: bool = False,
    query_cells: Tensor | None = None,
    reference_cells: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Distance and index of each query row's nearest reference row, in blocks of ``block_size`` query rows.

    Memory is about 8 × block_size × len(reference) bytes besides the inputs: no query × reference matrix is
    held whole. The neighbour is found with ‖q‖² + ‖r‖² − 2qᵀr, then its distance recomputed as ‖q − r‖.

    Args:
        queries: ``(m, d)`` float64 rows.
        reference: ``(n, d)`` float64 rows on the same device.
        block_size: Query rows per block.
        exclude_self: ``queries`` is ``reference``: row i's own entry is skipped (a duplicate row still counts,
            at distance 0).
        query_cells: ``(m,)`` cell labels: a query's neighbour is searched among the reference rows of its cell.
        reference_cells: ``(n,)`` cell labels of the reference rows (with ``query_cells``).

    Returns:
        ``(distances, indices)``: ``(m,)`` float64 and ``(m,)`` int64 on the rows' device; a query with no
        candidate (an empty cell) gets ``inf`` and index -1.
    """
    if len(reference) == 0:
        return (
            torch.full((len(queries),), math.inf, dtype=torch.float64, device=queries.device),
            torch.full((len(queries),), -1, dtype=torch.long, device=queries.device),
        )
    ref_norms = reference.square().sum(dim=1)
    distances = torch.empty(len(queries), dtype=torch.float64, device=queries.device)
    indices = torch.empty(len(queries), dtype=torch.long, device=queries.device)
    for start in range(0, len(queries), block_size):
        block = queries[start : start + block_size]
        sq = torch.addmm(ref_norms.unsqueeze(0), block, reference.T, beta=1.0, alpha=-2.0)
        sq.add_(block.square().sum(dim=1, keepdim=True)).clamp_min_(0.0)
        if exclude_self:
            sq.diagonal(offset=start).fill_(math.inf)
        if query_cells is not None and reference_cells is not None:
            other = query_cells[start : start + block_size].unsqueeze(1) != reference_cells.unsqueeze(0)
            sq.masked_fill_(other, math.inf)
        best, where = sq.min(dim=1)
        del sq
        indices[start : start + len(block)] = torch.where(torch.isinf(best), -1, where)
        distances[start : start + len(block)] = best
    found = indices >= 0
    exact = (queries[found] - reference[indices[found]]).norm(dim=1)
    distances = torch.where(found, torch.zeros_like(distances), distances)
    distances[found] = exact
    return distances, indices


def authpct_from_neighbours(generated_distance: Tensor, neighbour: Tensor, training_self_distance: Tensor) -> float:
    """100 × the share of generated rows farther from their nearest training row than that row from its own.

    Args:
        generated_distance: ``(m,)`` distance of each generated row to its nearest training row.
        neighbour: ``(m,)`` index of that training row.
        training_self_distance: ``(n,)`` distance of each training row to its nearest other training row.
    """
    authentic = training_self_distance[neighbour] < generated_distance
    return 100.0 * int(authentic.sum()) / len(authentic)


def fit_pca(x: Tensor, dims: int) -> tuple[Tensor, Tensor]:
    """The mean and the ``(d, dims)`` leading principal directions of ``x`` (float64, exact eigendecomposition)."""
    mean = x.mean(dim=0)
    centred = x - mean
    cov = centred.T @ centred
    _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    return mean, vectors[:, -dims:].flip(1).contiguous()


def assign_to_centres(x: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centre of each row and the squared distance to it (a matrix product: ``torch.cdist`` is slow here)."""
    sq = torch.addmm(centres.square().sum(dim=1).unsqueeze(0), x, centres.T, beta=1.0, alpha=-2.0)
    sq.add_(x.square().sum(dim=1, keepdim=True)).clamp_min_(0.0)
    best, label = sq.min(dim=1)
    return label, best


def fit_kmeans(
    x: Tensor, cells: int, *, n_init: int = 10, seed: int = 0, max_iter: int = 300, tol: float = 1e-4
) -> Tensor:
    """k-means centres ``(cells, d)`` of float64 rows ``x``: best inertia of ``n_init`` k-means++ starts.

    Deterministic: the seeding draws come from a CPU :class:`torch.Generator` seeded with ``seed``, so every run,
    rank and device gets the same centres (up to the device's arithmetic). Lloyd iterations stop when the
    centres' squared shift is at most ``tol`` × the mean per-feature variance (scikit-learn's rule); an emptied
    cell keeps its centre.
    """
    n = len(x)
    generator = torch.Generator().manual_seed(seed)
    threshold = tol * float(x.var(dim=0, correction=0).mean())
    best_centres: Tensor | None = None
    best_inertia = math.inf
    for _ in range(n_init):
        first = int(torch.randint(n, (1,), generator=generator))
        centres = [x[first]]
        closest = (x - x[first]).square().sum(dim=1)
        for _ in range(1, cells):
            weights = closest.cpu()
            if float(weights.sum()) <= 0:
                pick = int(torch.randint(n, (1,), generator=generator))
            else:
                pick = int(torch.multinomial(weights, 1, generator=generator))
            centres.append(x[pick])
            closest = torch.minimum(closest, (x - x[pick]).square().sum(dim=1))
        c = torch.stack(centres)
        for _ in range(max_iter):
            labels, _ = assign_to_centres(x, c)
            members = torch.nn.functional.one_hot(labels, cells).to(x.dtype)  # (n, cells): sums by one product
            sums = members.T @ x
            counts = members.sum(dim=0)
            moved = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp_min(1).unsqueeze(1), c)
            shift = float((moved - c).square().sum())
            c = moved
            if shift <= threshold:
                break
        _, sq = assign_to_centres(x, c)
        inertia = float(sq.sum())
        if inertia < best_inertia:
            best_inertia, best_centres = inertia, c
    assert best_centres is not None
    return best_centres


def mann_whitney_u(x: Tensor, y: Tensor) -> float:
    """The Mann–Whitney U statistic of ``x`` against ``y`` (ties get average ranks), as ``scipy.stats.mannwhitneyu``.

    U = R_x − m(m + 1)/2, R_x the sum of the ranks of x in the pooled sample: the number of pairs with x < y plus
    half the ties.
    """
    pooled = torch.cat([x, y]).double()
    values, inverse, counts = torch.unique(pooled, sorted=True, return_inverse=True, return_counts=True)
    del values
    ends = counts.cumsum(0).double()
    average_rank = ends - (counts.double() - 1) / 2
    m = len(x)
    return float(average_rank[inverse[:m]].sum()) - m * (m + 1) / 2


def ct_statistic(
    test_distance: Tensor, test_cells: Tensor, generated_distance: Tensor, generated_cells: Tensor, cells: int
) -> float:
    """C_T from the same-cell nearest-training distances of the test and the generated rows (dgm-eval's ``C_T``).

    Returns NaN when no cell holds more than τ = 20/m of the m generated rows.
    """
    m, n = len(generated_distance), len(test_distance)
    tau = CT_TAU_COUNT / m
    weighted = 0.0
    weight = 0.0
    for cell in range(cells):
        q = generated_distance[generated_cells == cell]
        if len(q) / m <= tau:
            continue
        p = test_distance[test_cells == cell]
        u = mann_whitney_u(q, p)
        nq, np_ = len(q), len(p)
        z = (u - (np_ * nq / 2 - 0.5)) / math.sqrt(np_ * nq * (np_ + nq + 1) / 12)
        share = np_ / n
        weighted += share * z
        weight += share
    return weighted / weight if weight > 0 else math.nan
