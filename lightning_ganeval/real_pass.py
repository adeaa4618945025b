"""One pass over the real images for every metric that needs them, with a disk cache.

FID needs the real mean and covariance of its network's layer; KID and precision/recall need per-sample real
features. :func:`prepare_real_data` reads the real data once (sharded over ranks, without sampler duplicates),
runs each distinct network once per batch and fills every requested accumulator, then caches each result on disk.

* **Cache** (:mod:`lightning_ganeval.real_cache`): a whole-dataset key from a spread sample of images, and
  checked entries, recomputed with one warning on any mismatch.
* **Real rows** (KID, precision/recall): a seeded uniform sample of the whole real set, chosen in the one pass by
  a priority hashed from each image's global index (:func:`select_real_rows`): the same rows for any batch size,
  loader order or number of processes, and any prefix of them is again a uniform sample.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_ganeval.accumulators import FeatureBank, FIDMoments
from lightning_ganeval.distributed import agree, barrier, broadcast_object, rank_and_world_size
from lightning_ganeval.feature_network import network_provenance
from lightning_ganeval.frechet import GaussianStats
from lightning_ganeval.images import to_uint8_rgb
from lightning_ganeval.metrics.base import GenerativeMetric, RealData
from lightning_ganeval.networks import network_device, network_identity, run_network
from lightning_ganeval.pixel_space import PixelSpace, coerce_pixel_space
from lightning_ganeval.real_cache import (
    SAMPLE_SEED,
    RealSample,
    _Entry,
    content_digest,
    default_cache_dir,
    infer_real_space,
    is_one_shot,
    real_cache_key,
    sample_real_images,
)
from lightning_ganeval.real_images import iter_real_images, map_style_size
from lightning_ganeval.sampling import isolated_rng
from lightning_ganeval.stats_files import load_stats

__all__ = ["prepare_real_data", "select_real_rows"]

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _priorities(indices: Tensor) -> np.ndarray:
    """A seeded pseudo-random uint64 per global index (SplitMix64): independent of ranks, batches and order."""
    with np.errstate(over="ignore"):
        z = indices.cpu().numpy().astype(np.uint64) + np.uint64(SAMPLE_SEED) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _MASK64


def select_real_rows(indices: Tensor, count: int) -> Tensor:
    """Positions in ``indices`` of the real rows to keep: the ``count`` smallest seeded priorities, in that order.

    The priority of a row depends only on its global index, so the kept set is a uniform sample of all the
    indices offered, the same whichever rank or batch offered them; and any prefix of the result is again a
    uniform sample (a metric wanting fewer rows takes the first ones).
    """
    priorities = _priorities(indices)
    order = np.lexsort((indices.cpu().numpy(), priorities))  # ties (none in practice) by index
    return torch.from_numpy(order[: max(count, 0)].astype(np.int64))


class _RowSample:
    """This rank's candidate real rows, pruned to the ``cap`` smallest priorities as they come (bounded memory)."""

    def __init__(self, num_features: int, cap: int) -> None:
        self.num_features, self.cap = num_features, cap
        self.rows: list[Tensor] = []
        self.indices: list[Tensor] = []
        self.count = 0

    def update(self, rows: Tensor, indices: Tensor) -> None:
        if rows.ndim != 2 or rows.shape[1] != self.num_features:
            raise ValueError(f"Expected features of shape (B, {self.num_features}), got {tuple(rows.shape)}.")
        self.rows.append(rows.detach().to("cpu", torch.float32))
        self.indices.append(indices.detach().to("cpu", torch.int64))
        self.count += len(indices)
        if self.count > 2 * self.cap:
            self._prune()

    def _prune(self) -> tuple[Tensor, Tensor]:
        rows = torch.cat(self.rows) if self.rows else torch.empty(0, self.num_features)
        indices = torch.cat(self.indices) if self.indices else torch.empty(0, dtype=torch.int64)
        keep = select_real_rows(indices, self.cap)
        rows, indices = rows[keep], indices[keep]
        self.rows, self.indices, self.count = [rows], [indices], len(indices)
        return rows, indices

    def compute(self) -> tuple[Tensor, Tensor]:
        """The ``cap`` rows of smallest priority over every rank and their global indices, in priority order.

        A collective under DDP: every rank calls it.
        """
        rows, indices = self._prune()
        _rank, world_size = rank_and_world_size()
        if world_size > 1:
            bank = FeatureBank(num_features=self.num_features)
            bank.update(rows, indices)
            rows, indices = bank.synced().ordered()  # every rank's rows and indices, sorted by global index
        keep = select_real_rows(indices, self.cap)
        return rows[keep].contiguous(), indices[keep]


