"""Streaming FID moments and Inception-Score split marginals as torchmetrics ``Metric``s.

Both metrics keep O(d²) (FID) or O(splits x classes) (IS) float64 state, whatever the number of samples, and
merge across DDP ranks through torchmetrics' own synchronisation (``compute()`` gathers the states of every rank;
**every rank must call it**, as with any torchmetrics metric).

:class:`FIDMoments` keeps the count n, the mean and the centred co-moment M2 = Σ(x − μ)(x − μ)ᵀ, updated with
Chan et al.'s pairwise formula. Unlike raw sums Σx, Σxxᵀ (torchmetrics' FID), whose covariance
(Σxxᵀ − nμμᵀ)/(n − 1) loses about log10(‖μ‖²/σ²) digits to cancellation, the centred form stays exact to
rounding for features far from the origin. The state is therefore not a plain sum: the three parts are packed in
one float64 tensor whose cross-rank reduction is the k-way Chan merge, so after synchronisation the state equals
the state of one process that saw every sample.

:class:`ISMarginals` keeps, per split, Σ p(y|x), Σ Σ_y p log p and the count, all plain sums. A sample's split
is fixed by its *global* index with the reference boundaries ``i * N // splits``, so the result equals the
stored-logits computation (torch-fidelity, ``shuffle=False``) for any number of ranks and any batch order.

:class:`FeatureBank` is the exception: KID and precision/recall need the feature rows themselves, so it keeps
them (float32, on the CPU by default) with their global sample indices, and ``compute()`` returns every rank's
rows in global index order.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torchmetrics
from torch import Tensor

from lightning_ganeval.frechet import GaussianStats
from lightning_ganeval.inception_score_math import _split_of, _split_sums, inception_score_from_sums, split_boundaries

__all__ = ["FIDMoments", "FeatureBank", "ISMarginals", "chan_merge"]


def _unpack(state: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """Views (n, mean, M2, d) of packed moment state(s) ``[..., 1 + d + d²]``."""
    length = state.shape[-1]
    d = math.isqrt(length - 1)  # d² ≤ d² + d < (d + 1)²
    if 1 + d + d * d != length:
        raise ValueError(f"A packed moment state has length 1 + d + d², got {length}.")
    n = state[..., 0]
    mean = state[..., 1 : 1 + d]
    m2 = state[..., 1 + d :].unflatten(-1, (d, d))
    return n, mean, m2, d


def chan_merge(stacked: Tensor) -> Tensor:
    """Merge k packed moment states ``(k, 1 + d + d²)`` into one with Chan et al.'s parallel formula.

    n = Σ n_r, μ = Σ n_r μ_r / n, M2 = Σ M2_r + Σ n_r (μ_r − μ)(μ_r − μ)ᵀ. States with n_r = 0 contribute
    nothing. This is the ``dist_reduce_fx`` of :class:`FIDMoments`: torchmetrics stacks the per-rank states into
    a leading dimension and hands them here, in rank order (so every rank computes the same bits).
    """
    if stacked.ndim == 1:
        return stacked
    n_r, mean_r, m2_r, _ = _unpack(stacked)
    n = n_r.sum()
    weights = n_r / n.clamp_min(1)
    mean = weights @ mean_r
    delta = mean_r - mean
    m2 = m2_r.sum(dim=0) + (delta.T * n_r) @ delta
    return torch.cat([n.reshape(1), mean, m2.flatten()])


class _Opaque:
    """Carries a value through torchmetrics' compute wrapper untouched.

    ``Metric._wrap_compute`` passes the result through ``apply_to_collection``, which refuses frozen
    dataclasses and would squeeze a 1-element mean; :class:`GaussianStats` is immutable by design.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class FIDMoments(torchmetrics.Metric):
    """Streaming float64 mean and covariance of feature vectors, exact under DDP.

    The state lives on the metric's device (move the metric with ``.to(device)`` next to the features, as
    with any torchmetrics metric); features on another device are copied there. Memory is
    (1 + d + d²) float64 values whatever the number of samples: 32 MiB at d = 2048. Synchronisation
    all-gathers the packed state, so ``compute()`` briefly holds world_size such copies (256 MiB on 8 ranks).

    Args:
        num_features: Feature dimension d (2048 for Inception pool3).
        **kwargs: Passed to ``torchmetrics.Metric`` (``sync_on_compute``, ``process_group``, ...).

    Example:
        >>> import torch
        >>> moments = FIDMoments(num_features=3)
        >>> moments.update(torch.tensor([[0.0, 1, 2], [2, 3, 4]]))
        >>> stats = moments.compute()
        >>> stats.n, stats.mean.tolist()
        (2, [1.0, 2.0, 3.0])
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    moments: Tensor

    def __init__(self, num_features: int = 2048, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"`num_features` must be a positive integer, got {num_features!r}.")
        self.num_features = num_features
        # One packed tensor, [n, mean (d), M2 (d*d)], because the cross-rank merge needs all three together.
        self.add_state(
            "moments",
            torch.zeros(1 + num_features + num_features * num_features, dtype=torch.float64),
            dist_reduce_fx=chan_merge,
        )

    def _wrap_compute(self, compute: Callable) -> Callable:
        boxed = super()._wrap_compute(
            functools.wraps(compute)(lambda *args, **kwargs: _Opaque(compute(*args, **kwargs)))
        )

        @functools.wraps(compute)
        def unboxed(*args: Any, **kwargs: Any) -> Any:
            return boxed(*args, **kwargs).value

        return unboxed

    @property
    def n(self) -> Tensor:
        """Number of samples seen (this rank's, outside a sync), as a float64 0-d tensor."""
        return _unpack(self.moments)[0]

    @property
    def mean(self) -> Tensor:
        """Running mean, ``(d,)`` float64 (a view of the state)."""
        return _unpack(self.moments)[1]

    @property
    def m2(self) -> Tensor:
        """Centred co-moment Σ(x − μ)(x − μ)ᵀ, ``(d, d)`` float64 (a view of the state)."""
        return _unpack(self.moments)[2]

    def update(self, features: Tensor) -> None:
        """Add a batch of feature vectors.

        Args:
            features: ``(N, num_features)`` tensor of any floating dtype (bf16/fp16 are cast to float64 first).
        """
        if not isinstance(features, Tensor):
            raise TypeError(f"`features` must be a torch.Tensor, got {type(features).__name__}.")
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"Expected features of shape (N, {self.num_features}), got {tuple(features.shape)}.")
        if not features.is_floating_point():
            raise TypeError(f"`features` must have a floating dtype, got {features.dtype}.")
        if features.shape[0] == 0:
            return
        if self.moments.is_inference() and not torch.is_inference_mode_enabled():
            # reset() ran under inference_mode; such tensors refuse in-place updates outside it.
            self.moments = self.moments.clone()
        x = features.to(device=self.moments.device, dtype=torch.float64)
        n_b = x.shape[0]
        mean_b = x.mean(dim=0)
        centred = x - mean_b
        n_a, mean_a, m2_a, _ = _unpack(self.moments)
        n = n_a + n_b
        delta = mean_b - mean_a
        # Chan et al.: M2 = M2_a + M2_b + δδᵀ·n_a·n_b/n; everything stays a tensor (no host sync per batch).
        m2_a.addmm_(centred.T, centred)
        m2_a.addr_(delta * (n_a * n_b / n), delta)
        mean_a.add_(delta * (n_b / n))
        n_a.add_(n_b)

    def compute(self) -> GaussianStats:
        """Mean and covariance (÷(n − 1), like ``np.cov``) over every sample seen on every rank.

        Raises:
            ValueError: fewer than 2 samples, or non-finite features were added.
        """
        n_t, mean, m2, _ = _unpack(self.moments)
        n = int(n_t.item())
        if n < 2:
            raise ValueError(
                f"FIDMoments needs at least 2 samples to estimate a covariance, got {n}. "
                "Feed more samples before calling compute()."
            )
        cov = m2 / (n - 1)
        cov = (cov + cov.T) / 2
        if not bool(torch.isfinite(mean).all() and torch.isfinite(cov).all()):
            raise ValueError("FIDMoments received NaN or Inf features; the mean/covariance are not finite.")
        return GaussianStats(n=n, mean=mean.clone(), cov=cov)

    def forward(self, features: Tensor) -> None:
        """Same as :meth:`update`; a per-batch covariance is meaningless here, so nothing is returned."""
        self.update(features)


