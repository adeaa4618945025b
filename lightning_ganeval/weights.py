"""Find, download and verify network weights files (the FID Inception v3, DINOv2).

A :class:`WeightsSpec` describes one published file: its name in the cache, its URL, its SHA-256 (or hash
prefix), the environment variable and the user-facing argument that point at a local copy. `resolve_weights`
looks for the file of a spec (the FID Inception by default) in this order and stops at the first hit:

1. the explicit ``path`` argument (for Inception: ``inception_weights=`` of the callbacks, ``weights=`` of the
   extractor);
2. the spec's environment variable (for Inception ``LIGHTNING_GANEVAL_INCEPTION_WEIGHTS``);
3. the torch hub checkpoint cache, ``torch.hub.get_dir()/checkpoints/`` (it honours ``$TORCH_HOME``), or
   ``cache_dir`` when given;
4. a download from ``url`` into that cache.

Explicit files (1, 2) are loaded as given, so that tests and smoke runs can use random weights; a file whose
digest is not the reference one triggers one warning per digest per process, because its scores are not
comparable with published ones. Cached and downloaded files (3, 4) must match the spec's digest (for Inception the
SHA-256 prefix in the published file name, torch hub convention) or the full digest pinned with ``sha256=``. A cache
file that does not match (say, truncated by an old tool) is replaced by a fresh download, with a warning; with
``url=None`` it is refused. A spec without a known digest (``sha256=None``) accepts any cached or downloaded file:
the loader must then check the file's structure, and :attr:`ResolvedWeights.is_reference` is ``False``.

Downloads go to a temporary file beside the target, are verified, and are moved into place with `os.replace`,
so a partial file is never visible at the final path. A file lock beside the target makes concurrent processes
(DDP ranks on one node) download once: the others wait and then load the verified file.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = [
    "INCEPTION_FILENAME",
    "INCEPTION_SPEC",
    "INCEPTION_URL",
    "REFERENCE_HASH_PREFIX",
    "WEIGHTS_ENV_VAR",
    "InceptionWeights",
    "ResolvedWeights",
    "WeightsError",
    "WeightsHashError",
    "WeightsNotFoundError",
    "WeightsSpec",
    "file_sha256",
    "resolve_weights",
]

INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILENAME}"
REFERENCE_HASH_PREFIX = "6726825d"
WEIGHTS_ENV_VAR = "LIGHTNING_GANEVAL_INCEPTION_WEIGHTS"
_INCEPTION_ARGUMENT = (
    "`inception_weights=` of FIDCallback / InceptionScoreCallback or `weights=` of InceptionExtractor / get_extractor"
)

_CHUNK = 1 << 20
# A socket timeout (per connect/read, not for the whole file): a firewalled cluster node fails within a minute
# instead of hanging in the OS connect timeout.
_TIMEOUT_S = 60.0
_WARNED_DIGESTS: set[str] = set()

Source = Literal["argument", "environment", "cache", "download"]


class WeightsError(RuntimeError):
    """Base class for errors while finding, downloading or verifying a weights file."""


class WeightsNotFoundError(WeightsError):
    """No usable weights file: an explicit path does not exist, or nothing is cached and the download failed."""


class WeightsHashError(WeightsError):
    """A file's SHA-256 digest is not the expected one."""


@dataclass(frozen=True)
class WeightsSpec:
    """The published weights file of one network, and how users point at a local copy.

    Attributes:
        name: Human-readable name for messages and the progress bar, e.g. ``"Inception"``.
        filename: File name in the cache directory (the torch hub cache shares it with other tools).
        url: Where to download the file from, or ``None`` when it cannot be downloaded.
        sha256: The published file's full hex SHA-256, or a prefix of at least 8 hex digits, or ``None`` when no
            trustworthy digest is known (see the module docstring).
        env_var: Environment variable that may hold the path of a local file.
        argument: How users pass a path, for messages, e.g. ``"`weights=` of DINOv2Extractor"``.
    """

    name: str
    filename: str
    url: str | None
    sha256: str | None
    env_var: str
    argument: str

    def __post_init__(self) -> None:
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{8,64}", self.sha256):
            raise ValueError(
                f"WeightsSpec.sha256 must be lower-case hex of 8 to 64 digits or None, got {self.sha256!r}."
            )


def _inception_spec() -> WeightsSpec:
    # Built at call time from the module constants, so that tests (and users) patching them are honoured.
    return WeightsSpec(
        name="Inception",
        filename=INCEPTION_FILENAME,
        url=INCEPTION_URL,
        sha256=REFERENCE_HASH_PREFIX,
        env_var=WEIGHTS_ENV_VAR,
        argument=_INCEPTION_ARGUMENT,
    )