# ------------------------------------------------------------------------------------------- cache entries
def prepare_real_data(
    real: Any,
    wanting: Sequence[tuple[nn.Module, GenerativeMetric]],
    *,
    space: PixelSpace | Sequence[float] | None = None,
    image_fn: Callable[[Any], Tensor] | None = None,
    num_real: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
    progress: Callable[[int, int | None], None] | None = None,
    argument: str = "real",
    inferred_from: str | None = None,
) -> dict[GenerativeMetric, RealData]:
    """Real statistics and features for each metric in ``wanting`` (pairs of network and metric).

    Args:
        real: A ``DataLoader`` / dataset / iterable of batches, a ``.npz`` statistics file (moments only), or
            :class:`~lightning_ganeval.frechet.GaussianStats`.
        wanting: ``(network, metric)`` for each metric whose :meth:`real_request` is not None.
        space: Pixel space of the real images; ``None`` infers it from :func:`sample_real_images`
            (:func:`~lightning_ganeval.images.infer_pixel_space`).
        image_fn: Picks the images out of a batch (default: the one image tensor of a tensor, tuple or dict batch).
        num_real: Use the first ``num_real`` real samples; required for unsized iterables.
        cache_dir: Folder of the disk cache (default :func:`default_cache_dir`).
        cache: Read and write the disk cache. A one-shot iterator is never cached (one warning).
        progress: ``progress(done, total)`` after each batch of this rank.
        argument: The user's name for ``real`` in error messages.
        inferred_from: The caller inferred ``space`` from this (a reason as :func:`infer_pixel_space` gives it):
            real images outside it are then reported as outside an inferred space, with ``value_range=`` advice.

    Returns:
        The real data of each metric (identical on every rank). Every rank must call this function.
    """
    if isinstance(real, (str, os.PathLike)):
        out: dict[GenerativeMetric, RealData] = {}
        for network, metric in wanting:
            request = metric.real_request()
            if request is not None and request.max_features:
                raise ValueError(
                    f"`{metric.name}` compares per-sample features and needs real images, not the statistics file"
                    f" {os.fspath(real)!r}: pass `{argument}=` a DataLoader (or leave it None for the training data)."
                )
            stats, _ = load_stats(real, expect=network_provenance(network, metric.resolved_layer()))
            out[metric] = RealData(stats=stats, source=os.fspath(real), num_images=stats.n)
        return out
    if isinstance(real, GaussianStats):
        return {metric: RealData(stats=real, source="statistics", num_images=real.n) for _, metric in wanting}

    space = coerce_pixel_space(space)  # before any image is read
    rank, world_size = rank_and_world_size()
    one_shot = is_one_shot(real)
    if one_shot and cache:
        warnings.warn(
            f"The real data ({argument}=) is a one-shot iterator ({type(real).__name__}): reading it for the cache"
            " key would consume it, so its real statistics are not cached. Pass a DataLoader, a dataset or a list"
            " of batches to cache them.",
            UserWarning,
            stacklevel=2,
        )
        cache = False
    sample: RealSample | None = None
    if space is None:
        if one_shot:
            raise ValueError(
                f"Cannot infer the pixel space of a one-shot iterator ({argument}=) without consuming it: pass"
                " `space=` (e.g. (-1, 1) or (0, 1))."
            )
        sample = sample_real_images(real, image_fn=image_fn, num_real=num_real)  # reused for the cache key
        space, inferred_from = broadcast_object(
            infer_real_space(real, sample=sample), world_size=world_size
        )  # rank 0's is everyone's
    assert space is not None

    entries: dict[tuple[int, str, str], _Entry] = {}
    for network, metric in wanting:
        request = metric.real_request()
        assert request is not None
        layer = metric.resolved_layer()
        if request.moments:
            entries.setdefault((id(network), layer, "moments"), _Entry(network, layer, "moments", 0))
        if request.max_features:
            entry = entries.setdefault((id(network), layer, "features"), _Entry(network, layer, "features", 0))
            entry.cap = max(entry.cap, request.max_features)

    count = _count(real, num_real)
    if cache:
        content = content_digest(real, image_fn, num_real, sample)  # once: it may read all of unsized data
        for entry in entries.values():
            entry.key = real_cache_key(
                real,
                space=space,
                image_fn=image_fn,
                num_real=num_real,
                content=content,
                network=network_identity(entry.network),
                layer=entry.layer,
                kind=entry.kind,
                cap=entry.cap,
            )

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    found = [entry.load(folder, count) if cache and rank == 0 else None for entry in entries.values()]
    found = broadcast_object(found, world_size=world_size)
    missing = [entry for entry, hit in zip(entries.values(), found, strict=True) if hit is None]
    for entry, hit in zip(entries.values(), found, strict=True):
        if hit is not None:
            entry.result, entry.num_images, entry.indices = hit
    if missing:
        total = _real_pass(real, missing, space, image_fn, num_real, progress, argument, inferred_from)
        for entry in missing:
            entry.num_images = total
        if cache and rank == 0:
            provenance = {"pixel_space": space.to_json()}
            for entry in missing:
                entry.save(folder, provenance)
        barrier(world_size=world_size)

    out = {}
    for network, metric in wanting:
        request = metric.real_request()
        assert request is not None
        layer = metric.resolved_layer()
        moments = entries[(id(network), layer, "moments")] if request.moments else None
        rows = entries[(id(network), layer, "features")] if request.max_features else None
        features = rows.result if rows is not None else None
        indices = None
        if isinstance(features, Tensor):
            features = features[: request.max_features]
            assert rows is not None
            assert rows.indices is not None
            indices = rows.indices[: request.max_features]
        num_images = (moments or rows).num_images  # type: ignore[union-attr]
        out[metric] = RealData(
            stats=moments.result if moments is not None else None,  # type: ignore[arg-type]
            features=features,  # type: ignore[arg-type]
            indices=indices,
            source=f"{num_images} real images",
            num_images=num_images,
        )
    return out


