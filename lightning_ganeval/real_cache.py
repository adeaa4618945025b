"""The disk cache of the real pass: a whole-dataset key from a spread sample of images, and checked entries.

* **Cache key** (:func:`real_cache_key`): a digest of :data:`SAMPLE_SIZE` real images at seeded positions spread
  over the whole dataset (:func:`sample_real_images`; data that cannot be read by index is digested in full, one
  extra read without the network), the count, a description of the dataset and its transforms, the
  ``collate_fn`` and ``image_fn``, the pixel space, the network's identity and the layer. The same sample gives the
  inferred pixel space (:func:`infer_real_space`).
* **Checked entries** (``_Entry``): moments are a pytorch-fid-readable ``.npz`` whose provenance records the key,
  the count and a checksum; features are ``.features.npz`` with a record of the key, count, shape, dtype and
  SHA-256. Each is verified before use; on any mismatch the entry is recomputed with one warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_ganeval.feature_network import network_provenance
from lightning_ganeval.frechet import GaussianStats
from lightning_ganeval.images import infer_pixel_space
from lightning_ganeval.pixel_space import PixelSpace
from lightning_ganeval.real_images import RealImageStream, map_style_size
from lightning_ganeval.sampling import isolated_rng
from lightning_ganeval.stats_files import atomic_write, load_stats, save_stats

__all__ = [
    "SAMPLE_SEED",
    "SAMPLE_SIZE",
    "RealSample",
    "content_digest",
    "default_cache_dir",
    "describe_data",
    "infer_real_space",
    "is_one_shot",
    "real_cache_key",
    "sample_indices",
    "sample_real_images",
]

SAMPLE_SIZE = 64
"""Real images read for the cache key and the inferred pixel space: one at a seeded position in each of 64 equal
strata of the index range (plus the first and last item of each part of a ``ConcatDataset``)."""

SAMPLE_SEED = 0x5EED
_CACHE_SCHEMA = 2  # 1: first-batches digest and first-N rows; 2: spread sample and uniform rows
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # object addresses in reprs change every run


def default_cache_dir() -> Path:
    """``$TORCH_HOME/lightning_ganeval/real_stats`` (``~/.cache/torch/...`` by default), next to torch hub's cache."""
    return Path(torch.hub.get_dir()).parent / "lightning_ganeval" / "real_stats"


# ------------------------------------------------------------------------------------------- the real sample
@dataclass(frozen=True)
class RealSample:
    """Real images read before the pass, for the cache key and the inferred pixel space.

    Attributes:
        images: The picked image batches, unconverted.
        indices: Their dataset indices (positions in reading order for data not read by index).
        description: What the sample is, for messages, e.g. ``"64 real images at seeded positions spread over
            all 50000"``.
        spread: True if the sample spans the whole index range; False for the first batches of an iterable.
    """

    images: list[Tensor]
    indices: Tensor
    description: str
    spread: bool


def sample_indices(size: int, count: int = SAMPLE_SIZE, *, boundaries: Sequence[int] = ()) -> list[int]:
    """Seeded positions spread over ``range(size)``: one in each of ``count`` equal strata, plus part ends.

    Args:
        size: Items to choose from.
        count: Strata (all items when ``size <= count``).
        boundaries: Cumulative part sizes (``ConcatDataset.cumulative_sizes``): the first and last item of every
            part are added, so that even a part smaller than one stratum is looked at.
    """
    if size <= count:
        return list(range(size))
    rng = np.random.default_rng(SAMPLE_SEED)
    edges = np.linspace(0, size, count + 1).astype(np.int64)
    picks = {int(rng.integers(lo, hi)) for lo, hi in itertools.pairwise(edges) if hi > lo}
    starts = [0, *boundaries]
    for start, end in itertools.pairwise(starts):
        if start < end:
            picks.update({start, end - 1})
    return sorted(p for p in picks if 0 <= p < size)


def is_one_shot(real: Any) -> bool:
    """Whether ``real`` is an iterator that a second pass cannot read again (so it cannot be keyed or cached)."""
    return not isinstance(real, (DataLoader, Dataset)) and iter(real) is real


