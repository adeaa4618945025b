"""One pass over the real images for every metric that needs them, with a disk cache.

FID needs the real mean and covariance of its network's layer; KID and precision/recall need per-sample real
features. :func:`prepare_real_data` reads the real data once (sharded over ranks, without sampler duplicates),
runs each distinct network once per batch and fills every requested accumulator, then caches each result on disk
under a key of what the network actually received: a digest of the first converted uint8 batches, the count, the
pixel space, the network's identity and the layer. Changing a transform, a ``collate_fn`` or ``image_fn`` changes
the images and misses the cache; changing nothing hits it in the next run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_ganeval.extractor import InceptionExtractor
from lightning_ganeval.images import PixelSpace, infer_pixel_space, to_uint8_rgb
from lightning_ganeval.math import GaussianStats
from lightning_ganeval.metrics.base import GenerativeMetric, RealData
from lightning_ganeval.moments import FeatureBank, FIDMoments
from lightning_ganeval.networks import network_device, network_identity, run_network
from lightning_ganeval.reference import (
    extractor_provenance,
    iter_real_images,
    load_stats,
    real_content_digest,
    save_stats,
)
from lightning_ganeval.sampling import isolated_rng

__all__ = ["default_cache_dir", "network_provenance", "prepare_real_data"]


def default_cache_dir() -> Path:
    """``$TORCH_HOME/lightning_ganeval/real_stats`` (``~/.cache/torch/...`` by default), next to torch hub's cache."""
    return Path(torch.hub.get_dir()).parent / "lightning_ganeval" / "real_stats"


def network_provenance(network: nn.Module, layer: str) -> dict[str, Any]:
    """Provenance of statistics of ``network``'s ``layer`` (written into and checked against ``.npz`` files)."""
    entries = extractor_provenance(network) if isinstance(getattr(network, "identity", None), str) else {}
    entries["extractor"] = network_identity(network)
    # "pool3" makes `load_stats` also check d = 2048; a stand-in network's "pool" has other widths.
    entries["layer"] = "pool3" if layer == "pool" and isinstance(network, InceptionExtractor) else layer
    return entries


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _broadcast(value: Any, world_size: int) -> Any:
    if world_size < 2:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()


