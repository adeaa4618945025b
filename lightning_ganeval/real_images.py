"""The stream of real images read by index: any DataLoader (tuples, dicts, wrapped datasets, iterable data),
sharded over ranks, with private random streams for the data loading and a worker count fitted to the machine."""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

__all__ = ["RealImageStream", "default_max_workers", "iter_real_images", "map_style_size", "same_size_groups"]

_DEFAULT_BATCH_SIZE = 50

# --------------------------------------------------------------------------------------------- computing
_IMAGE_KEYS = ("image", "pixel_values", "img", "images")
"""Dict keys that hold the images in common batch layouts (torchvision-style dicts, Hugging Face processors)."""

_IMAGE_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)

_REAL_PASS_SEED = 0
"""Seed of the private random streams that data loading draws from during a real pass (see `_PrivateRNG`)."""


def _describe(value: Any, depth: int = 0) -> str:
    """A short description of a batch for error messages: types, dtypes and shapes, not values."""
    if isinstance(value, Tensor):
        return f"Tensor {str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"ndarray {value.dtype} {value.shape}"
    if depth < 2 and isinstance(value, Mapping):
        return "{" + ", ".join(f"{key!r}: {_describe(item, depth + 1)}" for key, item in value.items()) + "}"
    if depth < 2 and isinstance(value, (tuple, list)):
        if len(value) > 6:
            kinds = sorted({type(item).__name__ for item in value})
            return f"{type(value).__name__} of {len(value)} ({', '.join(kinds)})"
        return f"{type(value).__name__}[" + ", ".join(_describe(item, depth + 1) for item in value) + "]"
    return type(value).__name__


def _is_image_batch(value: Any) -> bool:
    return isinstance(value, Tensor) and value.ndim == 4 and value.dtype in _IMAGE_DTYPES


def _no_images(batch: Any, problem: str) -> ValueError:
    return ValueError(
        f"Cannot pick the real images out of a batch: {problem}. The batch holds {_describe(batch)}. The default "
        "takes a tensor batch, the one 4-D float/uint8 tensor of a tuple/list or dict, a list of C x H x W images, "
        "or a dict's "
        f"{'/'.join(repr(key) for key in _IMAGE_KEYS)} entry. Pass `real_image_fn=` (FIDCallback) or `image_fn=` "
        "(Evaluator.prepare_real, iter_real_images), e.g. `lambda batch: batch['rgb']`, to pick them."
    )


def _is_image(value: Any) -> bool:
    return isinstance(value, Tensor) and value.ndim == 3 and value.dtype in _IMAGE_DTYPES