class ISMarginals(torchmetrics.Metric):
    """Streaming split Inception Score with the reference split boundaries, exact under DDP.

    Args:
        num_samples: Total number N of samples evaluated (over all ranks); fixes the split boundaries
            ``i * N // splits``.
        splits: Number of splits (10 in the reference).
        num_classes: Number of logits per sample (1008 for the FID Inception).
        **kwargs: Passed to ``torchmetrics.Metric``.

    ``compute()`` returns ``(mean, std)`` with the population std (``ddof=0``) of the reference code and
    torch-fidelity; torchmetrics' ``InceptionScore`` uses ``ddof=1``, √(splits/(splits−1)) larger.

    Example:
        >>> import torch
        >>> metric = ISMarginals(num_samples=4, splits=2, num_classes=2)
        >>> metric.update(torch.tensor([[9.0, -9], [-9, 9], [9, -9], [-9, 9]]))
        >>> round(metric.compute()[0], 3)
        2.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    prob_sum: Tensor
    plogp_sum: Tensor
    count: Tensor

    def __init__(self, num_samples: int, splits: int = 10, num_classes: int = 1008, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"`num_samples` must be a positive integer, got {num_samples!r}.")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer, got {num_classes!r}.")
        self._bounds = split_boundaries(num_samples, splits)  # validates splits and num_samples >= splits
        self.num_samples = num_samples
        self.splits = splits
        self.num_classes = num_classes
        self._next_index = 0
        self.add_state("prob_sum", torch.zeros(splits, num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("plogp_sum", torch.zeros(splits, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(splits, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, indices: Tensor | None = None) -> None:
        """Add a batch of logits.

        Args:
            logits: ``(N, num_classes)`` logits, any floating dtype (softmax is taken in float64).
            indices: ``(N,)`` global sample indices in ``[0, num_samples)``, which fix each sample's split.
                ``None`` numbers the samples in arrival order with a counter of this process: correct in a
                single process only, so it is refused while a multi-process group would sync this metric.
        """
        if not isinstance(logits, Tensor):
            raise TypeError(f"`logits` must be a torch.Tensor, got {type(logits).__name__}.")
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"Expected logits of shape (N, {self.num_classes}), got {tuple(logits.shape)}.")
        batch = logits.shape[0]
        device = self.prob_sum.device
        if indices is None:
            if self._syncs_across_processes():
                raise ValueError(
                    "ISMarginals.update(indices=None) numbers samples per process, which is wrong when several "
                    "processes are merged; pass the global sample indices (e.g. rank::world_size slices)."
                )
            if self._next_index + batch > self.num_samples:
                raise ValueError(
                    f"ISMarginals got more than num_samples={self.num_samples} samples "
                    f"({self._next_index} seen, batch of {batch}); call reset() between evaluations."
                )
            idx = torch.arange(self._next_index, self._next_index + batch, device=device)
            self._next_index += batch
        else:
            # Checked where the indices are (the evaluator passes them on the CPU: no device synchronisation).
            idx = torch.as_tensor(indices)
            if idx.shape != (batch,) or idx.is_floating_point() or idx.dtype == torch.bool or idx.is_complex():
                raise ValueError(
                    f"`indices` must be an integer tensor of shape ({batch},) matching the logits, "
                    f"got dtype {idx.dtype} and shape {tuple(idx.shape)}."
                )
            if batch and (int(idx.min()) < 0 or int(idx.max()) >= self.num_samples):
                raise ValueError(
                    f"`indices` must lie in [0, {self.num_samples}) (num_samples), "
                    f"got values from {int(idx.min())} to {int(idx.max())}."
                )
            idx = idx.to(device)
        if batch == 0:
            return
        log_probs = torch.log_softmax(logits.to(device=device, dtype=torch.float64), dim=1)
        prob_sum, plogp_sum, count = _split_sums(log_probs, _split_of(idx, self._bounds), self.splits)
        # Out of place: small states, and safe whether or not they were created under inference_mode.
        self.prob_sum = self.prob_sum + prob_sum
        self.plogp_sum = self.plogp_sum + plogp_sum
        self.count = self.count + count.long()

    def _syncs_across_processes(self) -> bool:
        return (
            self.sync_on_compute
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size(self.process_group) > 1
        )

    def compute(self) -> tuple[float, float]:
        """``(mean, std)`` of the split scores over every sample seen on every rank (std with ``ddof=0``).

        Raises:
            ValueError: a split received no sample.
        """
        total = int(self.count.sum())
        if total != self.num_samples:
            warnings.warn(
                f"ISMarginals saw {total} samples but was built for num_samples={self.num_samples}; the splits "
                "are those of the reference boundaries for num_samples, so the score differs from the reference "
                "computation on the samples seen.",
                UserWarning,
                stacklevel=2,
            )
        return inception_score_from_sums(self.prob_sum, self.plogp_sum, self.count)

    def forward(self, logits: Tensor, indices: Tensor | None = None) -> None:
        """Same as :meth:`update`; one batch is not a split, so nothing is returned."""
        self.update(logits, indices)

    def reset(self) -> None:
        """Clear the sums and the running sample counter."""
        super().reset()
        self._next_index = 0


def _communication_device(backend: str, fallback: torch.device) -> torch.device:
    """Where tensors must be for collectives of ``backend``: the CPU if it takes CPU tensors, else the GPU.

    Gloo and MPI (alone or in a mixed ``"cpu:gloo,cuda:nccl"`` group) take CPU tensors as they are; NCCL takes
    only tensors of the current CUDA device; for other accelerator backends ``fallback`` (the metric's device).
    """
    name = backend.lower()
    if "gloo" in name or "mpi" in name:
        return torch.device("cpu")
    if "nccl" in name:
        return torch.device("cuda", torch.cuda.current_device())
    return fallback


def _all_gather_rows(
    features: Tensor, indices: Tensor, group: Any, comm_device: torch.device, chunk_rows: int
) -> tuple[Tensor, Tensor]:
    """Every rank's rows, in rank order, on ``features``' device; ranks may hold different (or zero) counts.

    One all-gather of the row counts, one of the padded indices, then the padded features in chunks of
    ``chunk_rows`` rows, so that a GPU-only backend holds at most world_size x chunk_rows rows at once.
    """
    home = features.device
    world_size = dist.get_world_size(group)
    d = features.shape[1]
    count = torch.tensor([features.shape[0]], dtype=torch.long, device=comm_device)
    counts_t = [torch.empty_like(count) for _ in range(world_size)]
    dist.all_gather(counts_t, count, group=group)
    counts = [int(c.item()) for c in counts_t]
    longest = max(counts)
    if longest == 0:
        return features.new_empty(0, d), indices.new_empty(0)

    padded_idx = torch.full((longest,), -1, dtype=torch.long, device=comm_device)
    padded_idx[: indices.shape[0]] = indices.to(comm_device)
    gathered_idx = [torch.empty_like(padded_idx) for _ in range(world_size)]
    dist.all_gather(gathered_idx, padded_idx, group=group)
    all_idx = torch.cat([g[:n].to(home) for g, n in zip(gathered_idx, counts, strict=True)])
    del padded_idx, gathered_idx

    pieces: list[list[Tensor]] = [[] for _ in range(world_size)]
    for start in range(0, longest, chunk_rows):
        rows = min(chunk_rows, longest - start)
        chunk = torch.zeros(rows, d, dtype=features.dtype, device=comm_device)
        local = features[start : start + rows]
        chunk[: local.shape[0]] = local.to(comm_device)
        gathered = [torch.empty_like(chunk) for _ in range(world_size)]
        dist.all_gather(gathered, chunk, group=group)
        for rank, (part, n) in enumerate(zip(gathered, counts, strict=True)):
            valid = min(max(n - start, 0), rows)
            if valid:
                pieces[rank].append(part[:valid].to(home))
        del chunk, gathered
    all_features = torch.cat([piece for per_rank in pieces for piece in per_rank])
    return all_features, all_idx


class FeatureBank(torchmetrics.Metric):
    """Feature rows with their global sample indices, gathered from every rank in global index order.

    For metrics that need the samples themselves (KID, precision/recall): each rank adds its rows with the
    global index of each sample, and ``compute()`` returns all rows of all ranks sorted by that index, so the
    result is bit-identical for any number of processes and any batch order (the rows are only moved, never
    summed). Rows are stored as float32 on ``storage_device`` (the CPU by default; ``.to(device)`` does not
    move them): 50,000 x 2048 rows take 400 MB.

    Synchronisation is this class's own (it overrides torchmetrics' ``_sync_dist``; ``dist_sync_fn`` is not
    used): torchmetrics' list gathering breaks for a rank holding zero rows (it substitutes a 1-D float tensor)
    and hands CPU tensors to NCCL. Here the row counts are all-gathered first, then the indices and the rows
    padded to the largest count; the rows in chunks of ``gather_chunk_bytes`` per rank. With a CPU backend
    (gloo) the CPU tensors are gathered directly; with NCCL each chunk is copied to the current CUDA device and
    back. As with every torchmetrics metric, **every rank must call** ``compute()``; each gets all the rows.
    During ``compute()`` a rank briefly holds its own rows twice (torchmetrics caches the local state to restore
    it afterwards) plus every rank's rows twice (the gathered rows and the sorted result).

    Args:
        num_features: Feature dimension d (known on every rank, also on one that holds no row).
        max_rows: Keep only rows whose global index is below this (``None``: keep all). Rows at or above it
            are dropped in ``update``, so memory stays bounded.
        storage_device: Where the rows live between ``update`` and ``compute``.
        gather_chunk_bytes: Bytes of rows per rank and all-gather (64 MiB: 8,192 rows of 2048 floats).
        **kwargs: Passed to ``torchmetrics.Metric`` (``sync_on_compute``, ``process_group``, ...).

    Example:
        >>> import torch
        >>> bank = FeatureBank(num_features=2)
        >>> bank.update(torch.tensor([[3.0, 3], [1, 1]]), indices=torch.tensor([3, 1]))
        >>> bank.update(torch.tensor([[2.0, 2]]), indices=torch.tensor([2]))
        >>> bank.compute().tolist()
        [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    features: list[Tensor]
    indices: list[Tensor]

    def __init__(
        self,
        num_features: int = 2048,
        *,
        max_rows: int | None = None,
        storage_device: torch.device | str = "cpu",
        gather_chunk_bytes: int = 64 << 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"`num_features` must be a positive integer, got {num_features!r}.")
        if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0):
            raise ValueError(f"`max_rows` must be a non-negative integer or None, got {max_rows!r}.")
        if isinstance(gather_chunk_bytes, bool) or not isinstance(gather_chunk_bytes, int) or gather_chunk_bytes < 1:
            raise ValueError(f"`gather_chunk_bytes` must be a positive integer, got {gather_chunk_bytes!r}.")
        self.num_features = num_features
        self.max_rows = max_rows
        self.storage_device = torch.device(storage_device)
        self.gather_chunk_bytes = gather_chunk_bytes
        self.add_state("features", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor, indices: Tensor) -> None:
        """Add a batch of rows.

        Args:
            features: ``(B, num_features)`` floating tensor, stored as float32 (detached) on ``storage_device``.
            indices: ``(B,)`` non-negative integer global sample indices of the rows, unique over all ranks.
        """
        if not isinstance(features, Tensor):
            raise TypeError(f"`features` must be a torch.Tensor, got {type(features).__name__}.")
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"Expected features of shape (B, {self.num_features}), got {tuple(features.shape)}.")
        if not features.is_floating_point():
            raise TypeError(f"`features` must have a floating dtype, got {features.dtype}.")
        batch = features.shape[0]
        idx = torch.as_tensor(indices)
        if idx.shape != (batch,) or idx.is_floating_point() or idx.dtype == torch.bool or idx.is_complex():
            raise ValueError(
                f"`indices` must be an integer tensor of shape ({batch},) matching the features, "
                f"got dtype {idx.dtype} and shape {tuple(idx.shape)}."
            )
        # copy=True: a batch already float32 on storage_device would otherwise be kept as the caller's tensor.
        idx = idx.to(device=self.storage_device, dtype=torch.long, copy=True)
        if batch and int(idx.min()) < 0:
            raise ValueError(f"`indices` must be non-negative global sample indices, got {int(idx.min())}.")
        rows = features.detach().to(device=self.storage_device, dtype=torch.float32, copy=True)
        if self.max_rows is not None:
            keep = idx < self.max_rows
            if not bool(keep.all()):
                rows, idx = rows[keep], idx[keep]
        if idx.numel() == 0:
            return
        self.features.append(rows)
        self.indices.append(idx)

    def _local_rows(self) -> tuple[Tensor, Tensor]:
        if not self.features:
            return (
                torch.empty(0, self.num_features, dtype=torch.float32, device=self.storage_device),
                torch.empty(0, dtype=torch.long, device=self.storage_device),
            )
        return torch.cat(self.features), torch.cat(self.indices)

    @property
    def num_rows(self) -> int:
        """Rows held by this rank (all ranks' rows while synchronised)."""
        return sum(t.shape[0] for t in self.indices)

    def _sync_dist(self, dist_sync_fn: Callable | None = None, process_group: Any | None = None) -> None:
        """Replace the local rows by every rank's rows (see the class docstring); ``dist_sync_fn`` is unused."""
        group = process_group or self.process_group or dist.group.WORLD
        features, indices = self._local_rows()
        comm_device = _communication_device(str(dist.get_backend(group)), self.device)
        chunk_rows = max(1, self.gather_chunk_bytes // (4 * self.num_features))
        features, indices = _all_gather_rows(features, indices, group, comm_device, chunk_rows)
        self.features = [features] if indices.numel() else []
        self.indices = [indices] if indices.numel() else []

    def compute(self) -> Tensor:
        """All rows (of every rank, when synchronised) sorted by global index: ``(N, num_features)`` float32 CPU.

        Raises:
            ValueError: two rows share a global index (e.g. a sampler padded a rank with repeated samples).
        """
        features, indices = self._local_rows()
        order = torch.argsort(indices, stable=True)
        indices = indices[order]
        repeated = indices[1:] == indices[:-1]
        if bool(repeated.any()):
            shown = indices[1:][repeated].unique()[:5].tolist()
            raise ValueError(
                f"FeatureBank holds several rows for the global indices {shown} (and maybe more); each sample must "
                "be added once over all ranks (a DistributedSampler pads ranks with repeated samples)."
            )
        return features[order].cpu()

    def forward(self, features: Tensor, indices: Tensor) -> None:
        """Same as :meth:`update`; a batch's rows are not a result, so nothing is returned."""
        self.update(features, indices)

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = ()) -> torch.nn.Module:
        # `.to(device)` / `.half()` move the metric, never the stored rows: they stay float32 on storage_device.
        return super()._apply(fn, exclude_state=(*exclude_state, "features", "indices"))
