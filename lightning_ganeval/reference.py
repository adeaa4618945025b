"""Reference (real-data) statistics: ``.npz`` files, computation from a data loader, and a disk cache.

File format: an uncompressed ``.npz`` with

* ``mu`` (d,) and ``sigma`` (d, d), float64: the layout of TTUR, pytorch-fid (``--save-stats``) and clean-fid,
  so our files load in those tools and theirs load here;
* ``n``: the sample count (int64);
* ``provenance``: a JSON object stored as a 0-d unicode string array (readable with ``allow_pickle=False``):
  extractor identity, weights digest, resize mode, layer, sample count, library version, and whatever the
  caller adds (cache key, value range, dataset description).

The raw sums Σx and Σxxᵀ are *not* stored: they follow from (n, mu, sigma) (see
:attr:`~lightning_ganeval.math.GaussianStats.outer_sum`) and would double the file to 64 MiB at d = 2048.

Files without provenance (other tools) are accepted with ``n=None``; nothing about how they were made can be
checked, so a warning says so when the caller asked for checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lightning_ganeval.images import to_uint8_rgb
from lightning_ganeval.math import PSD_RTOL, GaussianStats
from lightning_ganeval.moments import FIDMoments

__all__ = [
    "cached_real_stats",
    "compute_real_stats",
    "dataset_fingerprint",
    "extractor_provenance",
    "load_stats",
    "real_stats_cache_key",
    "save_stats",
]

FORMAT_VERSION = 1
POOL3_FEATURES = 2048
SYMMETRY_RTOL = 1e-5
"""max|Σ − Σᵀ| allowed, relative to max|Σ|; loose enough for float32 covariances written by other tools."""

_DEFAULT_BATCH_SIZE = 50


# --------------------------------------------------------------------------------------------- files
def _library_version() -> str:
    from lightning_ganeval import __version__

    return __version__


def extractor_provenance(extractor: Any) -> dict[str, Any]:
    """Provenance entries describing an extractor: identity, weights digest, resize mode, fast mode, layer.

    Works with :class:`~lightning_ganeval.extractor.InceptionExtractor` and with stand-ins that have at least
    an ``identity`` attribute; missing attributes are left out.
    """
    weights = getattr(extractor, "weights", None)
    entries = {
        "extractor": getattr(extractor, "identity", None),
        "weights_sha256": getattr(weights, "sha256", None),
        "resize": getattr(extractor, "resize", None),
        "fast": getattr(extractor, "fast", None),
        "layer": getattr(extractor, "layer", "pool3"),
    }
    return {key: value for key, value in entries.items() if value is not None}


def _npz_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    # np.savez appends ".npz" to a bare name; do the same so that pytorch-fid (which checks the suffix) reads it.
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def save_stats(path: str | os.PathLike[str], stats: GaussianStats, provenance: Mapping[str, Any]) -> Path:
    """Write statistics to an ``.npz`` file atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        path: Target file; ``.npz`` is appended when the name has another suffix, like ``np.savez`` does.
        stats: The statistics; ``n`` may be ``None`` (stored as -1).
        provenance: JSON-serialisable description of how the statistics were made (see
            :func:`extractor_provenance`). ``library_version``, ``format_version``, ``num_samples`` and
            ``num_features`` are filled in when absent.

    Returns:
        The path written.
    """
    if not isinstance(stats, GaussianStats):
        raise TypeError(f"`stats` must be GaussianStats, got {type(stats).__name__}.")
    target = _npz_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "format_version": FORMAT_VERSION,
        "library_version": _library_version(),
        "num_samples": stats.n,
        "num_features": stats.num_features,
        **dict(provenance),
    }
    text = json.dumps(record, sort_keys=True, default=str)
    arrays = {
        "mu": stats.mean.detach().cpu().numpy(),
        "sigma": stats.cov.detach().cpu().numpy(),
        "n": np.asarray(-1 if stats.n is None else stats.n, dtype=np.int64),
        "provenance": np.asarray(text),
    }
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp makes the file owner-only; a shared cache must stay readable
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def _same_value(key: str, found: Any, wanted: Any) -> bool:
    if key == "weights_sha256" and isinstance(found, str) and isinstance(wanted, str):
        # A published digest prefix ("6726825d", torch.hub convention) matches the full digest.
        a, b = found.lower(), wanted.lower()
        return len(min(a, b, key=len)) >= 8 and (a.startswith(b) or b.startswith(a))
    # Normalise through JSON so that a tuple value range equals the list read back from the file.
    return json.loads(json.dumps(found, default=str)) == json.loads(json.dumps(wanted, default=str))


def load_stats(
    path: str | os.PathLike[str], *, expect: Mapping[str, Any] | None = None
) -> tuple[GaussianStats, dict[str, Any]]:
    """Read and validate an ``.npz`` statistics file (ours, pytorch-fid's, TTUR's or clean-fid's).

    Args:
        path: The ``.npz`` file.
        expect: Provenance the statistics must have, e.g. ``extractor_provenance(extractor)``. Each key present
            in the file's provenance must match (``weights_sha256`` also matches by prefix of at least 8 hex
            digits); ``layer="pool3"`` also requires d = 2048. Files without provenance (other tools' files, or
            ours saved with an empty ``provenance``: none of the expected keys present) cannot be checked and are
            accepted with a warning.

    Returns:
        ``(stats, provenance)``: float64 statistics on the CPU (``n=None`` when the file does not record it) and
        the provenance dict (empty for foreign files).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a readable ``.npz``, lacks ``mu``/``sigma``, has wrong shapes, a non-floating
            dtype, non-finite or asymmetric values, a ``sigma`` that is not positive semi-definite (an eigenvalue
            below −:data:`~lightning_ganeval.math.PSD_RTOL` = 1e-5 × the largest |eigenvalue|), or provenance that
            disagrees with ``expect``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Statistics file {str(path)!r} does not exist.")

    def bad(problem: str) -> ValueError:
        return ValueError(f"Statistics file {str(path)!r}: {problem}")

    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise bad("is a single .npy array, expected an .npz archive with 'mu' and 'sigma'.")
        with data:
            keys = set(data.files)
            missing = sorted({"mu", "sigma"} - keys)
            if missing:
                raise bad(f"missing key(s) {missing} (found {sorted(keys)}); expected 'mu' (d,) and 'sigma' (d, d).")
            mu, sigma = np.asarray(data["mu"]), np.asarray(data["sigma"])
            n_raw = np.asarray(data["n"]) if "n" in keys else None
            provenance_raw = np.asarray(data["provenance"]) if "provenance" in keys else None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise bad(f"cannot be read as .npz ({type(err).__name__}: {err}).") from err
    except ValueError as err:
        if str(err).startswith("Statistics file"):
            raise
        raise bad(f"cannot be read as .npz ({err}).") from err

    for name, array in (("mu", mu), ("sigma", sigma)):
        if not np.issubdtype(array.dtype, np.floating):
            raise bad(f"'{name}' has dtype {array.dtype}; a floating-point dtype is required.")
    if mu.ndim != 1:
        raise bad(f"'mu' must have shape (d,), got {mu.shape}.")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise bad(f"'sigma' must have shape ({d}, {d}) to match 'mu', got {sigma.shape}.")
    mu, sigma = mu.astype(np.float64), sigma.astype(np.float64)
    if not np.isfinite(mu).all():
        raise bad("'mu' contains NaN or Inf.")
    if not np.isfinite(sigma).all():
        raise bad("'sigma' contains NaN or Inf.")
    scale = float(np.abs(sigma).max()) if sigma.size else 0.0
    asymmetry = float(np.abs(sigma - sigma.T).max()) if sigma.size else 0.0
    if asymmetry > SYMMETRY_RTOL * scale:
        raise bad(
            f"'sigma' is not symmetric: max|sigma - sigma.T| = {asymmetry:.3g}, "
            f"above {SYMMETRY_RTOL:g} x max|sigma| = {SYMMETRY_RTOL * scale:.3g}."
        )

    n: int | None = None
    if n_raw is not None:
        if n_raw.size != 1 or not np.issubdtype(n_raw.dtype, np.integer):
            raise bad(f"'n' must be one integer, got dtype {n_raw.dtype} and shape {n_raw.shape}.")
        n = int(n_raw.reshape(-1)[0])
        n = None if n < 0 else n

    provenance: dict[str, Any] = {}
    if provenance_raw is not None:
        try:
            provenance = json.loads(str(provenance_raw.reshape(-1)[0]))
        except (json.JSONDecodeError, IndexError) as err:
            raise bad(f"'provenance' is not a JSON object ({err}).") from err
        if not isinstance(provenance, dict):
            raise bad(f"'provenance' must be a JSON object, got {type(provenance).__name__}.")

    if expect:
        if expect.get("layer") == "pool3" and d != POOL3_FEATURES:
            raise bad(f"has d={d} features, but pool3 statistics (FID) have d={POOL3_FEATURES}.")
        if not provenance:
            warnings.warn(
                f"Statistics file {str(path)!r} has no provenance (written by another tool?); cannot check that it "
                f"was made with the same Inception weights and resize mode ({dict(expect)}). Using it as is.",
                UserWarning,
                stacklevel=2,
            )
        elif not any(key in provenance for key in expect):
            # Saved by us without provenance: only the automatic entries (format, version, sizes) are there.
            warnings.warn(
                f"Statistics file {str(path)!r} has no provenance entry for any of {sorted(expect)} (saved without "
                f"provenance?); cannot check that it was made with the same Inception weights and resize mode "
                f"({dict(expect)}). Using it as is.",
                UserWarning,
                stacklevel=2,
            )
        for key, wanted in expect.items():
            if key in provenance and not _same_value(key, provenance[key], wanted):
                raise bad(
                    f"was made with {key}={provenance[key]!r}, but {key}={wanted!r} is expected. FID against "
                    "statistics from a different extractor or preprocessing is not comparable; recompute them."
                )

    sigma = (sigma + sigma.T) / 2
    if sigma.size:
        # A covariance is PSD; rounding (e.g. a float32 copy of a singular one) only moves eigenvalues by ~1e-6.
        eigenvalues = torch.linalg.eigvalsh(torch.from_numpy(sigma))
        smallest, largest = float(eigenvalues.min()), float(eigenvalues.abs().max())
        if smallest < -PSD_RTOL * largest:
            raise bad(
                f"'sigma' is not positive semi-definite: smallest eigenvalue {smallest:.6g} is below -{PSD_RTOL:g} x "
                f"{largest:.6g} (the largest |eigenvalue|). It is not a covariance matrix; recompute the statistics."
            )
    stats = GaussianStats(n=n, mean=torch.from_numpy(mu), cov=torch.from_numpy(sigma))
    return stats, provenance