def same_size_groups(images: Sequence[Tensor], indices: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    """``(stacked images, their indices)`` for each image size among ``images``, in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for position, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(position)
    for positions in groups.values():
        yield torch.stack([images[p] for p in positions]), indices[positions]


def _default_image(batch: Any) -> Tensor:
    """The images of a batch: the batch itself, or the one N x C x H x W float/uint8 tensor it holds."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping):
        named = [key for key in _IMAGE_KEYS if _is_image_batch(batch.get(key))]
        if len(named) == 1:
            return batch[named[0]]
        if len(named) > 1:
            raise _no_images(batch, f"the keys {named} all hold 4-D float/uint8 tensors")
        candidates = [key for key, value in batch.items() if _is_image_batch(value)]
        if len(candidates) == 1:
            return batch[candidates[0]]
        found = f"the keys {candidates} all hold" if candidates else "no value is"
        raise _no_images(batch, f"{found} a 4-D float/uint8 tensor")
    if isinstance(batch, (tuple, list)):
        positions = [i for i, value in enumerate(batch) if _is_image_batch(value)]
        if len(positions) == 1:
            return batch[positions[0]]
        if not positions and batch and all(_is_image(value) for value in batch):
            return batch  # type: ignore[return-value]  # C x H x W images, sizes may differ (a list collate)
        found = f"the elements {positions} all are" if positions else "no element is"
        raise _no_images(batch, f"{found} a 4-D float/uint8 tensor")
    raise _no_images(batch, f"a {type(batch).__name__} is neither a tensor nor a tuple, list or dict")


class _PrivateRNG:
    """Python, NumPy and torch CPU random states of their own, swapped in only while data is being loaded.

    Transforms (random flips and crops) and ``iter(DataLoader)`` (which draws the workers' base seed) use the
    global random streams. Swapping in a fixed-seed stream around each fetch keeps training's streams untouched,
    makes augmented real images the same in every run (so the cache key's sample is stable), and still gives
    successive batches different random draws.
    """

    def __init__(self, seed: int = _REAL_PASS_SEED) -> None:
        self._python = random.Random(seed).getstate()
        self._numpy = np.random.RandomState(seed).get_state()
        self._torch = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        # Like sampling.isolated_rng (which this layer may not import), plus swapping the private states in.
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        random.setstate(self._python)
        np.random.set_state(self._numpy)
        torch.set_rng_state(self._torch)
        try:
            yield
        finally:
            self._python, self._numpy, self._torch = random.getstate(), np.random.get_state(), torch.get_rng_state()
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_max_workers(local_world_size: int = 1) -> int:
    """Loader workers a real pass may use: the CPUs this process may run on, shared by the processes of a machine.

    Args:
        local_world_size: Processes on this machine (``trainer.num_devices`` under Lightning), each running its
            own real pass at the same time.

    Returns:
        ``cpus // local_world_size`` (0 when there are more processes than CPUs: load in the main process).
    """
    if isinstance(local_world_size, bool) or not isinstance(local_world_size, int) or local_world_size < 1:
        raise ValueError(f"`local_world_size` must be a positive integer, got {local_world_size!r}.")
    return _available_cpus() // local_world_size


_POOL_START_SECONDS = {"fork": 0.2, "spawn": 3.0, "forkserver": 3.0}
"""Rough cost of starting a loader's worker pool: a forked worker is ready at once, a spawned one first imports
torch and the main module (seconds; tens of seconds on a loaded machine). Reading in the main process is preferred
while it would take less than this."""


def _pool_start_seconds(loader: DataLoader) -> float:
    context = loader.multiprocessing_context
    if context is not None:
        method = context.get_start_method()
    else:
        # Not multiprocessing.get_start_method(): without allow_none it fixes the default for the whole program.
        method = multiprocessing.get_start_method(allow_none=True) or (
            "fork" if sys.platform == "linux" and sys.version_info < (3, 14) else "spawn"
        )
    return _POOL_START_SECONDS.get(method, _POOL_START_SECONDS["spawn"])


def _local_world_size(world_size: int) -> int:
    """Processes on this machine: torchrun's ``LOCAL_WORLD_SIZE``, else all ``world_size`` (one machine assumed)."""
    try:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", ""))
    except ValueError:
        return world_size
    return local if 1 <= local <= world_size else world_size


def _is_map_style(loader: Any) -> bool:
    """A DataLoader that batches a sized, indexable dataset itself, so that it can be re-read by index."""
    dataset = getattr(loader, "dataset", None)
    return (
        isinstance(loader, DataLoader)
        and not isinstance(dataset, IterableDataset)
        and loader.batch_sampler is not None  # batch_size=None: the items are batches already, read them as such
        and hasattr(dataset, "__len__")
        and hasattr(dataset, "__getitem__")
    )


def map_style_size(loader: Any) -> int | None:
    """``len(dataset)`` of real data read by index (a map-style dataset, or a DataLoader that batches one), else None.

    Such data can be sampled anywhere cheaply (the cache key, the pixel space); other iterables only in order.
    """
    if isinstance(loader, Dataset) and not isinstance(loader, IterableDataset):
        return len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    return len(loader.dataset) if _is_map_style(loader) else None


def _worker_settings(loader: DataLoader, num_workers: int) -> dict[str, Any]:
    """Keyword arguments reproducing ``loader``'s worker settings with ``num_workers`` workers."""
    if num_workers == 0:
        # A single-process loader refuses a timeout, a multiprocessing context and a prefetch factor.
        return {"num_workers": 0, "pin_memory": loader.pin_memory}
    settings: dict[str, Any] = {
        "num_workers": num_workers,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,  # e.g. "spawn" where fork is unsafe
    }
    if loader.num_workers > 0:
        settings["prefetch_factor"] = loader.prefetch_factor
    return settings


def _shard_loader(loader: DataLoader, indices: Sequence[int], num_workers: int | None = None) -> DataLoader:
    """A loader over exactly ``indices`` of ``loader.dataset``, in that order, keeping its batching and workers.

    ``num_workers`` (default: the loader's) lowers the worker count; the pool is started once per iterator.
    """
    batch_size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None) or _DEFAULT_BATCH_SIZE
    workers = loader.num_workers if num_workers is None else min(num_workers, loader.num_workers)
    return DataLoader(
        loader.dataset,
        batch_size=batch_size,
        sampler=list(indices),
        collate_fn=loader.collate_fn,
        **_worker_settings(loader, workers),
    )


