"""Streaming FID moments, Inception-Score split marginals and feature rows: plain accumulators, exact under DDP.

Each accumulator is a plain object (no ``nn.Module``, no torchmetrics machinery) with the same small surface:

* ``update(...)`` adds one batch of this process's samples;
* ``merge(other)`` adds another accumulator's samples in place (no communication);
* ``synced()`` returns a new accumulator holding the samples of every process of the group: **a collective**
  (every rank calls it, in the same order) made of one all-gather of the packed state, merged in rank order so
  that every rank gets the same bits; in a single process it is a copy;
* ``compute()`` is ``synced().compute(sync=False)``: the result over every rank (a collective too; in a single
  process it reads the state without the copy).

:class:`FIDMoments` keeps the count n, the mean and the centred co-moment M2 = Σ(x − μ)(x − μ)ᵀ, updated with
Chan et al.'s pairwise formula (:func:`chan_merge_`, the one place it is written: batches, ranks and FID∞'s
prefixes all merge through it). Unlike raw sums Σx, Σxxᵀ (torchmetrics' FID), whose covariance
(Σxxᵀ − nμμᵀ)/(n − 1) loses about log10(‖μ‖²/σ²) digits to cancellation, the centred form stays exact to
rounding for features far from the origin, and after the merge the state equals the state of one process that
saw every sample (to rounding).

:class:`ISMarginals` keeps, per split, Σ p(y|x), Σ Σ_y p log p and the count, all plain sums. A sample's split
is fixed by its *global* index with the reference boundaries ``i * N // splits``, so the result equals the
stored-logits computation (torch-fidelity, ``shuffle=False``) for any number of ranks and any batch order.

:class:`FeatureBank` is the exception: KID and precision/recall need the feature rows themselves, so it keeps
them (float32, on the CPU by default) with their global sample indices, and ``compute()`` returns every rank's
rows in global index order.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_ganeval.distributed import collective_device, group_size
from lightning_ganeval.frechet import GaussianStats
from lightning_ganeval.inception_score_math import _split_of, _split_sums, inception_score_from_sums, split_boundaries

__all__ = ["FIDMoments", "FeatureBank", "ISMarginals", "chan_merge_"]


# --------------------------------------------------------------------------------------------- collectives
def _gather(tensor: Tensor, group: Any) -> list[Tensor]:
    """Every rank's ``tensor`` (the same shape and dtype on every rank), in rank order, on ``tensor``'s device.

    One all-gather, through the device the backend takes (:func:`~lightning_ganeval.distributed.collective_device`).
    """
    comm_device = collective_device(tensor.device, group)
    local = tensor.to(comm_device).contiguous()
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, local, group=group)
    return [part.to(tensor.device) for part in parts]


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def _check_rows(features: Any, width: int, letter: str) -> None:
    """``features`` must be a floating ``(N, width)`` tensor (N named ``letter`` in the message)."""
    if not isinstance(features, Tensor):
        raise TypeError(f"`features` must be a torch.Tensor, got {type(features).__name__}.")
    if features.ndim != 2 or features.shape[1] != width:
        raise ValueError(f"Expected features of shape ({letter}, {width}), got {tuple(features.shape)}.")
    if not features.is_floating_point():
        raise TypeError(f"`features` must have a floating dtype, got {features.dtype}.")


# --------------------------------------------------------------------------------------------- FID moments
def _unpack(state: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """Views (n, mean, M2, d) of a packed moment state ``[1 + d + d²]``."""
    length = state.shape[-1]
    d = math.isqrt(length - 1)  # d² ≤ d² + d < (d + 1)²
    if 1 + d + d * d != length:
        raise ValueError(f"A packed moment state has length 1 + d + d², got {length}.")
    n = state[..., 0]
    mean = state[..., 1 : 1 + d]
    m2 = state[..., 1 + d :].unflatten(-1, (d, d))
    return n, mean, m2, d


def chan_merge_(
    state: Tensor, n_b: Tensor | float, mean_b: Tensor, m2_b: Tensor | None = None, *, centred_b: Tensor | None = None
) -> None:
    """In place: the packed moments ``state`` (n, mean, M2) become those of its samples and the samples of B.

    Chan et al.'s parallel formula: with δ = μ_b − μ_a and n = n_a + n_b,
    μ = μ_a + δ·n_b/n and M2 = M2_a + M2_b + δδᵀ·n_a·n_b/n. Either side may be empty (n = 0: it changes
    nothing, and merging into an empty state copies B exactly). Everything stays a tensor on ``state``'s device:
    no host synchronisation.

    Args:
        state: float64 ``[1 + d + d²]`` packed (n, mean, M2), modified in place.
        n_b: B's sample count.
        mean_b: B's ``(d,)`` mean.
        m2_b: B's ``(d, d)`` centred co-moment, or None when given as ``centred_b``.
        centred_b: B's rows minus their mean, ``(n_b, d)`` float64: M2_b = centred_bᵀ·centred_b is added in one
            matrix product, without forming M2_b (a batch's update).
    """
    n_a, mean_a, m2_a, _ = _unpack(state)
    n = n_a + n_b
    divisor = n.clamp_min(1)  # n, or 1 when both sides are empty (then every weight below is 0)
    delta = mean_b - mean_a
    if centred_b is not None:
        m2_a.addmm_(centred_b.T, centred_b)
    if m2_b is not None:
        m2_a.add_(m2_b)
    m2_a.addr_(delta * (n_a * n_b / divisor), delta)
    mean_a.add_(delta * (n_b / divisor))
    n_a.copy_(n)


class FIDMoments:
    """Streaming float64 mean and covariance of feature vectors, exact under DDP.

    The state lives on ``device`` (move it with :meth:`to` next to the features); features on another device
    are copied there. Memory is (1 + d + d²) float64 values whatever the number of samples: 32 MiB at
    d = 2048. :meth:`synced` all-gathers the packed state once, so it briefly holds world_size such copies
    (256 MiB on 8 ranks).

    Args:
        num_features: Feature dimension d (2048 for Inception pool3).
        device: Where the state lives (default: the CPU).
        process_group: The group :meth:`synced` merges over (default: the whole world).

    Example:
        >>> import torch
        >>> moments = FIDMoments(num_features=3)
        >>> moments.update(torch.tensor([[0.0, 1, 2], [2, 3, 4]]))
        >>> stats = moments.compute()
        >>> stats.n, stats.mean.tolist()
        (2, [1.0, 2.0, 3.0])
    """

    def __init__(
        self, num_features: int = 2048, *, device: torch.device | str | None = None, process_group: Any = None
    ) -> None:
        _check_positive_int("num_features", num_features)
        self.num_features = num_features
        self.process_group = process_group
        # One packed tensor, [n, mean (d), M2 (d*d)]: the cross-rank merge gathers all three in one collective.
        self.moments = torch.zeros(1 + num_features + num_features * num_features, dtype=torch.float64, device=device)

    @property
    def device(self) -> torch.device:
        """Where the state lives."""
        return self.moments.device

    def to(self, device: torch.device | str) -> FIDMoments:
        """Move the state to ``device`` (it stays float64); returns ``self``."""
        self.moments = self.moments.to(device)
        return self

    @property
    def n(self) -> Tensor:
        """Number of samples seen (this rank's, unless synced), as a float64 0-d tensor."""
        return _unpack(self.moments)[0]

    @property
    def mean(self) -> Tensor:
        """Running mean, ``(d,)`` float64 (a view of the state)."""
        return _unpack(self.moments)[1]

    @property
    def m2(self) -> Tensor:
        """Centred co-moment Σ(x − μ)(x − μ)ᵀ, ``(d, d)`` float64 (a view of the state)."""
        return _unpack(self.moments)[2]

    def _writable(self) -> Tensor:
        if self.moments.is_inference() and not torch.is_inference_mode_enabled():
            # reset() ran under inference_mode; such tensors refuse in-place updates outside it.
            self.moments = self.moments.clone()
        return self.moments

    def update(self, features: Tensor) -> None:
        """Add a batch of feature vectors.

        Args:
            features: ``(N, num_features)`` tensor of any floating dtype (bf16/fp16 are cast to float64 first).
        """
        _check_rows(features, self.num_features, "N")
        if features.shape[0] == 0:
            return
        x = features.detach().to(device=self.moments.device, dtype=torch.float64)
        mean_b = x.mean(dim=0)
        chan_merge_(self._writable(), x.shape[0], mean_b, centred_b=x - mean_b)

    def merge(self, other: FIDMoments) -> None:
        """Add the samples of ``other`` (another process's or another chunk's moments) to this one, in place."""
        if other.num_features != self.num_features:
            raise ValueError(f"Cannot merge moments of {other.num_features} features into {self.num_features}.")
        n_b, mean_b, m2_b, _ = _unpack(other.moments.to(self.moments.device))
        chan_merge_(self._writable(), n_b, mean_b, m2_b)

    def synced(self) -> FIDMoments:
        """A new :class:`FIDMoments` holding the samples of every rank (a copy in a single process).

        A collective under DDP: every rank calls it; one all-gather of the packed state, merged in rank order, so
        every rank gets the same bits. This accumulator is left as it is.
        """
        merged = FIDMoments(self.num_features, device=self.device, process_group=self.process_group)
        if group_size(self.process_group) == 1:
            merged.moments = self.moments.clone()
            return merged
        for state in _gather(self.moments, self.process_group):
            n_b, mean_b, m2_b, _ = _unpack(state)
            chan_merge_(merged.moments, n_b, mean_b, m2_b)
        return merged

    def compute(self, sync: bool = True) -> GaussianStats:
        """Mean and covariance (÷(n − 1), like ``np.cov``) over every sample seen on every rank.

        Args:
            sync: Merge over the ranks first (a collective: every rank calls it); False: this process's samples.

        Raises:
            ValueError: fewer than 2 samples, or non-finite features were added.
        """
        if sync and group_size(self.process_group) > 1:
            return self.synced().compute(sync=False)
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

    def reset(self) -> None:
        """Forget every sample."""
        self.moments = torch.zeros_like(self.moments)


# --------------------------------------------------------------------------------------------- IS marginals
class ISMarginals:
    """Streaming split Inception Score with the reference split boundaries, exact under DDP.

    Args:
        num_samples: Total number N of samples evaluated (over all ranks); fixes the split boundaries
            ``i * N // splits``.
        splits: Number of splits (10 in the reference).
        num_classes: Number of logits per sample (1008 for the FID Inception).
        device: Where the sums live (default: the CPU).
        process_group: The group :meth:`synced` sums over (default: the whole world).

    ``compute()`` returns ``(mean, std)`` with the population std (``ddof=0``) of the reference code and
    torch-fidelity; torchmetrics' ``InceptionScore`` uses ``ddof=1``, √(splits/(splits−1)) larger.

    Example:
        >>> import torch
        >>> metric = ISMarginals(num_samples=4, splits=2, num_classes=2)
        >>> metric.update(torch.tensor([[9.0, -9], [-9, 9], [9, -9], [-9, 9]]))
        >>> round(metric.compute()[0], 3)
        2.0
    """

    def __init__(
        self,
        num_samples: int,
        splits: int = 10,
        num_classes: int = 1008,
        *,
        device: torch.device | str | None = None,
        process_group: Any = None,
    ) -> None:
        _check_positive_int("num_samples", num_samples)
        _check_positive_int("num_classes", num_classes)
        self._bounds = split_boundaries(num_samples, splits)  # validates splits and num_samples >= splits
        self.num_samples = num_samples
        self.splits = splits
        self.num_classes = num_classes
        self.process_group = process_group
        self._next_index = 0
        self.prob_sum = torch.zeros(splits, num_classes, dtype=torch.float64, device=device)
        self.plogp_sum = torch.zeros(splits, dtype=torch.float64, device=device)
        self.count = torch.zeros(splits, dtype=torch.long, device=device)

    @property
    def device(self) -> torch.device:
        """Where the sums live."""
        return self.prob_sum.device

    def to(self, device: torch.device | str) -> ISMarginals:
        """Move the sums to ``device``; returns ``self``."""
        self.prob_sum, self.plogp_sum, self.count = (t.to(device) for t in (self.prob_sum, self.plogp_sum, self.count))
        return self

    def update(self, logits: Tensor, indices: Tensor | None = None) -> None:
        """Add a batch of logits.

        Args:
            logits: ``(N, num_classes)`` logits, any floating dtype (softmax is taken in float64).
            indices: ``(N,)`` global sample indices in ``[0, num_samples)``, which fix each sample's split.
                ``None`` numbers the samples in arrival order with a counter of this process: correct in a
                single process only, so it is refused while a multi-process group would be merged.
        """
        if not isinstance(logits, Tensor):
            raise TypeError(f"`logits` must be a torch.Tensor, got {type(logits).__name__}.")
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"Expected logits of shape (N, {self.num_classes}), got {tuple(logits.shape)}.")
        batch = logits.shape[0]
        device = self.device
        if indices is None:
            if group_size(self.process_group) > 1:
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
        log_probs = torch.log_softmax(logits.detach().to(device=device, dtype=torch.float64), dim=1)
        prob_sum, plogp_sum, count = _split_sums(log_probs, _split_of(idx, self._bounds), self.splits)
        self._add(prob_sum, plogp_sum, count)

    def _add(self, prob_sum: Tensor, plogp_sum: Tensor, count: Tensor) -> None:
        # Out of place: small states, and safe whether or not they were created under inference_mode.
        self.prob_sum = self.prob_sum + prob_sum.to(self.device)
        self.plogp_sum = self.plogp_sum + plogp_sum.to(self.device)
        self.count = self.count + count.to(self.device).long()

    def merge(self, other: ISMarginals) -> None:
        """Add the sums of ``other`` (the same ``num_samples``, splits and classes) to this one, in place."""
        if (other.num_samples, other.splits, other.num_classes) != (self.num_samples, self.splits, self.num_classes):
            raise ValueError(
                "Cannot merge ISMarginals of (num_samples, splits, num_classes) = "
                f"{(other.num_samples, other.splits, other.num_classes)} into "
                f"{(self.num_samples, self.splits, self.num_classes)}."
            )
        self._add(other.prob_sum, other.plogp_sum, other.count)

    def synced(self) -> ISMarginals:
        """A new :class:`ISMarginals` holding the sums of every rank (a copy in a single process).

        A collective under DDP: every rank calls it; one all-gather of the three sums packed in one float64
        tensor (counts are exact in float64 up to 2⁵³), added in rank order, so every rank gets the same bits.
        """
        merged = ISMarginals(
            self.num_samples, self.splits, self.num_classes, device=self.device, process_group=self.process_group
        )
        if group_size(self.process_group) == 1:
            merged.merge(self)
            return merged
        packed = torch.cat([self.prob_sum.flatten(), self.plogp_sum, self.count.to(torch.float64)])
        cells = self.splits * self.num_classes
        for part in _gather(packed, self.process_group):
            merged._add(
                part[:cells].view(self.splits, self.num_classes), part[cells : -self.splits], part[-self.splits :]
            )
        return merged

    def compute(self, sync: bool = True) -> tuple[float, float]:
        """``(mean, std)`` of the split scores over every sample seen on every rank (std with ``ddof=0``).

        Args:
            sync: Sum over the ranks first (a collective: every rank calls it); False: this process's samples.

        Raises:
            ValueError: a split received no sample.
        """
        if sync and group_size(self.process_group) > 1:
            return self.synced().compute(sync=False)
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

    def reset(self) -> None:
        """Clear the sums and the running sample counter."""
        self.prob_sum, self.plogp_sum, self.count = (
            torch.zeros_like(t) for t in (self.prob_sum, self.plogp_sum, self.count)
        )
        self._next_index = 0


# --------------------------------------------------------------------------------------------- feature rows
def _all_gather_rows(features: Tensor, indices: Tensor, group: Any, chunk_rows: int) -> tuple[Tensor, Tensor]:
    """Every rank's rows and their indices, in rank order, on ``features``' device; ranks may hold any count.

    One all-gather of the row counts, then the rows padded to the largest count in chunks of ``chunk_rows``
    rows (so that a GPU-only backend holds at most world_size x chunk_rows rows at once), each row carrying its
    int64 index in two extra columns: one collective per chunk. The chunks are int32 words, so the rows and
    indices are only moved, bit for bit, never summed.
    """
    home = features.device
    comm_device = collective_device(home, group)
    world_size = dist.get_world_size(group)
    d = features.shape[1]
    count = torch.tensor([features.shape[0]], dtype=torch.long, device=comm_device)
    counts_t = [torch.empty_like(count) for _ in range(world_size)]
    dist.all_gather(counts_t, count, group=group)
    counts = [int(c.item()) for c in counts_t]
    longest = max(counts)
    if longest == 0:
        return features.new_empty(0, d), indices.new_empty(0)

    # The chunks are int32 words: float32 rows bit for bit, and each int64 index as two more words.
    words = torch.cat(
        [features.to(torch.float32).view(torch.int32), indices.to(torch.int64).view(torch.int32).view(-1, 2)], 1
    )
    pieces: list[list[Tensor]] = [[] for _ in range(world_size)]
    for start in range(0, longest, chunk_rows):
        rows = min(chunk_rows, longest - start)
        chunk = torch.zeros(rows, d + 2, dtype=torch.int32, device=comm_device)
        local = words[start : start + rows]
        chunk[: local.shape[0]] = local.to(comm_device)
        gathered = [torch.empty_like(chunk) for _ in range(world_size)]
        dist.all_gather(gathered, chunk, group=group)
        for rank, (part, n) in enumerate(zip(gathered, counts, strict=True)):
            valid = min(max(n - start, 0), rows)
            if valid:
                pieces[rank].append(part[:valid].to(home))
        del chunk, gathered
    packed = torch.cat([piece for per_rank in pieces for piece in per_rank])
    rows_out = packed[:, :d].contiguous().view(torch.float32)
    return rows_out, packed[:, d:].contiguous().view(torch.int64).view(-1).to(indices.device)


class FeatureBank:
    """Feature rows with their global sample indices, gathered from every rank in global index order.

    For metrics that need the samples themselves (KID, precision/recall): each rank adds its rows with the
    global index of each sample, and ``compute()`` returns all rows of all ranks sorted by that index, so the
    result is bit-identical for any number of processes and any batch order (the rows are only moved, never
    summed). Rows are stored as float32 on ``storage_device`` (the CPU by default): 50,000 x 2048 rows take
    400 MB.

    :meth:`synced` all-gathers the row counts first, then the rows padded to the largest count, in chunks of
    ``gather_chunk_bytes`` per rank, with their indices packed into the same chunks; a rank may hold zero rows.
    With a CPU backend (gloo) the CPU tensors are gathered directly; with NCCL each chunk is copied to the
    current CUDA device and back. **Every rank must call** ``synced()`` / ``compute()``; each gets all the rows,
    and briefly holds every rank's rows twice (the gathered rows and the sorted result).

    Args:
        num_features: Feature dimension d (known on every rank, also on one that holds no row).
        max_rows: Keep only rows whose global index is below this (``None``: keep all). Rows at or above it
            are dropped in ``update``, so memory stays bounded.
        storage_device: Where the rows live between ``update`` and ``compute``.
        gather_chunk_bytes: Bytes of rows per rank and all-gather (64 MiB: 8,192 rows of 2048 floats).
        process_group: The group :meth:`synced` gathers over (default: the whole world).

    Example:
        >>> import torch
        >>> bank = FeatureBank(num_features=2)
        >>> bank.update(torch.tensor([[3.0, 3], [1, 1]]), indices=torch.tensor([3, 1]))
        >>> bank.update(torch.tensor([[2.0, 2]]), indices=torch.tensor([2]))
        >>> bank.compute().tolist()
        [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    """

    def __init__(
        self,
        num_features: int = 2048,
        *,
        max_rows: int | None = None,
        storage_device: torch.device | str = "cpu",
        gather_chunk_bytes: int = 64 << 20,
        process_group: Any = None,
    ) -> None:
        _check_positive_int("num_features", num_features)
        if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0):
            raise ValueError(f"`max_rows` must be a non-negative integer or None, got {max_rows!r}.")
        _check_positive_int("gather_chunk_bytes", gather_chunk_bytes)
        self.num_features = num_features
        self.max_rows = max_rows
        self.storage_device = torch.device(storage_device)
        self.gather_chunk_bytes = gather_chunk_bytes
        self.process_group = process_group
        self.features: list[Tensor] = []
        self.indices: list[Tensor] = []

    def update(self, features: Tensor, indices: Tensor) -> None:
        """Add a batch of rows.

        Args:
            features: ``(B, num_features)`` floating tensor, stored as float32 (detached) on ``storage_device``.
            indices: ``(B,)`` non-negative integer global sample indices of the rows, unique over all ranks.
        """
        _check_rows(features, self.num_features, "B")
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
        """Rows held by this bank (this rank's, unless synced)."""
        return sum(t.shape[0] for t in self.indices)

    def merge(self, other: FeatureBank) -> None:
        """Add the rows of ``other`` (same width) to this bank, in place (its ``max_rows`` applies)."""
        rows, indices = other._local_rows()
        if rows.shape[0]:
            self.update(rows, indices)

    def synced(self) -> FeatureBank:
        """A new :class:`FeatureBank` holding the rows of every rank (a copy in a single process).

        A collective under DDP: every rank calls it (see the class docstring). This bank is left as it is.
        """
        merged = FeatureBank(
            self.num_features,
            max_rows=self.max_rows,
            storage_device=self.storage_device,
            gather_chunk_bytes=self.gather_chunk_bytes,
            process_group=self.process_group,
        )
        features, indices = self._local_rows()
        if group_size(self.process_group) > 1:
            chunk_rows = max(1, self.gather_chunk_bytes // (4 * self.num_features))
            features, indices = _all_gather_rows(features, indices, self.process_group, chunk_rows)
        if indices.numel():
            merged.features, merged.indices = [features], [indices]
        return merged

    def ordered(self) -> tuple[Tensor, Tensor]:
        """This bank's rows sorted by global index, ``(N, num_features)`` float32 CPU, and the sorted indices.

        No communication: call it on :meth:`synced`'s result for every rank's rows.

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
        return features[order].cpu(), indices.cpu()

    def compute(self, sync: bool = True) -> Tensor:
        """All rows sorted by global index: ``(N, num_features)`` float32 CPU.

        Args:
            sync: Gather every rank's rows first (a collective: every rank calls it); False: this bank's rows.

        Raises:
            ValueError: two rows share a global index (e.g. a sampler padded a rank with repeated samples).
        """
        return (self.synced() if sync and group_size(self.process_group) > 1 else self).ordered()[0]

    def reset(self) -> None:
        """Drop every row."""
        self.features, self.indices = [], []