class _Entry:
    """One cached product of the real pass: the moments or the features of one network's layer."""

    def __init__(self, network: nn.Module, layer: str, kind: str, cap: int) -> None:
        self.network, self.layer, self.kind, self.cap = network, layer, kind, cap
        self.key = ""
        self.result: GaussianStats | Tensor | None = None
        self.accumulator: FIDMoments | FeatureBank | None = None

    def path(self, cache_dir: Path) -> Path:
        return cache_dir / (f"{self.key}.npz" if self.kind == "moments" else f"{self.key}.features.npy")

    def load(self, cache_dir: Path) -> GaussianStats | Tensor | None:
        path = self.path(cache_dir)
        if not path.is_file():
            return None
        try:
            if self.kind == "moments":
                stats, found = load_stats(path, expect=network_provenance(self.network, self.layer))
                return stats if found.get("cache_key") == self.key else None
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (ValueError, OSError) as err:
            warnings.warn(f"Ignoring unusable cached real data {str(path)!r}: {err}", UserWarning, stacklevel=3)
            return None

    def save(self, cache_dir: Path, provenance: dict[str, Any]) -> None:
        path = self.path(cache_dir)
        try:
            if self.kind == "moments":
                assert isinstance(self.result, GaussianStats)
                save_stats(path, self.result, {**provenance, **network_provenance(self.network, self.layer)})
                return
            assert isinstance(self.result, Tensor)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, self.result.numpy(), allow_pickle=False)
            os.replace(tmp, path)
        except OSError as err:
            # Other ranks may be waiting in a barrier: never raise between the collectives.
            warnings.warn(f"Could not write the real-data cache {str(path)!r}: {err}", UserWarning, stacklevel=3)


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
) -> dict[GenerativeMetric, RealData]:
    """Real statistics and features for each metric in ``wanting`` (pairs of network and metric).

    Args:
        real: A ``DataLoader`` / dataset / iterable of batches, a ``.npz`` statistics file (moments only), or
            :class:`~lightning_ganeval.math.GaussianStats`.
        wanting: ``(network, metric)`` for each metric whose :meth:`real_request` is not None.
        space: Pixel space of the real images; ``None`` infers it (:func:`~lightning_ganeval.images.infer_pixel_space`).
        image_fn: Picks the images out of a batch (default: the one image tensor of a tensor, tuple or dict batch).
        num_real: Use the first ``num_real`` real samples; required for unsized iterables.
        cache_dir: Folder of the disk cache (default :func:`default_cache_dir`).
        cache: Read and write the disk cache.
        progress: ``progress(done, total)`` after each batch of this rank.
        argument: The user's name for ``real`` in error messages.

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
            out[metric] = RealData(stats=stats, source=os.fspath(real))
        return out
    if isinstance(real, GaussianStats):
        return {metric: RealData(stats=real, source="statistics") for _, metric in wanting}

    rank, world_size = _distributed()
    if space is None:
        with isolated_rng():
            space, _ = infer_pixel_space(
                getattr(real, "dataset", real), _first_batches(real, image_fn, rank, world_size)
            )
        space = _broadcast(space, world_size)  # rank 0's conclusion is everyone's
    space = space if isinstance(space, PixelSpace) else PixelSpace.from_value_range(*space)

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
    with isolated_rng():
        digest = real_content_digest(real, image_fn=image_fn, value_range=space) if cache else ""
    for entry in entries.values():
        payload = {
            "digest": digest,
            "count": count,
            "space": space.to_json(),
            "network": network_identity(entry.network),
            "layer": entry.layer,
            "kind": entry.kind,
            "cap": entry.cap,
        }
        entry.key = "real-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    found = [entry.load(folder) if cache and rank == 0 else None for entry in entries.values()]
    found = _broadcast(found, world_size)
    missing = [entry for entry, hit in zip(entries.values(), found, strict=True) if hit is None]
    for entry, hit in zip(entries.values(), found, strict=True):
        entry.result = hit
    if missing:
        _real_pass(real, missing, space, image_fn, num_real, progress, argument)
        if cache and rank == 0:
            provenance = {"pixel_space": space.to_json(), "count": count, "digest": digest}
            for entry in missing:
                entry.save(folder, {**provenance, "cache_key": entry.key})
        _barrier(world_size)

    out = {}
    for network, metric in wanting:
        request = metric.real_request()
        assert request is not None
        layer = metric.resolved_layer()
        stats = entries[(id(network), layer, "moments")].result if request.moments else None
        features = entries[(id(network), layer, "features")].result if request.max_features else None
        if isinstance(features, Tensor):
            features = features[: request.max_features]
        out[metric] = RealData(stats=stats, features=features, source=f"{count} real images")  # type: ignore[arg-type]
    return out


def _count(real: Any, num_real: int | None) -> int | None:
    dataset = getattr(real, "dataset", real)
    try:
        size = len(dataset)
    except TypeError:
        return num_real
    return size if num_real is None else min(size, num_real)


def _first_batches(real: Any, image_fn: Callable[[Any], Tensor] | None, rank: int, world_size: int) -> list[Tensor]:
    stream = iter_real_images(real, image_fn=image_fn, rank=rank, world_size=world_size, max_workers=0)
    return [images for images, _ in itertools.islice(stream, 2)]


def _real_pass(
    real: Any,
    entries: list[_Entry],
    space: PixelSpace,
    image_fn: Callable[[Any], Tensor] | None,
    num_real: int | None,
    progress: Callable[[int, int | None], None] | None,
    argument: str,
) -> None:
    rank, world_size = _distributed()
    networks: list[nn.Module] = []
    for entry in entries:
        # Rows of a network that does not announce its width create the accumulator at the first batch.
        width = getattr(entry.network, "num_features", None) if entry.layer in ("pool", "features") else None
        entry.accumulator = _accumulator(entry, width, network_device(entry.network)) if width else None
        if all(entry.network is not n for n in networks):
            networks.append(entry.network)
    done = 0
    total = None
    with isolated_rng(), torch.no_grad():
        for images, indices in iter_real_images(
            real, image_fn=image_fn, num_real=num_real, rank=rank, world_size=world_size
        ):
            converted = to_uint8_rgb(images, space, side="real", argument=_space_argument(space))
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
                        entry.accumulator.update(rows)
                    else:
                        entry.accumulator.update(rows, indices)
            done += len(images)
            if progress is not None:
                progress(done, total)
    for entry in entries:
        if entry.accumulator is None:
            raise ValueError(f"The real data ({argument}=) gave no images.")
        # compute() synchronises across ranks: every rank reaches this line for every entry, in the same order.
        entry.result = entry.accumulator.compute()


def _accumulator(entry: _Entry, width: int, device: torch.device) -> FIDMoments | FeatureBank:
    if entry.kind == "moments":
        return FIDMoments(num_features=int(width)).to(device)
    return FeatureBank(num_features=int(width), max_rows=entry.cap)


def _space_argument(space: PixelSpace) -> str:
    return "real_normalize" if space.kind == "normalize" else "real_value_range"