# --------------------------------------------------------------------------------------------- computing
def _default_image(batch: Any) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    if isinstance(batch, Mapping) and isinstance(batch.get("image"), Tensor):
        return batch["image"]
    raise TypeError(
        f"Cannot find the images in a batch of type {type(batch).__name__}: the default takes a tensor, the first "
        "element of a tuple/list, or the 'image' key of a dict. Pass image_fn=lambda batch: ... to pick them."
    )


def _is_map_style(loader: Any) -> bool:
    dataset = getattr(loader, "dataset", None)
    return (
        isinstance(loader, DataLoader)
        and not isinstance(dataset, IterableDataset)
        and hasattr(dataset, "__len__")
        and hasattr(dataset, "__getitem__")
    )


def _shard_loader(loader: DataLoader, indices: list[int]) -> DataLoader:
    """A loader over exactly ``indices`` of ``loader.dataset``, keeping its batching and worker settings."""
    batch_size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None) or _DEFAULT_BATCH_SIZE
    kwargs: dict[str, Any] = {
        "batch_size": batch_size,
        "sampler": indices,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(loader.dataset, **kwargs)


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
    elif world_size > 1:
        warnings.warn(
            f"compute_real_stats(rank={rank}, world_size={world_size}) without an initialised process group: the "
            "statistics cover this rank's shard only, nothing is merged across ranks.",
            UserWarning,
            stacklevel=3,
        )


def compute_real_stats(
    loader: DataLoader | Dataset | Iterable[Any],
    extractor: Callable[[Tensor], Any],
    *,
    value_range: Sequence[float] = (-1.0, 1.0),
    image_fn: Callable[[Any], Tensor] | None = None,
    num_real: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: Callable[[int, int | None], None] | None = None,
) -> GaussianStats:
    """Pool3 statistics of real images, sharded over ranks without duplicates and merged over ranks.

    A ``DataLoader`` over a map-style dataset (or the dataset itself) is re-read through a new loader over
    exactly this rank's indices ``range(rank, total, world_size)``, ``total = min(len(dataset), num_real)``, with
    the original batch size, ``collate_fn`` and worker settings; its own sampler (shuffling, a
    ``DistributedSampler`` that pads with duplicates) is ignored. Any other iterable of batches is read in full
    on every rank, which keeps the batches whose position ``i`` satisfies ``i % world_size == rank``; it must
    yield the same sequence on every rank. Either way exactly ``total`` samples are counted overall.

    Every rank must call this function: with an initialised process group the moments are merged through
    torchmetrics' synchronisation, a collective.

    Args:
        loader: A ``DataLoader``, a map-style ``Dataset``, or any iterable of batches.
        extractor: Callable on uint8 ``N x 3 x H x W`` images returning an object with a ``pool`` tensor
            ``(N, d)`` (an :class:`~lightning_ganeval.extractor.InceptionExtractor`). Its ``device`` attribute,
            when present, holds the moments; its ``num_features`` attribute, when present, sets d (default 2048).
        value_range: ``(lo, hi)`` of float images, passed to :func:`~lightning_ganeval.images.to_uint8_rgb`.
        image_fn: Picks the image tensor out of a batch. Default: the batch itself if it is a tensor, the first
            element of a tuple/list, or a dict's ``"image"``.
        num_real: Use at most this many samples (the first ``num_real`` in dataset order); default: all.
        rank: This process's rank.
        world_size: Number of processes.
        progress: Called as ``progress(done, total)`` after each batch with this rank's sample counts; ``total``
            is ``None`` when unknown (iterables).

    Returns:
        The merged statistics (identical on every rank).

    Raises:
        ValueError: Non-finite real images, bad ``num_real``/``rank``/``world_size``, or no samples at all.
    """
    _check_ranks(rank, world_size)
    if num_real is not None and (isinstance(num_real, bool) or not isinstance(num_real, int) or num_real < 2):
        raise ValueError(f"`num_real` must be an integer >= 2 or None, got {num_real!r}.")
    pick = image_fn or _default_image
    device = torch.device(getattr(extractor, "device", "cpu"))
    moments = FIDMoments(num_features=int(getattr(extractor, "num_features", POOL3_FEATURES))).to(device)

    if isinstance(loader, Dataset) and not isinstance(loader, IterableDataset) and hasattr(loader, "__len__"):
        loader = DataLoader(loader, batch_size=_DEFAULT_BATCH_SIZE)

    def add(batch_images: Tensor) -> None:
        converted = to_uint8_rgb(batch_images, value_range)
        bad = converted.num_nonfinite
        if bad:
            raise ValueError(f"{bad} real image(s) contain NaN or Inf; real statistics need finite images.")
        moments.update(extractor(converted.images).pool)

    done = 0
    expected: int | None = None
    with torch.no_grad():
        if _is_map_style(loader):
            size = len(loader.dataset)
            total = size if num_real is None else min(size, num_real)
            if num_real is not None and num_real > size:
                warnings.warn(
                    f"num_real={num_real} exceeds the dataset size {size}; using all {size} samples.",
                    UserWarning,
                    stacklevel=2,
                )
            indices = list(range(rank, total, world_size))
            expected = total
            for batch in _shard_loader(loader, indices):
                images = pick(batch)
                add(images)
                done += images.shape[0]
                if progress is not None:
                    progress(done, len(indices))
            if done != len(indices):
                raise ValueError(
                    f"Rank {rank} expected {len(indices)} images from its shard but image_fn returned {done}; "
                    "image_fn must return one image per dataset item."
                )
        else:
            seen = 0
            for position, batch in enumerate(loader):
                if num_real is not None and seen >= num_real:
                    break
                images = pick(batch)
                take = images.shape[0] if num_real is None else min(images.shape[0], num_real - seen)
                if position % world_size == rank and take > 0:
                    add(images[:take])
                    done += take
                    if progress is not None:
                        progress(done, None)
                seen += take
            expected = seen
            if num_real is not None and seen < num_real:
                warnings.warn(
                    f"The loader ran out after {seen} samples, fewer than num_real={num_real}.",
                    UserWarning,
                    stacklevel=2,
                )
    if expected < 2:
        raise ValueError(f"Real statistics need at least 2 images, the loader gave {expected}.")
    stats = moments.compute()
    merged = torch.distributed.is_available() and torch.distributed.is_initialized() and world_size > 1
    if merged and stats.n != expected:
        raise RuntimeError(f"Merged real statistics count {stats.n} samples, expected {expected}.")
    return stats


# --------------------------------------------------------------------------------------------- cache
def _hash_leaves(value: Any, digest: Any) -> None:
    """Feed the bytes of every tensor/array (and the repr of other leaves) of a sample into ``digest``."""
    if isinstance(value, Tensor):
        array = value.detach().cpu().contiguous()
        digest.update(f"T{array.dtype}{tuple(array.shape)}".encode())
        digest.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    elif isinstance(value, np.ndarray):
        digest.update(f"A{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            digest.update(f"K{key!s}".encode())
            _hash_leaves(value[key], digest)
    elif isinstance(value, (tuple, list)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _hash_leaves(item, digest)
    elif hasattr(value, "tobytes") and hasattr(value, "size"):  # PIL images
        digest.update(f"I{value.size}".encode())
        digest.update(value.tobytes())
    else:
        digest.update(f"V{value!r}".encode())


def dataset_fingerprint(dataset: Any, probes: int = 3) -> str:
    """A cheap identity of a map-style dataset: class, length and a hash of a few samples' bytes.

    The samples probed are the first, the last and evenly spaced ones in between, so a dataset whose content
    changes in those places gets a new fingerprint; a change elsewhere does not (pass your own identity string
    to :func:`real_stats_cache_key` when that matters).
    """
    if isinstance(dataset, DataLoader):
        dataset = dataset.dataset
    if isinstance(dataset, IterableDataset) or not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(
            f"Cannot fingerprint a {type(dataset).__name__} (not a map-style dataset); pass a string that "
            "identifies the data as `dataset` instead."
        )
    size = len(dataset)
    positions = sorted({round(i * (size - 1) / max(probes - 1, 1)) for i in range(probes)}) if size else []
    digest = hashlib.sha256()
    for position in positions:
        digest.update(f"#{position}".encode())
        _hash_leaves(dataset[position], digest)
    cls = type(dataset)
    return f"{cls.__module__}.{cls.__qualname__}/len={size}/{digest.hexdigest()[:16]}"


def real_stats_cache_key(dataset: Any, count: int, value_range: Sequence[float], extractor: Any, **extra: Any) -> str:
    """A short file name for cached real statistics, e.g. ``"real-3f2a...c1"``.

    Args:
        dataset: A string identifying the data (used verbatim), or a ``DataLoader``/map-style dataset, which is
            fingerprinted with :func:`dataset_fingerprint`.
        count: Number of real samples used.
        value_range: ``(lo, hi)`` of the images.
        extractor: The extractor (its ``identity`` is used) or an identity string.
        **extra: Anything else that changes the statistics (e.g. a description of ``image_fn``); JSON-serialised.
    """
    identity = dataset if isinstance(dataset, str) else dataset_fingerprint(dataset)
    extractor_id = extractor if isinstance(extractor, str) else getattr(extractor, "identity", None)
    if not isinstance(extractor_id, str):
        raise TypeError(f"`extractor` must be a string or have an `identity` string, got {type(extractor).__name__}.")
    payload = {
        "schema": FORMAT_VERSION,
        "dataset": identity,
        "count": int(count),
        "value_range": [float(v) for v in value_range],
        "extractor": extractor_id,
        "extra": extra,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return "real-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_real_stats(
    path_or_dir: str | os.PathLike[str],
    key: str,
    compute: Callable[[], GaussianStats],
    *,
    rank: int = 0,
    barrier: Callable[[], Any] | None = None,
    broadcast: Callable[[Any], Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    expect: Mapping[str, Any] | None = None,
) -> GaussianStats:
    """Load cached real statistics, or compute them on every rank and let rank 0 write the cache.

    Args:
        path_or_dir: A folder (the file is ``<folder>/<key>.npz``) or an explicit ``.npz`` file path.
        key: The cache key (:func:`real_stats_cache_key`); stored in the file's provenance and compared on load.
        compute: Computes the statistics; called on **every** rank when the cache misses, because it involves
            collectives (e.g. ``lambda: compute_real_stats(loader, extractor, rank=r, world_size=w)``).
        rank: This process's rank; only rank 0 writes.
        barrier: Called on every rank after rank 0 has written (e.g. ``trainer.strategy.barrier``), so that no
            rank reads a half-finished cache later.
        broadcast: ``broadcast(obj) -> obj`` from rank 0 (e.g. ``trainer.strategy.broadcast``). When given,
            rank 0's hit/miss decision is shared, so that all ranks agree even if their file systems differ.
            Without it every rank decides alone, which is safe when they see the same files.
        provenance: Extra provenance written with the file (see :func:`extractor_provenance`).
        expect: Provenance the cached file must match (passed to :func:`load_stats`).

    Returns:
        The statistics, identical on every rank.
    """
    target = Path(path_or_dir)
    target = target if target.suffix == ".npz" else target / f"{key}.npz"

    cached: GaussianStats | None = None
    if target.is_file():
        try:
            stats, found = load_stats(target, expect=expect)
        except ValueError as err:
            warnings.warn(f"Ignoring unusable cached statistics: {err}", UserWarning, stacklevel=2)
        else:
            if found.get("cache_key") == key:
                cached = stats
            else:
                warnings.warn(
                    f"Cached statistics {str(target)!r} were made for key {found.get('cache_key')!r}, not {key!r}; "
                    "recomputing and overwriting them.",
                    UserWarning,
                    stacklevel=2,
                )
    hit = cached is not None
    if broadcast is not None:
        hit = bool(broadcast(hit))
        if hit and cached is None:
            # Rank 0 found the file but this rank cannot read it: a broken setup, not something to paper over.
            raise RuntimeError(f"Rank {rank} cannot read the cached statistics {str(target)!r} that rank 0 uses.")
    if hit and cached is not None:
        return cached

    stats = compute()
    if rank == 0:
        record = {**dict(provenance or {}), "cache_key": key}
        try:
            save_stats(target, stats, record)
        except OSError as err:
            # Other ranks may be waiting in the barrier below: never raise between the collectives.
            warnings.warn(f"Could not write the statistics cache {str(target)!r}: {err}", UserWarning, stacklevel=2)
    if barrier is not None:
        barrier()
    return stats