INCEPTION_SPEC = _inception_spec()
"""The FID Inception v3 weights (pytorch-fid's release of the TensorFlow 2015-12-05 graph)."""


@dataclass(frozen=True)
class ResolvedWeights:
    """A resolved weights file.

    Attributes:
        path: Absolute path of the file.
        sha256: Full hex SHA-256 digest of the file.
        source: Where it was found: ``"argument"``, ``"environment"``, ``"cache"`` or ``"download"``.
        is_reference: Whether the digest matches the published weights (their hash prefix, or the pinned digest);
            always ``False`` for a spec without a known digest.
    """

    path: Path
    sha256: str
    source: Source
    is_reference: bool


InceptionWeights = ResolvedWeights
"""The historical name of :class:`ResolvedWeights` (it only described Inception files at first)."""

# `url`'s default: the spec's URL. A sentinel rather than None, because None means "never download".
_SPEC_URL = "<the spec's url>"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Return the full hex SHA-256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(
    path: str | os.PathLike[str] | None = None,
    *,
    spec: WeightsSpec | None = None,
    sha256: str | None = None,
    url: str | None = _SPEC_URL,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> ResolvedWeights:
    """Find a weights file, downloading and verifying it if needed (see the module docstring for the order).

    Args:
        path: A local weights file, loaded as given (a non-reference digest warns once). An empty string is refused
            (it would otherwise name the current directory).
        spec: Which network's file; ``None`` is the FID Inception (:data:`INCEPTION_SPEC`).
        sha256: Pin the expected SHA-256 (the full 64 hex digits, or a prefix of at least 8) instead of the spec's
            (for Inception the published prefix ``REFERENCE_HASH_PREFIX``). An explicit file that does not match a
            pin is refused.
        url: Where to download from when nothing is found locally; default the spec's URL; ``None`` never
            downloads.
        cache_dir: Directory of the cached file; defaults to ``torch.hub.get_dir()/checkpoints``.
        progress: Show a progress bar on stderr while downloading.

    Returns:
        The resolved file, its digest, where it came from and whether it is the reference file.

    Raises:
        ValueError: If ``sha256`` is not a hex string of 8 to 64 digits, or ``path`` is an empty string.
        WeightsNotFoundError: If an explicit file is missing, or nothing is cached and the download fails.
        WeightsHashError: If a downloaded file, a pinned explicit file, or (with ``url=None``) the cached file
            has the wrong digest.
    """
    spec = _inception_spec() if spec is None else spec
    if url == _SPEC_URL:
        url = spec.url
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{8,64}", sha256):
        raise ValueError(f"`sha256` must be a hex SHA-256 digest or a prefix of at least 8 digits, got {sha256!r}.")
    expected = sha256.lower() if sha256 is not None else spec.sha256
    if path is not None:
        if isinstance(path, (str, bytes)) and not path:
            raise ValueError(
                f"The weights path ({spec.argument}) is an empty string; pass the path of a {spec.name} weights "
                "file, or None to use the environment variable, the cache or a download."
            )
        return _explicit_file(Path(path), "argument", spec, expected, pinned=sha256 is not None)
    if env_path := os.environ.get(spec.env_var):
        return _explicit_file(Path(env_path), "environment", spec, expected, pinned=sha256 is not None)

    if cache_dir is None:
        import torch.hub  # here, so that this module imports in milliseconds (DDP launchers, CLI tools)

        cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    directory = Path(cache_dir)
    # The URL's file name keeps a mirror of other weights from overwriting the reference file in the cache.
    name = Path(urllib.parse.urlsplit(url).path).name if url else ""
    target = (directory.expanduser() / (name or spec.filename)).absolute()
    if target.is_file():
        digest = file_sha256(target)
        if _matches(digest, expected):
            return ResolvedWeights(target, digest, "cache", expected is not None)
        mismatch = _mismatch_message(f"Cached {spec.name} weights file {target}", expected, digest)
        if not url:
            raise WeightsHashError(f"{mismatch} Delete it, or pass `url=` to download a fresh copy.")
        warnings.warn(f"{mismatch} Re-downloading it from {url} and replacing it.", stacklevel=2)
    if not url:
        raise WeightsNotFoundError(_offline_message(spec, target, url, expected, "no `url` to download from was given"))
    return _download_locked(spec, url, target, expected, progress)


def _matches(digest: str, expected: str | None) -> bool:
    return expected is None or digest.startswith(expected)


def _explicit_file(
    path: Path, source: Source, spec: WeightsSpec, expected: str | None, *, pinned: bool
) -> ResolvedWeights:
    where = spec.argument if source == "argument" else f"the environment variable {spec.env_var}"
    path = path.expanduser().absolute()
    if not path.is_file():
        raise WeightsNotFoundError(f"{spec.name} weights file {path} (from {where}) does not exist or is not a file.")
    digest = file_sha256(path)
    if expected is None:
        # No published digest to compare with: nothing to warn about, and nothing can claim to be the reference.
        return ResolvedWeights(path, digest, source, False)
    is_reference = digest.startswith(expected)
    if not is_reference and pinned:
        what = f"{spec.name} weights file {path} (from {where})"
        raise WeightsHashError(_mismatch_message(what, expected, digest))
    if not is_reference and digest not in _WARNED_DIGESTS:
        _WARNED_DIGESTS.add(digest)
        warnings.warn(
            f"{spec.name} weights {path} (from {where}) have sha256 {digest}, not the reference "
            f"{spec.filename} (sha256 prefix {expected}); scores are not comparable with published ones.",
            stacklevel=3,
        )
    return ResolvedWeights(path, digest, source, is_reference)


def _download_locked(
    spec: WeightsSpec, url: str, target: Path, expected: str | None, progress: bool
) -> ResolvedWeights:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = f"cannot create the cache: {err}"
        raise WeightsNotFoundError(_offline_message(spec, target, url, expected, reason)) from err
    with _file_lock(target.with_name(target.name + ".lock")):
        # Another process may have finished the download while this one waited for the lock.
        if target.is_file() and _matches(digest := file_sha256(target), expected):
            return ResolvedWeights(target, digest, "cache", expected is not None)
        temp = target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")
        try:
            # Not mkstemp: its 0600 mode would lock other users out of a shared cache.
            with open(temp, "xb") as out:
                digest = _fetch(spec, url, out, target, expected, progress)
                out.flush()
                os.fsync(out.fileno())
            if not _matches(digest, expected):
                what = f"The file downloaded from {url} (discarded, nothing written to {target})"
                raise WeightsHashError(_mismatch_message(what, expected, digest))
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
    return ResolvedWeights(target, digest, "download", expected is not None)


def _fetch(spec: WeightsSpec, url: str, out: BinaryIO, target: Path, expected: str | None, progress: bool) -> str:
    """Stream ``url`` into ``out`` and return the SHA-256 of what was received."""
    digest, received, total = hashlib.sha256(), 0, None
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "lightning-ganeval"})
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with _progress_bar(total, progress, spec.name) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    # URLError, HTTPError and socket timeouts are OSErrors; ValueError is an unknown URL scheme.
    except (OSError, http.client.HTTPException, ValueError) as err:
        reason = f"{type(err).__name__}: {err}"
        raise WeightsNotFoundError(_offline_message(spec, target, url, expected, reason)) from err
    # http.client ends a read silently when the server drops the connection early.
    if total is not None and received != total:
        reason = f"the connection closed after {received} of {total} bytes"
        raise WeightsNotFoundError(_offline_message(spec, target, url, expected, reason))
    return digest.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no lock; os.replace still keeps partial files out of sight.
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _progress_bar(total: int | None, enabled: bool, name: str) -> tqdm:
    # Imported here to keep tqdm (a dependency of lightning) out of the import-time dependencies of this module.
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="B", unit_scale=True, unit_divisor=1024, desc=name)


def _mismatch_message(what: str, expected: str | None, actual: str) -> str:
    kind = "sha256" if expected is not None and len(expected) == 64 else "sha256 prefix"
    return f"{what} has sha256 {actual}, expected {kind} {expected}."


def _offline_message(spec: WeightsSpec, target: Path, url: str | None, expected: str | None, reason: str) -> str:
    digest = expected if expected is not None else "unknown (the file's structure is checked when it is loaded)"
    return (
        f"Cannot find the {spec.name} weights, and downloading them failed: {reason}.\n"
        f"  URL: {url}\n"
        f"  expected sha256 (prefix): {digest}\n"
        "Provide the file in one of these ways (download it on a machine with internet access):\n"
        f"  - place it at {target}\n"
        f"  - set the environment variable {spec.env_var}=/path/to/{spec.filename}\n"
        f"  - pass the path as {spec.argument}."
    )