def infer_real_space(
    real: Any,
    *,
    image_fn: Callable[[Any], Tensor] | None = None,
    num_real: int | None = None,
    dataset_name: str = "real data",
    sample: RealSample | None = None,
) -> tuple[PixelSpace, str]:
    """The pixel space of real images and where it was read, by :func:`~lightning_ganeval.images.infer_pixel_space`.

    A ``Normalize`` in the transforms of ``real``'s dataset decides; else the values of
    :func:`sample_real_images` (images spread over the whole dataset, not its first batches, which may all be of one
    class). The sample is the same on every rank, so is the result.

    Args:
        real: A ``DataLoader``, a dataset, or a re-iterable collection of batches.
        image_fn: Picks the images out of a batch.
        num_real: Only the first ``num_real`` items are used by the pass, so only they are sampled.
        dataset_name: How the reason names the data, e.g. ``"train data"``.
        sample: The sample, if the caller already read it.
    """
    if sample is None:
        sample = sample_real_images(real, image_fn=image_fn, num_real=num_real)
    return infer_pixel_space(
        getattr(real, "dataset", real), sample.images, dataset_name=dataset_name, batches_name=sample.description
    )


def sample_real_images(
    real: Any,
    *,
    image_fn: Callable[[Any], Tensor] | None = None,
    num_real: int | None = None,
    count: int = SAMPLE_SIZE,
) -> RealSample:
    """Real images spread over the whole dataset (map-style data), else the first two batches.

    Read in the main process under the real pass's private random streams (augmented images are the same in
    every run, the global random states are untouched) and rank-independent: every rank reads the same sample.

    Args:
        real: A ``DataLoader``, a dataset, or a re-iterable collection of batches.
        image_fn: Picks the images out of a batch.
        num_real: Only the first ``num_real`` items are used by the pass, so only they are sampled.
        count: See :func:`sample_indices`.

    Raises:
        TypeError: For a one-shot iterator, which reading would consume.
    """
    if is_one_shot(real):
        raise TypeError(
            f"Cannot sample a one-shot iterator ({type(real).__name__}): reading it would consume the real data. "
            "Pass a DataLoader, a dataset or a re-iterable collection of batches."
        )
    size = map_style_size(real)
    if size is not None:
        total = size if num_real is None else min(size, num_real)
        cumulative = getattr(getattr(real, "dataset", real), "cumulative_sizes", ())
        picks = sample_indices(total, count, boundaries=[min(int(b), total) for b in cumulative])
        stream = RealImageStream(
            real, image_fn=image_fn, num_real=num_real, rank=0, world_size=1, max_workers=0,
            rank_checked=False, indices=picks,
        )  # fmt: skip
        with isolated_rng():
            pairs = list(stream)
        description = (
            f"all {total} real images"
            if len(picks) >= total
            else f"{len(picks)} real images at seeded positions spread over all {total}"
        )
        spread = True
    else:
        stream = RealImageStream(
            real, image_fn=image_fn, num_real=num_real, rank=0, world_size=1, max_workers=0,
            rank_checked=False, max_batches=2,
        )  # fmt: skip
        with isolated_rng():
            pairs = list(stream)
        description = f"the first {len(pairs)} real batches (the data cannot be read by index)"
        spread = False
    images = [batch for batch, _ in pairs]
    indices = torch.cat([i for _, i in pairs]) if pairs else torch.empty(0, dtype=torch.int64)
    return RealSample(images=images, indices=indices, description=description, spread=spread)


def _hash_images(digest: Any, images: Tensor) -> None:
    array = images.detach().cpu().contiguous()
    # Per-image layout, not the batch shape: the same images batched differently give the same digest.
    digest.update(f"{array.dtype}{tuple(array.shape[1:])}".encode())
    digest.update(array.reshape(-1).view(torch.uint8).numpy().tobytes() if array.numel() else b"")


def content_digest(
    real: Any, image_fn: Callable[[Any], Tensor] | None, num_real: int | None, sample: RealSample | None
) -> str:
    """Digest of the images: the spread sample of map-style data, every image of other (re-iterable) data."""
    digest = hashlib.sha256()
    if map_style_size(real) is not None:
        sample = (
            sample
            if sample is not None and sample.spread
            else sample_real_images(real, image_fn=image_fn, num_real=num_real)
        )
        for images in sample.images:
            _hash_images(digest, images)
        digest.update(sample.indices.numpy().tobytes())
        return digest.hexdigest()[:32]
    stream = RealImageStream(
        real, image_fn=image_fn, num_real=num_real, rank=0, world_size=1, max_workers=None, rank_checked=False
    )
    with isolated_rng():
        for images, indices in stream:
            _hash_images(digest, images)
            digest.update(indices.numpy().tobytes())
    return digest.hexdigest()[:32]