def _with_workers(loader: DataLoader, num_workers: int) -> DataLoader:
    """``loader`` unchanged, or rebuilt with its sampling, batching and collation but ``num_workers`` workers."""
    if loader.num_workers <= num_workers:
        return loader
    kwargs: dict[str, Any] = {"collate_fn": loader.collate_fn, "generator": loader.generator}
    if isinstance(loader.dataset, IterableDataset):
        kwargs.update(batch_size=loader.batch_size, drop_last=loader.drop_last)
    elif loader.batch_size is not None:
        kwargs.update(batch_size=loader.batch_size, drop_last=loader.drop_last, sampler=loader.sampler)
    elif loader.batch_sampler is not None:
        kwargs.update(batch_size=None, batch_sampler=loader.batch_sampler)
    else:
        kwargs.update(batch_size=None, sampler=loader.sampler)
    if kwargs.get("batch_sampler") is not None:
        del kwargs["batch_size"]
    return DataLoader(loader.dataset, **kwargs, **_worker_settings(loader, num_workers))


def _check_ranks(rank: int, world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"`world_size` must be a positive integer, got {world_size!r}.")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"`rank` must be an integer in [0, {world_size}) (world_size), got {rank!r}.")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        actual = (torch.distributed.get_rank(), torch.distributed.get_world_size())
        if (rank, world_size) != actual:
            raise ValueError(
                f"rank={rank}, world_size={world_size} disagree with the process group "
                f"(rank {actual[0]} of {actual[1]})."
            )


def _check_num_real(num_real: Any, minimum: int) -> None:
    if num_real is not None and (isinstance(num_real, bool) or not isinstance(num_real, int) or num_real < minimum):
        raise ValueError(f"`num_real` must be an integer >= {minimum} or None, got {num_real!r}.")


def _check_max_workers(max_workers: Any) -> None:
    if max_workers is not None and (
        isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 0
    ):
        raise ValueError(f"`max_workers` must be an integer >= 0 or None, got {max_workers!r}.")


