"""Statistics files (``.npz``: mean, covariance, count, provenance) and the atomic file write.

File format: an uncompressed ``.npz`` with

* ``mu`` (d,) and ``sigma`` (d, d), float64: the layout of TTUR, pytorch-fid (``--save-stats``) and clean-fid,
  so our files load in those tools and theirs load here;
* ``n``: the sample count (int64);
* ``provenance``: a JSON object stored as a 0-d unicode string array (readable with ``allow_pickle=False``):
  extractor identity, weights digest, resize mode, layer, sample count, library version, and whatever the
  caller adds (cache key, value range, dataset description).

The raw sums Σx and Σxxᵀ are *not* stored: they follow from (n, mu, sigma) (see
:attr:`~lightning_ganeval.frechet.GaussianStats.outer_sum`) and would double the file to 64 MiB at d = 2048.

Files without provenance (other tools) are accepted with ``n=None``; nothing about how they were made can be
checked, so a warning says so when the caller asked for checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from lightning_ganeval.frechet import PSD_RTOL, GaussianStats

__all__ = ["atomic_write", "extractor_provenance", "load_stats", "save_stats"]

FORMAT_VERSION = 1
POOL3_FEATURES = 2048
SYMMETRY_RTOL = 1e-5
"""max|Σ − Σᵀ| allowed, relative to max|Σ|; loose enough for float32 covariances written by other tools."""


# --------------------------------------------------------------------------------------------- files
def _library_version() -> str:
    from lightning_ganeval._version import __version__

    return __version__


def extractor_provenance(extractor: Any) -> dict[str, Any]:
    """Provenance entries describing an extractor: identity, weights digest, resize mode, fast mode, layer.

    :func:`lightning_ganeval.feature_network.network_provenance` of its default layer, under its former name.
    """
    from lightning_ganeval.feature_network import network_provenance

    return network_provenance(extractor)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write a file all at once or not at all: every cache write goes through here.

    Yields a binary handle on a temporary file in the target's folder (created if missing); on success the file is
    flushed to disk, given ``mode`` and moved over ``path`` with ``os.replace``, so a reader sees the old file or
    the new one, never half of one. On any error the temporary file is removed and the error propagates.

    Args:
        path: The target file.
        mode: Permission bits of the written file. ``mkstemp`` creates owner-only files (0600); a cache shared by
            a group must stay readable, hence 0644.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


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
    with atomic_write(target) as handle:
        np.savez(handle, **arrays)
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
            below −:data:`~lightning_ganeval.frechet.PSD_RTOL` = 1e-5 × the largest |eigenvalue|), or provenance that
            disagrees with ``expect``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Statistics file {str(path)!r} does not exist.")

    def bad(problem: str) -> ValueError:
        return ValueError(f"Statistics file {str(path)!r}: {problem}")

    # A `.pt` of the same numbers is a common mistake; "missing keys" would not say what is wrong with it.
    not_torch = bad(
        "is a PyTorch file (torch.save), not a statistics file: expected an .npz archive holding 'mu' (d,) and"
        " 'sigma' (d, d), as `save_stats`, `python -m lightning_ganeval stats` or pytorch-fid's --save-stats"
        " write it (from tensors: `numpy.savez(path, mu=mu.numpy(), sigma=sigma.numpy())`)."
    )

    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise bad("is a single .npy array, expected an .npz archive with 'mu' and 'sigma'.")
        with data:
            keys = set(data.files)
            missing = sorted({"mu", "sigma"} - keys)
            if missing and any(k == "data.pkl" or k.endswith("/data.pkl") for k in keys):
                raise not_torch
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
        if "pickled" in str(err) and path.suffix.lower() in (".pt", ".pth", ".pkl", ".ckpt"):
            raise not_torch from err  # torch.save's legacy (non-zip) format is a pickle
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