def _callable_name(fn: Any) -> str | None:
    if fn is None:
        return None
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', None) or type(fn).__module__}.{name}"


def _describe_dataset(dataset: Any, depth: int = 0) -> dict[str, Any]:
    cls = type(dataset)
    entry: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    if depth > 4:
        return entry
    with contextlib.suppress(TypeError):
        entry["len"] = len(dataset)
    for attr in ("transform", "target_transform", "transforms"):
        value = getattr(dataset, attr, None)
        if value is not None and not isinstance(value, (str, bytes)):
            text = _ADDRESS.sub("", repr(value))
            entry[attr] = hashlib.sha256(text.encode()).hexdigest()[:16]
    parts = getattr(dataset, "datasets", None)
    if isinstance(parts, (list, tuple)):
        entry["parts"] = [_describe_dataset(part, depth + 1) for part in parts]
    inner = getattr(dataset, "dataset", None)
    if inner is not None and inner is not dataset and not isinstance(inner, (str, bytes)):
        entry["inner"] = _describe_dataset(inner, depth + 1)
    return entry


def describe_data(real: Any, image_fn: Callable[[Any], Tensor] | None = None) -> dict[str, Any]:
    """What the cache key records about the pipeline besides the images: classes, lengths, transforms, functions."""
    collate = real.collate_fn if isinstance(real, DataLoader) else None
    return {
        "dataset": _describe_dataset(real.dataset if isinstance(real, DataLoader) else real),
        "collate_fn": _callable_name(collate),
        "image_fn": _callable_name(image_fn),
    }