def _count(real: Any, num_real: int | None) -> int | None:
    """Real images the pass will read, when known before it (map-style data); else None."""
    size = map_style_size(real)
    if size is None:
        return None
    return size if num_real is None else min(size, num_real)


def _real_pass(
    real: Any,
    entries: list[_Entry],
    space: PixelSpace,
    image_fn: Callable[[Any], Tensor] | None,
    num_real: int | None,
    progress: Callable[[int, int | None], None] | None,
    argument: str,
    inferred_from: str | None,
) -> int:
    """Fill every entry's result from one pass; returns the number of real images read over all ranks."""
    rank, world_size = rank_and_world_size()
    networks: list[nn.Module] = []
    for entry in entries:
        # Rows of a network that does not announce its width create the accumulator at the first batch.
        width = entry.width
        entry.accumulator = _accumulator(entry, width, network_device(entry.network)) if width else None
        if all(entry.network is not n for n in networks):
            networks.append(entry.network)
    error: Exception | None = None
    with isolated_rng(), torch.no_grad():
        stream = iter_real_images(real, image_fn=image_fn, num_real=num_real, rank=rank, world_size=world_size)
        try:
            _feed_entries(stream, entries, networks, space, progress, inferred_from)
        except Exception as err:  # re-raised below, after the other ranks have been told
            error = err
            stream.close()
    # One rank may fail alone (an unreadable image in its share): every rank learns it here instead of waiting
    # forever in the accumulators' merge below.
    agree(error, world_size=world_size, message="The real pass failed on another process; see its error.")
    for entry in entries:
        if entry.accumulator is None:
            raise ValueError(f"The real data ({argument}=) gave no images.")
        # compute() synchronises across ranks: every rank reaches this line for every entry, in the same order.
        if isinstance(entry.accumulator, _RowSample):
            entry.result, entry.indices = entry.accumulator.compute()
        else:
            entry.result = entry.accumulator.compute()
    assert stream.total is not None
    return int(stream.total)


def _feed_entries(
    stream: Any,
    entries: list[_Entry],
    networks: list[nn.Module],
    space: PixelSpace,
    progress: Callable[[int, int | None], None] | None,
    inferred_from: str | None,
) -> None:
    """Run each network once per batch of ``stream`` and feed every entry's accumulator."""
    done = 0
    for images, indices in stream:
        converted = to_uint8_rgb(images, space, side="real", argument=_space_argument(space), check_range=False)
        converted.range_check.check(inferred_from=inferred_from)
        if converted.num_nonfinite:
            raise ValueError(
                f"{converted.num_nonfinite} real image(s) contain NaN or Inf; real statistics need finite images."
            )
        for network in networks:
            outputs = run_network(network, converted.images.to(network_device(network)))
            for entry in entries:
                if entry.network is not network:
                    continue
                rows = outputs[entry.layer]
                if entry.accumulator is None:
                    entry.accumulator = _accumulator(entry, rows.shape[1], rows.device)
                if entry.kind == "moments":
                    entry.accumulator.update(rows)  # type: ignore[call-arg]
                else:
                    entry.accumulator.update(rows, indices)
        done += len(images)
        if progress is not None:
            progress(done, None)


def _accumulator(entry: _Entry, width: int, device: torch.device) -> FIDMoments | _RowSample:
    if entry.kind == "moments":
        return FIDMoments(num_features=int(width)).to(device)
    return _RowSample(num_features=int(width), cap=entry.cap)


def _space_argument(space: PixelSpace) -> str:
    return "real_normalize" if space.kind == "normalize" else "real_value_range"