class RealImageStream(Iterator[tuple[Tensor, Tensor]]):
    """This rank's real image batches with their global sample indices; made by :func:`iter_real_images`.

    ``indices`` (map-style data only) reads exactly those dataset items, in that order, on any rank: a sample
    spread over the dataset (see :func:`lightning_ganeval.real_cache.sample_real_images`).

    Attributes:
        shard_size: Samples this rank yields in all, when known up front (map-style datasets); else ``None``.
        total: Samples over all ranks: known up front for map-style datasets, for other iterables once the
            stream is exhausted (``None`` until then).
        num_workers: Worker processes of the loader read (after the cap); set to 0 once the first batch shows that
            the main process reads the shard faster than a worker pool would start.
    """

    def __init__(
        self,
        loader: DataLoader | Dataset | Iterable[Any],
        *,
        image_fn: Callable[[Any], Tensor] | None,
        num_real: int | None,
        rank: int,
        world_size: int,
        max_workers: int | None,
        max_batches: int | None = None,
        rank_checked: bool = True,
        indices: Sequence[int] | None = None,
    ) -> None:
        if rank_checked:
            _check_ranks(rank, world_size)
        _check_num_real(num_real, 1)
        _check_max_workers(max_workers)
        if image_fn is not None and not callable(image_fn):
            raise ValueError(f"`image_fn` must be callable or None, got {type(image_fn).__name__}.")
        cap = default_max_workers(_local_world_size(world_size)) if max_workers is None else max_workers
        if isinstance(loader, Dataset) and (isinstance(loader, IterableDataset) or hasattr(loader, "__len__")):
            loader = DataLoader(loader, batch_size=_DEFAULT_BATCH_SIZE)
        self._pick = image_fn or _default_image
        self._rank, self._world_size = rank, world_size
        self._num_real = num_real
        self._max_batches = max_batches
        self._rng = _PrivateRNG()
        self._iterator: Iterator[Any] | None = None
        self._loader_iterator: Iterator[Any] | None = None  # the DataLoader's own iterator, which owns the workers
        self._batches = 0
        self._pending: list[tuple[Tensor, Tensor]] = []  # the same-size groups of a batch of mixed sizes, to yield
        self._seen = 0  # samples over all ranks so far (iterables) / yielded by this rank (map-style)
        self.shard_size: int | None = None
        self.total: int | None = None

        if _is_map_style(loader):
            size = len(loader.dataset)
            total = size if num_real is None else min(size, num_real)
            if num_real is not None and num_real > size:
                warnings.warn(
                    f"num_real={num_real} exceeds the dataset size {size}; using all {size} samples.",
                    UserWarning,
                    stacklevel=3,
                )
            if indices is None:
                self._indices = torch.arange(rank, total, world_size, dtype=torch.int64)
            else:  # a sample read by index (the cache key, the pixel space): the same on every rank
                self._indices = torch.as_tensor(list(indices), dtype=torch.int64)
                self._indices = self._indices[(self._indices >= 0) & (self._indices < total)]
            self._source: Iterable[Any] = _shard_loader(loader, self._indices.tolist(), cap)
            self._loader = loader
            self._map_style = True
            self.shard_size, self.total = len(self._indices), total
        else:
            if indices is not None:
                raise ValueError("`indices` needs a map-style dataset (sized and indexable) batched by a DataLoader.")
            if num_real is None and max_batches is None:
                try:
                    len(loader)  # type: ignore[arg-type]
                except TypeError:
                    kind = type(getattr(loader, "dataset", loader)).__name__
                    raise ValueError(
                        f"The real data ({kind}) has no length and may never end: pass `num_real` (the number of "
                        "real images to read, e.g. FIDCallback(num_real=50_000)) or a map-style dataset."
                    ) from None
            if isinstance(loader, DataLoader):
                loader = _with_workers(loader, cap)
            self._source = loader
            self._map_style = False
        self.num_workers = self._source.num_workers if isinstance(self._source, DataLoader) else 0

    def __iter__(self) -> RealImageStream:
        return self

    def _fetch(self) -> Any:
        """The next batch and its images, read under the private random streams (``StopIteration`` at the end).

        The images are a tensor, or a list of ``C x H x W`` tensors of different sizes (a folder of image files,
        collated into a list), which :meth:`__next__` splits into one batch per size.
        """
        with self._rng.active():
            if self._iterator is None:
                self._iterator = self._start()
            batch = next(self._iterator)
            images = self._pick(batch)
        if isinstance(images, (list, tuple)) and images and all(_is_image(item) for item in images):
            return list(images)
        if not isinstance(images, Tensor) or images.ndim < 1:
            raise TypeError(
                "`image_fn` must return the batch's images as an N x C x H x W tensor (or a list of C x H x W "
                f"tensors), got {_describe(images)}."
            )
        return images

    def _start(self) -> Iterator[Any]:
        """Start reading. A shard that the main process reads faster than a worker pool starts is read there.

        The first batch is read in the main process and timed; the rest goes to the capped worker pool only if
        reading it in the main process would take longer than starting the pool (see `_POOL_START_SECONDS`).
        """
        loader = self._source
        batch_size = getattr(loader, "batch_size", None)
        if not (self._map_style and self.num_workers > 0 and batch_size and len(self._indices) > batch_size):
            self._loader_iterator = iter(loader)
            return self._loader_iterator
        started = time.perf_counter()
        first = next(iter(_shard_loader(self._loader, self._indices[:batch_size].tolist(), 0)))
        per_batch = time.perf_counter() - started
        remaining = math.ceil((len(self._indices) - batch_size) / batch_size)
        if per_batch * remaining <= _pool_start_seconds(loader):  # type: ignore[arg-type]
            self.num_workers = 0
        self._source = _shard_loader(self._loader, self._indices[batch_size:].tolist(), self.num_workers)
        self._loader_iterator = iter(self._source)
        return itertools.chain([first], self._loader_iterator)

    def __next__(self) -> tuple[Tensor, Tensor]:
        if not self._pending:
            images, indices = self._next_indexed() if self._map_style else self._next_positional()
            if isinstance(images, Tensor):
                return images, indices
            # Images of different sizes: one batch per size (each network resizes every image on its own, so the
            # features do not depend on the grouping).
            self._pending = list(same_size_groups(images, indices))
        return self._pending.pop(0)

    def _next_indexed(self) -> tuple[Tensor, Tensor]:
        if self._seen >= len(self._indices) or (self._max_batches is not None and self._batches >= self._max_batches):
            self.close()
            raise StopIteration
        images = self._fetch()
        expected = min(self._source.batch_size, len(self._indices) - self._seen)  # type: ignore[attr-defined]
        indices = self._indices[self._seen : self._seen + expected]
        if len(images) != expected:
            self.close()
            raise ValueError(
                f"Rank {self._rank} expected a batch of {expected} images from its shard (dataset items "
                f"{indices[:3].tolist()}...) but got {len(images)}; the loader's collate_fn and the image_fn "
                "must give one image per dataset item."
            )
        self._seen += expected
        self._batches += 1
        return images, indices

    def _next_positional(self) -> tuple[Tensor, Tensor]:
        while True:
            done = self._num_real is not None and self._seen >= self._num_real
            if done or (self._max_batches is not None and self._batches >= self._max_batches):
                return self._finish()
            try:
                images = self._fetch()
            except StopIteration:
                return self._finish()
            position = self._batches
            self._batches += 1
            take = len(images) if self._num_real is None else min(len(images), self._num_real - self._seen)
            start = self._seen
            self._seen += take
            if position % self._world_size == self._rank and take > 0:
                return images[:take], torch.arange(start, start + take, dtype=torch.int64)

    def _finish(self) -> Any:
        if self.total is None:
            self.total = self._seen
            if self._num_real is not None and self._seen < self._num_real and self._max_batches is None:
                warnings.warn(
                    f"The loader ran out after {self._seen} samples, fewer than num_real={self._num_real}.",
                    UserWarning,
                    stacklevel=3,
                )
        self.close()
        raise StopIteration

    def close(self) -> None:
        """Stop reading: shut the loader's worker processes down now rather than when garbage-collected."""
        shutdown = getattr(self._loader_iterator, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()
        self._iterator = self._loader_iterator = None


def iter_real_images(
    loader: DataLoader | Dataset | Iterable[Any],
    *,
    image_fn: Callable[[Any], Tensor] | None = None,
    num_real: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    max_workers: int | None = None,
) -> RealImageStream:
    """This rank's share of the real images, batch by batch, read once: the real pass under every metric.

    Sharding: a ``DataLoader`` over a map-style dataset (or the dataset
    itself) is re-read through a new loader over exactly the indices ``range(rank, total, world_size)``,
    ``total = min(len(dataset), num_real)``, with the original batch size, ``collate_fn`` and worker settings (its
    own sampler is ignored); any other iterable is read in full on every rank, which keeps the batches at
    positions ``i % world_size == rank`` (global indices count samples in reading order).

    Data loading draws from private, fixed-seed random streams, so the global Python, NumPy and torch random
    states are the same afterwards (also between batches) and augmented images are the same in every run.
    The loader's workers are capped at ``max_workers``; at most one worker pool is started per stream, and none
    when the first batch, read in the main process, shows that reading the rest there takes less time than
    starting the pool (about 0.2 s for ``fork``, 3 s for ``spawn``/``forkserver`` workers).

    Args:
        loader: A ``DataLoader``, a ``Dataset`` (batched by 50), or any iterable of batches.
        image_fn: Picks the image tensor out of a batch; default: see ``_default_image`` (a tensor batch, the one
            4-D float/uint8 tensor of a tuple/list/dict, a dict's ``image``/``pixel_values``/``img``/``images``).
        num_real: Read at most this many samples overall (the first ones in dataset/reading order). Required
            for iterables without a length, which may never end.
        rank: This process's rank.
        world_size: Number of processes.
        max_workers: At most this many loader workers; default: the CPUs available to this process divided by
            the processes on this machine (``LOCAL_WORLD_SIZE``, else ``world_size``), see
            :func:`default_max_workers`.

    Returns:
        An iterator of ``(images, indices)``: the batch's images exactly as picked (not converted) and their
        global sample indices (int64, on the CPU). See :class:`RealImageStream` for the counts it exposes.

    Raises:
        ValueError: Bad ``rank``/``world_size``/``num_real``/``max_workers``; an unsized iterable without
            ``num_real``; while iterating, a batch whose images cannot be found or whose count does not match
            the dataset items it was made from.
    """
    return RealImageStream(
        loader, image_fn=image_fn, num_real=num_real, rank=rank, world_size=world_size, max_workers=max_workers
    )