def real_cache_key(
    real: Any,
    *,
    space: PixelSpace,
    image_fn: Callable[[Any], Tensor] | None = None,
    num_real: int | None = None,
    sample: RealSample | None = None,
    content: str | None = None,
    **extra: Any,
) -> str:
    """The cache key of the real data's products (without the network part, which ``extra`` adds).

    Args:
        real: The real data (not a one-shot iterator).
        space: Their pixel space.
        image_fn: Picks the images out of a batch.
        num_real: Only the first ``num_real`` items are used.
        sample: A :func:`sample_real_images` already read (reused when it is spread over the dataset).
        content: The digest of the images, when already computed for another key of the same data.
        **extra: Anything else that changes the product (network, layer, kind, rows); JSON-serialised.

    Returns:
        ``"real-"`` and 24 hexadecimal digits.
    """
    size = map_style_size(real)
    payload = {
        "schema": _CACHE_SCHEMA,
        "content": content or content_digest(real, image_fn, num_real, sample),
        "count": (size if num_real is None else min(size, num_real)) if size is not None else num_real,
        "data": describe_data(real, image_fn),
        "space": space.to_json(),
        **extra,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return "real-" + hashlib.sha256(text.encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------------------- real rows


def _stats_checksum(stats: GaussianStats) -> str:
    """SHA-256 of the moments as :func:`load_stats` gives them back (float64, covariance symmetrised)."""
    mean = stats.mean.detach().cpu().double().numpy()
    cov = stats.cov.detach().cpu().double().numpy()
    digest = hashlib.sha256(np.ascontiguousarray(mean).tobytes())
    digest.update(np.ascontiguousarray((cov + cov.T) / 2).tobytes())
    return digest.hexdigest()


def _array_checksum(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


class _Entry:
    """One cached product of the real pass: the moments or the feature rows of one network's layer."""

    def __init__(self, network: nn.Module, layer: str, kind: str, cap: int) -> None:
        self.network, self.layer, self.kind, self.cap = network, layer, kind, cap
        self.key = ""
        self.result: GaussianStats | Tensor | None = None
        self.indices: Tensor | None = None  # the global real indices of the feature rows
        self.num_images: int | None = None
        self.accumulator: Any = None  # FIDMoments or real_pass's row sample, filled during the pass

    @property
    def width(self) -> int | None:
        """The feature width the network announces for this layer, if it does."""
        width = getattr(self.network, "num_features", None) if self.layer in ("pool", "features") else None
        return int(width) if isinstance(width, int) and not isinstance(width, bool) else None

    def path(self, cache_dir: Path) -> Path:
        return cache_dir / (f"{self.key}.npz" if self.kind == "moments" else f"{self.key}.features.npz")

    def load(
        self, cache_dir: Path, count: int | None
    ) -> tuple[GaussianStats | Tensor, int | None, Tensor | None] | None:
        """The verified cached product, its image count and row indices, or None (missing, or a mismatch: warned).

        A plain value, broadcast from rank 0 to the others.
        """
        path = self.path(cache_dir)
        if not path.is_file():
            return None
        try:
            if self.kind == "moments":
                return self._load_moments(path, count)
            return self._load_features(path, count)
        except (ValueError, OSError, KeyError, TypeError) as err:
            warnings.warn(
                f"Ignoring the cached real data {str(path)!r}: {err} Recomputing it.", UserWarning, stacklevel=3
            )
            return None

    def _load_moments(self, path: Path, count: int | None) -> tuple[GaussianStats, int | None, None]:
        stats, found = load_stats(path, expect=network_provenance(self.network, self.layer))
        if found.get("cache_key") != self.key:
            raise ValueError(f"it was written for key {found.get('cache_key')!r}, not {self.key!r}.")
        if found.get("checksum") != _stats_checksum(stats):
            raise ValueError("its checksum does not match its moments (the file was changed).")
        if stats.n is None or stats.n != found.get("count") or (count is not None and stats.n != count):
            raise ValueError(f"it holds moments of {stats.n} images, but {count or found.get('count')} are expected.")
        if self.width is not None and stats.num_features != self.width:
            raise ValueError(f"it has width {stats.num_features}, but the network gives {self.width} features.")
        return stats, stats.n, None

    def _load_features(self, path: Path, count: int | None) -> tuple[Tensor, int | None, Tensor]:
        with np.load(path, allow_pickle=False) as data:
            features = np.asarray(data["features"])
            indices = np.asarray(data["indices"])
            record = json.loads(str(np.asarray(data["record"]).reshape(-1)[0]))
        if record.get("cache_key") != self.key:
            raise ValueError(f"it was written for key {record.get('cache_key')!r}, not {self.key!r}.")
        if features.dtype != np.float32 or features.ndim != 2:
            raise ValueError(f"it holds a {features.dtype} array of shape {features.shape}, not (rows, width) float32.")
        if list(features.shape) != record.get("shape") or _array_checksum(features) != record.get("sha256"):
            raise ValueError("its shape or checksum does not match its record (the array was replaced).")
        if indices.shape != (features.shape[0],) or _array_checksum(indices) != record.get("indices_sha256"):
            raise ValueError("its row indices do not match its record (the array was replaced).")
        if self.width is not None and features.shape[1] != self.width:
            raise ValueError(f"it has width {features.shape[1]}, but the network gives {self.width} features.")
        images = record.get("count")
        if count is not None and images != count:
            raise ValueError(f"it was made from {images} images, but {count} are expected.")
        wanted = min(self.cap, images) if isinstance(images, int) else None
        if wanted is None or features.shape[0] != wanted:
            raise ValueError(f"it holds {features.shape[0]} rows, but {wanted} are expected.")
        return torch.from_numpy(features), images, torch.from_numpy(indices.astype(np.int64))

    def save(self, cache_dir: Path, provenance: dict[str, Any]) -> None:
        path = self.path(cache_dir)
        try:
            if self.kind == "moments":
                assert isinstance(self.result, GaussianStats)
                record = {**provenance, **network_provenance(self.network, self.layer)}
                record.update(cache_key=self.key, count=self.num_images, checksum=_stats_checksum(self.result))
                save_stats(path, self.result, record)
                return
            assert isinstance(self.result, Tensor)
            features = self.result.detach().cpu().to(torch.float32).contiguous().numpy()
            assert self.indices is not None
            indices = self.indices.cpu().to(torch.int64).numpy()
            record = {
                **provenance,
                "cache_key": self.key,
                "count": self.num_images,
                "shape": list(features.shape),
                "dtype": str(features.dtype),
                "sha256": _array_checksum(features),
                "indices_sha256": _array_checksum(indices),
            }
            with atomic_write(path) as handle:
                np.savez(
                    handle, features=features, indices=indices, record=np.asarray(json.dumps(record, sort_keys=True))
                )
        except OSError as err:
            # Other ranks may be waiting in a barrier: never raise between the collectives.
            warnings.warn(f"Could not write the real-data cache {str(path)!r}: {err}", UserWarning, stacklevel=3)


# ------------------------------------------------------------------------------------------- the pass
