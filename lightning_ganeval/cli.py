"""The command line: FID, KID, IS, precision/recall, CMMD, Vendi and memorization of image folders.

::

    lightning-ganeval stats real/ -o real.npz       # FID statistics of a folder (also read by pytorch-fid)
    lightning-ganeval fid generated/ real.npz       # FID of a folder against a folder or a statistics file
    lightning-ganeval kid generated/ real/          # KID (per-sample features: folders only)
    lightning-ganeval is generated/                 # Inception Score
    lightning-ganeval pr generated/ real/           # precision, recall, density, coverage
    lightning-ganeval cmmd generated/ real/         # CMMD on CLIP ViT-L/14-336 embeddings (needs transformers)
    lightning-ganeval vendi generated/              # Vendi score (diversity) on Inception pool3 features
    lightning-ganeval memorization generated/ train/ --test test/   # AuthPct, C_T, memorised fraction + grid
    torchrun --nproc-per-node=8 -m lightning_ganeval fid generated/ real/

``python -m lightning_ganeval`` is the same program. It runs the callbacks' pipeline on image files: the same
extractor (:func:`~lightning_ganeval.inception.get_extractor`, or
:class:`~lightning_ganeval.dinov2.DINOv2Extractor` with ``--network dinov2``), the same conversion
(:func:`~lightning_ganeval.images.to_uint8_rgb` with ``side="real"``; decoded files are uint8 already), the same
streaming accumulators (:class:`~lightning_ganeval.accumulators.FIDMoments`,
:class:`~lightning_ganeval.accumulators.ISMarginals`, :class:`~lightning_ganeval.accumulators.FeatureBank`) and the
same math (:func:`~lightning_ganeval.frechet.frechet_distance`,
:func:`~lightning_ganeval.metrics.kid.kid_from_features`,
:func:`~lightning_ganeval.metrics.precision_recall.precision_recall_density_coverage`).

Folders: every ``.png``, ``.jpg`` and ``.jpeg`` file below the folder (any case, recursively; hidden files and
folders, whose names start with a dot, are skipped), in sorted order of their path relative to the folder.
Symbolic links to folders are followed; a folder reached a second time (a link back to an ancestor, or two links
to one folder) is searched once, so that a loop ends and no image is read twice through folder links. Every
result has a ``files`` line: the images read from each folder and the entries skipped, by reason. Each
file is decoded with Pillow and converted to RGB as torch-fidelity and pytorch-fid do (grayscale tiled, alpha
dropped), except 16-bit grayscale PNGs, which are scaled to 8 bits (value / 257, rounded) where those two clip
them at 255. Images of different sizes may share a folder: a batch is split into groups of one size, each group
is one forward pass (the network resizes every image to its input size on its own, so the features do not depend
on the grouping); a folder of mixed sizes costs more forward passes, never a wrong stack.

Memory stays flat in the number of images for FID and IS (float64 moments and split marginals); KID and
precision/recall keep the feature rows (N x d float32 on the CPU), as they need them.

Under ``torchrun`` each process reads the files ``rank, rank + W, ...`` (its own share, no duplicates), on
``cuda:LOCAL_RANK`` with NCCL or on the CPU with gloo, and the accumulators merge exactly as under DDP training:
the result equals the single-process one up to float64 rounding of the merge. Only rank 0 prints and writes.

Exit status: 0 on success, 2 on bad input (a missing or empty folder, an unreadable image, a bad option, a
statistics file where per-sample features are needed, a weights or statistics file that cannot be used), reported
as one line on stderr that names the file or the flag. Library messages are translated to the flags of the
command line (``--inception-weights``, not ``inception_weights=``), and library warnings are one line each.

This module imports only the standard library at the top: ``--help`` and the errors found in the arguments and
the folders answer before torch (and numpy, Pillow, torchmetrics, timm) is imported; each command imports what it
needs when it needs it. A new command is one entry of :data:`COMMANDS`: a function adding its arguments and a
function computing its result.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

# Only the standard library here (tests/test_cli_subprocess.py checks it): torch and the package's numeric modules
# are imported inside the functions that need them, so that `--help` and argument errors answer at once.
if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from lightning_ganeval.frechet import GaussianStats
    from lightning_ganeval.images import PixelSpace

__all__ = [
    "COMMANDS",
    "IMAGE_SUFFIXES",
    "Command",
    "ImageFolderDataset",
    "ImageListing",
    "InputError",
    "build_parser",
    "list_images",
    "main",
    "read_image",
    "scan_images",
]

PROG = "lightning-ganeval"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
EXIT_OK = 0
EXIT_BAD_INPUT = 2
_MAX_DEFAULT_WORKERS = 8
_INCEPTION_RESIZE = ("tf1", "antialias")
_DINOV2_RESIZE = ("bicubic", "pil")
_CLIP_RESIZE = ("pil", "bicubic")  # pil: the reference's Pillow bicubic resize (default)
# Per network: its --resize values (the first is the default), its weights flag and the variable that stands in.
_NETWORKS = {
    "inception": (_INCEPTION_RESIZE, "--inception-weights", "inception_weights", "LIGHTNING_GANEVAL_INCEPTION_WEIGHTS"),
    "dinov2": (_DINOV2_RESIZE, "--dinov2-weights", "dinov2_weights", "LIGHTNING_GANEVAL_DINOV2_WEIGHTS"),
    "clip": (_CLIP_RESIZE, "--clip-weights", "clip_weights", "LIGHTNING_GANEVAL_CLIP_WEIGHTS"),
}
_KID_SUBSET_SIZE = 1000  # KIDCallback's default: one rule for the library and the command line


class InputError(Exception):
    """Bad input or options: reported as one line on stderr, exit status 2."""


class _ShardError(InputError):
    """Bad input found while reading this process's share of the files (only this rank knows it)."""


class _OtherRankFailed(Exception):
    """Another process of the group failed (it reports why); this one stops too."""


# --------------------------------------------------------------------------------------------- reading files

# Why an entry of a folder was not read, as the `files` line and the JSON "skipped_by_reason" say it.
SKIP_REASONS = {
    "not_image": "not .png/.jpg/.jpeg",
    "hidden": "hidden (name starts with a dot; a hidden folder is not searched)",
    "repeated_folder": "folder link to a folder searched already (a loop or a second link)",
    "broken_link": "broken link",
    "not_a_file": "not a regular file",
    "unreadable_folder": "folder that cannot be listed",
}


@dataclass
class ImageListing:
    """The image files of a folder and what was skipped.

    Attributes:
        files: The image files, in sorted order of their path relative to the folder.
        skipped: Entries not read, by reason (a key of :data:`SKIP_REASONS`).
    """

    files: list[Path]
    skipped: Counter[str] = field(default_factory=Counter)


def scan_images(folder: str | os.PathLike[str]) -> ImageListing:
    """The image files of a folder, recursively, following links to folders, with what was skipped and why.

    Folders are searched depth first in sorted name order, every real sub-folder before the links to folders, so
    that an image is found under its own path when a link also leads to it. A folder whose real path was searched
    already (a link to an ancestor, or a second link to one folder) is skipped: a loop ends, and no image is read
    twice through folder links. Links to files are read as files.

    Args:
        folder: The folder to search.

    Returns:
        The files (``.png``, ``.jpg``, ``.jpeg`` in any case, hidden files and folders skipped) in sorted order of
        their path relative to ``folder``, and the skipped entries counted by reason.

    Raises:
        OSError: ``folder`` itself cannot be listed.
    """
    root = Path(folder)
    skipped: Counter[str] = Counter()
    found: list[tuple[str, Path]] = []
    searched: set[str] = set()
    links: list[tuple[str, str]] = []  # (path, real path) of folder links, searched after the real tree

    def search(directory: str, real: str, top: bool = False) -> None:
        searched.add(real)
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            if top:
                raise
            skipped["unreadable_folder"] += 1
            return
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                skipped["hidden"] += 1
                continue
            try:
                is_dir = entry.is_dir()  # follows links
                is_file = not is_dir and entry.is_file()
                is_link = entry.is_symlink()
            except OSError:
                skipped["not_a_file"] += 1
                continue
            if is_dir:
                if is_link:
                    links.append((entry.path, os.path.realpath(entry.path)))
                else:
                    subfolders.append((entry.path, os.path.join(real, entry.name)))
            elif is_file:
                if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    path = Path(entry.path)
                    found.append((path.relative_to(root).as_posix(), path))
                else:
                    skipped["not_image"] += 1
            elif is_link and not os.path.exists(entry.path):
                skipped["broken_link"] += 1
            else:
                skipped["not_a_file"] += 1
        for path, sub_real in subfolders:
            # Searched already: only when this folder was itself reached through a link, whose target holds a
            # folder that another link led to first.
            if sub_real in searched:
                skipped["repeated_folder"] += 1
            else:
                search(path, sub_real)

    search(str(root), os.path.realpath(root), top=True)
    # Links last, in the order they were met; a link found inside a linked folder joins the queue.
    position = 0
    while position < len(links):
        path, real = links[position]
        position += 1
        if real in searched:
            skipped["repeated_folder"] += 1
        else:
            search(path, real)
    found.sort(key=lambda item: item[0])
    return ImageListing([path for _, path in found], skipped)


def list_images(folder: str | os.PathLike[str], limit: int | None = None) -> list[Path]:
    """The image files of a folder, recursively, in sorted order of their path relative to ``folder``.

    Args:
        folder: The folder to search (see :func:`scan_images`).
        limit: Keep only the first ``limit`` files of that order (``None``: all).

    Returns:
        Paths of the ``.png``, ``.jpg`` and ``.jpeg`` files (any case), hidden files and folders skipped.
    """
    paths = scan_images(folder).files
    return paths if limit is None else paths[:limit]


def read_image(path: str | os.PathLike[str]) -> Tensor:
    """Decode an image file to a uint8 RGB tensor ``3 x H x W`` (Pillow; see the module docstring).

    Raises:
        OSError, ValueError, PIL.UnidentifiedImageError: The file cannot be decoded.
    """
    import numpy as np
    import torch
    from PIL import Image  # torchvision's dependency

    with Image.open(path) as image:
        if image.mode in ("I", "I;16", "I;16B", "I;16L"):
            # 16-bit grayscale: Pillow's convert("RGB") would clip every value above 255.
            gray = np.clip(np.rint(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
            array = np.repeat(gray[:, :, None], 3, axis=2)
        else:
            array = np.asarray(image.convert("RGB"))
    # A copy: Pillow's buffer is read-only, and torch warns about (and must not write to) non-writable arrays.
    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).contiguous()


class ImageFolderDataset:
    """Decoded images of a list of files; an unreadable file gives a message string instead of a tensor.

    Returning the message (rather than raising in a loader worker, which wraps the error in a traceback) lets
    the command line report it as one line. A map-style dataset for ``DataLoader`` (``__len__`` and
    ``__getitem__``; not a ``torch.utils.data.Dataset`` subclass, so that defining it imports no torch).

    Args:
        paths: The image files, in sample order.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor | str:
        path = self.paths[index]
        try:
            return read_image(path)
        except Exception as err:  # any decoder failure is the file's fault: report it, do not crash a worker
            return f"cannot read image {str(path)!r} ({type(err).__name__}: {err})"


def _as_list(items: list[Tensor | str]) -> list[Tensor | str]:
    """Collate into a plain list: images of one batch may differ in size (module level: workers pickle it)."""
    return items


def _same_size_groups(items: list[Tensor], indices: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    """``(images, global indices)`` for each image size in the batch, in order of first appearance."""
    import torch

    groups: dict[tuple[int, ...], list[int]] = {}
    for position, image in enumerate(items):
        groups.setdefault(tuple(image.shape), []).append(position)
    for positions in groups.values():
        yield torch.stack([items[p] for p in positions]), indices[positions]


# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Source:
    """One positional input: an image folder (``files``) or a statistics file (``files`` is None)."""

    text: str
    argument: str
    files: list[Path] | None
    listing: ImageListing | None = None

    @property
    def is_stats(self) -> bool:
        return self.files is None

    def counts(self) -> dict[str, Any]:
        """What was read of the folder and what was skipped, for the ``files`` line and the JSON output."""
        assert self.files is not None
        assert self.listing is not None
        return {
            "read": len(self.files),
            "found": len(self.listing.files),
            "skipped": sum(self.listing.skipped.values()),
            "skipped_by_reason": dict(sorted(self.listing.skipped.items())),
        }


def _source(text: str, argument: str, command: str, *, allow_stats: bool, limit: int | None) -> _Source:
    path = Path(text)
    if not path.exists():
        raise InputError(f"{argument}: {text!r} does not exist.")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise InputError(f"{argument}: {text!r} is a file, not an image folder or a .npz statistics file.")
        if not allow_stats:
            raise InputError(
                f"{argument}: {text!r} is a statistics file, but `{command}` compares per-sample features; "
                "give the image folder instead (only `fid` and `stats` read .npz files)."
            )
        return _Source(text, argument, None)
    if not path.is_dir():
        raise InputError(f"{argument}: {text!r} is neither a folder nor a .npz statistics file.")
    try:
        listing = scan_images(path)
    except OSError as err:
        raise InputError(f"{argument}: cannot list folder {text!r} ({err}).") from err
    if not listing.files:
        skipped = _describe_skipped(listing.skipped)
        raise InputError(
            f"{argument}: no images in folder {text!r} (searched recursively for {', '.join(IMAGE_SUFFIXES)} files"
            f"{'; skipped ' + skipped if skipped else ''})."
        )
    files = listing.files if limit is None else listing.files[:limit]
    return _Source(text, argument, files, listing)


def _need(source: _Source, minimum: int, why: str) -> None:
    assert source.files is not None
    if len(source.files) < minimum:
        raise InputError(
            f"{source.argument}: {why} needs at least {minimum} images, folder {source.text!r} has {len(source.files)}."
        )


def _describe_skipped(skipped: Counter[str]) -> str:
    return ", ".join(f"{count} {SKIP_REASONS[reason]}" for reason, count in sorted(skipped.items()))


def _files(*sources: _Source) -> dict[str, Any]:
    """The ``files`` entry of a result: read and skipped counts of each folder among ``sources``."""
    folders = {s.argument: s.counts() for s in sources if not s.is_stats}
    return {"files": folders} if folders else {}


# --------------------------------------------------------------------------------------------- the run


@dataclass
class _Run:
    """Everything one process needs to turn a folder into features."""

    network: nn.Module
    device: torch.device
    rank: int
    world_size: int
    batch_size: int
    workers: int
    progress: bool

    @property
    def collective_device(self) -> torch.device:
        import torch
        import torch.distributed as dist

        # NCCL moves CUDA tensors only; gloo moves CPU tensors.
        return self.device if self.world_size > 1 and dist.get_backend() == "nccl" else torch.device("cpu")


@dataclass
class _Extracted:
    count: int
    stats: GaussianStats | None = None
    features: Tensor | None = None
    inception_score: tuple[float, float] | None = None


def _layer(network: nn.Module) -> str:
    from lightning_ganeval.inception import InceptionExtractor

    return "pool" if isinstance(network, InceptionExtractor) else "features"


def _width(network: nn.Module, layer: str) -> int:
    """The layer's width, known on every rank (also one whose share of the files is empty)."""
    from lightning_ganeval.inception import NUM_FEATURES, NUM_LOGITS, InceptionExtractor

    if isinstance(network, InceptionExtractor):
        return NUM_FEATURES if layer == "pool" else NUM_LOGITS
    return int(network.num_features)  # type: ignore[arg-type]


def _agree(error: BaseException | None, run: _Run) -> None:
    """Raise on every rank when any rank failed, so that no rank waits forever in the next collective."""
    failed = error is not None
    if run.world_size > 1:
        import torch
        import torch.distributed as dist

        flag = torch.tensor([float(failed)], device=run.collective_device)
        dist.all_reduce(flag)
        failed = bool(flag.item() > 0)
    if error is not None:
        raise error
    if failed:
        raise _OtherRankFailed


def _uint8_space() -> PixelSpace:
    from lightning_ganeval.images import PixelSpace

    return PixelSpace.from_value_range(0.0, 255.0)  # ignored for uint8 images; named for the record


def _extract(
    source: _Source, run: _Run, *, moments: bool = False, features: bool = False, is_splits: int | None = None
) -> _Extracted:
    """One pass over this rank's share of a folder, feeding the requested accumulators; merged over ranks."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from lightning_ganeval.accumulators import FeatureBank, FIDMoments, ISMarginals
    from lightning_ganeval.images import to_uint8_rgb
    from lightning_ganeval.networks import run_network

    assert source.files is not None
    total = len(source.files)
    layer = _layer(run.network)
    shard = list(range(run.rank, total, run.world_size))
    width = _width(run.network, layer)
    space = _uint8_space()
    moment_acc = FIDMoments(num_features=width).to(run.device) if moments else None
    bank = FeatureBank(num_features=width) if features else None
    marginals = (
        ISMarginals(total, splits=is_splits, num_classes=_width(run.network, "logits")).to(run.device)
        if is_splits is not None
        else None
    )
    loader = DataLoader(
        ImageFolderDataset(source.files),  # type: ignore[arg-type]
        batch_size=run.batch_size,
        sampler=shard,
        collate_fn=_as_list,
        num_workers=run.workers,
        pin_memory=run.device.type == "cuda",
    )
    bar = tqdm(
        total=len(shard),
        desc=f"{source.argument} {source.text}",
        unit="img",
        file=sys.stderr,
        disable=not run.progress or run.rank != 0,
        dynamic_ncols=True,
    )
    error: _ShardError | None = None
    done = 0
    try:
        with torch.no_grad():
            for items in loader:
                indices = torch.tensor(shard[done : done + len(items)], dtype=torch.int64)
                done += len(items)
                for item in items:
                    if isinstance(item, str):
                        raise _ShardError(f"{source.argument}: {item}")
                for images, rows in _same_size_groups(items, indices):  # type: ignore[arg-type]
                    converted = to_uint8_rgb(images, space, side="real")
                    outputs = run_network(run.network, converted.images.to(run.device, non_blocking=True))
                    if moment_acc is not None:
                        moment_acc.update(outputs[layer])
                    if bank is not None:
                        bank.update(outputs[layer], rows)
                    if marginals is not None:
                        marginals.update(outputs["logits"], rows)
                bar.update(len(items))
    except _ShardError as err:
        error = err
    finally:
        bar.close()
    _agree(error, run)
    result = _Extracted(count=total)
    with warnings.catch_warnings():
        # A rank with an empty share never called update(); its empty state merges correctly.
        warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
        # compute() is a collective: every rank runs these in the same order.
        if moment_acc is not None:
            result.stats = moment_acc.compute()
        if bank is not None:
            result.features = bank.compute()
        if marginals is not None:
            result.inception_score = marginals.compute()
    return result


# --------------------------------------------------------------------------------------------- messages

# The library names its own arguments (`inception_weights=` of FIDCallback, `subset_size`); on the command line the
# same setting is a flag. Applied to every library message and warning shown here.
_TRANSLATIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"`inception_weights=`(?: of [\w /]+?)?(?: or `weights=` of [\w /]+)?(?=[).,;:]|$)", "--inception-weights"),
        (r"`weights=` of DINOv2Extractor", "--dinov2-weights"),
        (r"`weights=` of (?:InceptionExtractor|get_extractor)[\w /]*", "--inception-weights"),
        (r"`?\bsubset_size\b`?=?", "--subset-size"),
        (r"`?\bsubsets\b`?=", "--subsets"),
        (r"`?\bsplits\b`?=", "--splits"),
        (r"\bresize=(['\"])(\w+)\1", r"--resize \2"),
        (r"`?\bresize\b`?=", "--resize"),
    )
)
_MAX_MESSAGE = 400  # characters: a load_state_dict error lists hundreds of keys


def _translate(message: str, limit: int | None = None) -> str:
    """A library message in the command line's terms, on one line (cut to ``limit`` characters, if given)."""
    for pattern, replacement in _TRANSLATIONS:
        message = pattern.sub(replacement, message)
    message = " ".join(message.split())
    if limit is not None and len(message) > limit:
        message = message[: limit - 1].rstrip() + "…"
    return message


def _one_line_warnings(prefix: str, enabled: bool) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints each library warning as one translated line (or nothing)."""

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if enabled:
            print(f"{prefix}: warning: {_translate(str(message))}", file=sys.stderr)

    return show


# --------------------------------------------------------------------------------------------- setup


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


# torch's device types (`torch.device("gpu")` fails); checked without torch so that a typo answers at once.
_DEVICE_PATTERN = re.compile(r"(cpu|cuda|mps|xpu|hpu|npu|mtia|meta|xla|ipu|hip|ve|vulkan|privateuseone)(:\d+)?")


def _device(text: str | None, local_rank: int | None) -> torch.device:
    import torch

    if text is None:
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as err:
        raise InputError(f"--device: {text!r} is not a device (e.g. cpu, cuda, cuda:1): {err}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {text}: CUDA is not available on this machine; use --device cpu.")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
    return device


def _start_distributed(device: torch.device) -> tuple[int, int, bool]:
    """Join the torchrun process group (from its environment variables); ``(rank, world_size, created)``."""
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if _env_int("WORLD_SIZE", 1) <= 1:
        return 0, 1, False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), True


def _resize(args: argparse.Namespace) -> str:
    allowed = _NETWORKS[args.network][0]
    if args.resize is None:
        return allowed[0]
    if args.resize not in allowed:
        raise InputError(
            f"--resize {args.resize} does not apply to --network {args.network}; it takes "
            f"{' or '.join(allowed)} (default {allowed[0]})."
        )
    return args.resize


def _check_options(args: argparse.Namespace) -> None:
    """The checks of the evaluation options that need no file contents and no torch (every command runs them)."""
    if args.device is not None and not _DEVICE_PATTERN.fullmatch(args.device):
        raise InputError(f"--device: {args.device!r} is not a device (e.g. cpu, cuda, cuda:1).")
    _resize(args)
    _, flag, attribute, _ = _NETWORKS[args.network]
    path = getattr(args, attribute)
    for network, (_, other, other_attribute, _) in _NETWORKS.items():
        if network != args.network and getattr(args, other_attribute) is not None:
            # Ignoring it would hide a mix-up (which network was meant?).
            raise InputError(f"{other} does not apply to --network {args.network}; give {flag} instead.")
    if path is not None and not (args.network == "clip" and os.path.isdir(path)):  # CLIP also takes a folder
        # The file's contents are checked when the network is built (that needs torch); these are checked now.
        if not os.path.exists(path):
            raise InputError(f"{flag}: {path!r} does not exist.")
        if not os.path.isfile(path):
            raise InputError(f"{flag}: {path!r} is not a file.")
        if os.path.getsize(path) == 0:
            raise InputError(f"{flag}: {path!r} is empty (0 bytes), not a weights file.")


def _weights_flag(args: argparse.Namespace) -> str:
    """Where the network's weights came from, for a message: the flag, else its environment variable or cache."""
    if args.network in ("inception", "clip"):
        _, flag, attribute, variable = _NETWORKS[args.network]
        given = getattr(args, attribute)
    else:
        # As dinov2_weights_spec names them: one variable per model.
        model = "" if args.dinov2_model == "vitl14" else f"_{args.dinov2_model.upper()}"
        flag, given, variable = "--dinov2-weights", args.dinov2_weights, f"LIGHTNING_GANEVAL_DINOV2{model}_WEIGHTS"
    if given is not None:
        return f"{flag} {given}"
    if os.environ.get(variable):
        return f"{flag} (from ${variable})"
    return f"{flag} (not given: the torch hub cache or a download)"


def _weights_problem(err: BaseException) -> str:
    """What is wrong with a weights file that failed to load, short (the flag and the path are said already)."""
    message = str(err)
    if "torch.load(weights_only=True) failed" in message:
        # torch's own text is a paragraph about the weights_only default; the kind of failure is what helps.
        cause = type(err.__cause__).__name__ if err.__cause__ is not None else "error"
        return (
            f"not a PyTorch state dict of tensors (torch.load(weights_only=True) fails with {cause}): a corrupt or "
            "truncated file, or a pickled object other than a state dict."
        )
    # The extractors start with "weights file <path> ...": the path is in the message already.
    return _translate(re.sub(r"^weights file .*? (is not|does not|has) ", r"\1 ", message, count=1), _MAX_MESSAGE)


def _build_network(args: argparse.Namespace, device: torch.device) -> nn.Module:
    import pickle

    from lightning_ganeval.weights import WeightsError

    resize = _resize(args)
    if args.network == "dinov2":
        try:
            import timm  # noqa: F401  (DINOv2Extractor builds its network with timm)
        except ImportError as err:
            raise InputError(f"--network dinov2 needs timm (pip install 'lightning-ganeval[dinov2]'): {err}") from None
    if args.network == "clip":
        try:
            import transformers  # noqa: F401  (CLIPExtractor builds its network with transformers)
        except ImportError as err:
            raise InputError(
                f"--network clip needs transformers (pip install 'lightning-ganeval[clip]'): {err}"
            ) from None
    # Warnings of a file that then fails to load (e.g. "not the reference digest") would only add noise to the
    # error: they are shown once the network is built.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if args.network == "inception":
                from lightning_ganeval.inception import get_extractor

                network: nn.Module = get_extractor(device, weights=args.inception_weights, resize=resize)
            elif args.network == "clip":
                from lightning_ganeval.clip import CLIPExtractor

                network = CLIPExtractor(args.clip_weights, resize=resize, device=device, progress=not args.no_progress)
            else:
                from lightning_ganeval.dinov2 import DINOv2Extractor

                network = DINOv2Extractor(args.dinov2_weights, model=args.dinov2_model, resize=resize, device=device)
        except WeightsError as err:
            raise InputError(_translate(str(err))) from None
        except (ValueError, TypeError, RuntimeError, KeyError, OSError, EOFError, pickle.UnpicklingError) as err:
            # A weights file that exists but is not the network's: corrupt, truncated, another architecture.
            raise InputError(f"{_weights_flag(args)}: cannot load the weights: {_weights_problem(err)}") from None
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return network


def _load_stats(source: _Source, expect: dict[str, Any] | None) -> tuple[GaussianStats, dict[str, Any]]:
    from lightning_ganeval.stats_files import load_stats

    try:
        return load_stats(source.text, expect=expect)
    except (OSError, ValueError) as err:
        raise InputError(f"{source.argument}: {_translate(str(err))}") from None


def _check_stats_file(source: _Source) -> None:
    """Refuse a statistics file that cannot be used before the network is loaded (seconds), cheaply.

    Only the archive's directory is read; on any doubt the full :func:`~lightning_ganeval.stats_files.load_stats`
    runs, so that the message is the library's. The file is read in full (and its provenance checked) later.
    """
    import numpy as np

    try:
        with np.load(source.text, allow_pickle=False) as data:
            usable = {"mu", "sigma"} <= set(data.files)
    except Exception:  # any failure to open: load_stats says what is wrong
        usable = False
    if not usable:
        _load_stats(source, None)


def _provenance(run: _Run, layer: str | None = None) -> dict[str, Any]:
    from lightning_ganeval.real_pass import network_provenance

    return network_provenance(run.network, _layer(run.network) if layer is None else layer)


# --------------------------------------------------------------------------------------------- commands

Runner = Callable[[argparse.Namespace, Callable[[], _Run]], dict[str, Any]]


def _fid(args: argparse.Namespace, make_run: Callable[[], _Run]) -> dict[str, Any]:
    a = _source(args.a, "A", "fid", allow_stats=True, limit=args.num_samples)
    b = _source(args.b, "B", "fid", allow_stats=True, limit=args.num_samples)
    for source in (a, b):
        if not source.is_stats:
            _need(source, 2, "FID (a covariance)")
    result: dict[str, Any] = {}
    if a.is_stats and b.is_stats:
        # No network: the two files must agree with each other.
        stats_a, provenance = _load_stats(a, None)
        keys = ("extractor", "weights_sha256", "resize", "fast", "layer")
        stats_b, _ = _load_stats(b, {k: provenance[k] for k in keys if k in provenance})
        result["network"] = provenance.get("extractor")
    else:
        for source in (a, b):
            if source.is_stats:
                _check_stats_file(source)
        run = make_run()
        expect = _provenance(run)
        pair = []
        for source in (a, b):
            if source.is_stats:
                pair.append(_load_stats(source, expect)[0])
            else:
                stats = _extract(source, run, moments=True).stats
                assert stats is not None
                pair.append(stats)
        stats_a, stats_b = pair
        result["network"] = expect["extractor"]
    if stats_a.num_features != stats_b.num_features:
        raise InputError(
            f"A has {stats_a.num_features} features per sample and B has {stats_b.num_features}: they come from "
            "different networks or layers."
        )
    from lightning_ganeval.frechet import frechet_distance

    try:
        value = frechet_distance(stats_a.mean, stats_a.cov, stats_b.mean, stats_b.cov)
    except ValueError as err:
        raise InputError(f"cannot compute the Fréchet distance: {_translate(str(err))}") from None
    return {"fid": value, "num_samples_a": stats_a.n, "num_samples_b": stats_b.n, **result, **_files(a, b)}


def _kid(args: argparse.Namespace, make_run: Callable[[], _Run]) -> dict[str, Any]:
    a = _source(args.a, "A", "kid", allow_stats=False, limit=args.num_samples)
    b = _source(args.b, "B", "kid", allow_stats=False, limit=args.num_samples)
    assert a.files is not None
    assert b.files is not None
    # KIDCallback's rule: each subset draws subset_size distinct images per side, and a larger subset_size than
    # there are images is refused, never capped (a capped size makes every subset hold every image: kid_std 0).
    subset_size = _KID_SUBSET_SIZE if args.subset_size is None else args.subset_size
    given = f"--subset-size {subset_size}" + (" (the default, as KIDCallback's)" if args.subset_size is None else "")
    if subset_size < 2:
        raise InputError(f"{given}: a subset needs at least 2 images per side.")
    for source in (a, b):
        if len(source.files) < subset_size:  # type: ignore[arg-type]
            raise InputError(
                f"{given} is more than the {len(source.files)} images of {source.argument} "  # type: ignore[arg-type]
                f"({source.text!r}): each subset draws {subset_size} distinct images per side; pass "
                f"--subset-size {min(len(a.files), len(b.files))} or less, or use more images."
            )
    run = make_run()
    fake = _extract(a, run, features=True).features
    real = _extract(b, run, features=True).features
    assert fake is not None
    assert real is not None
    from lightning_ganeval.metrics.kid import kid_from_features

    try:
        mean, std = kid_from_features(
            real.to(run.device), fake.to(run.device), subsets=args.subsets, subset_size=subset_size, seed=args.seed
        )
    except ValueError as err:
        raise InputError(_translate(str(err))) from None
    result = {
        "kid": mean,
        "kid_std": std,
        "kid_subsets": args.subsets,
        "kid_subset_size": subset_size,
        "num_samples_a": len(fake),
        "num_samples_b": len(real),
        "network": _provenance(run)["extractor"],
    }
    if len(fake) == len(real) == subset_size:
        result["note"] = (
            f"every subset holds all {subset_size} images of both folders: the {args.subsets} subsets are the same "
            "and kid_std is 0 by construction; a smaller --subset-size gives a spread"
        )
    return {**result, **_files(a, b)}


def _pr(args: argparse.Namespace, make_run: Callable[[], _Run]) -> dict[str, Any]:
    a = _source(args.a, "A", "pr", allow_stats=False, limit=args.num_samples)
    b = _source(args.b, "B", "pr", allow_stats=False, limit=args.num_samples)
    for source in (a, b):
        _need(source, args.k + 1, f"--k {args.k} (a k-th neighbour other than the image itself)")
    run = make_run()
    fake = _extract(a, run, features=True).features
    real = _extract(b, run, features=True).features
    assert fake is not None
    assert real is not None
    from lightning_ganeval.metrics.precision_recall import precision_recall_density_coverage

    values = precision_recall_density_coverage(real, fake, k=args.k, device=run.device)
    return {
        **values,
        "k": args.k,
        "num_samples_a": len(fake),
        "num_samples_b": len(real),
        "network": _provenance(run)["extractor"],
        **_files(a, b),
    }


def _is(args: argparse.Namespace, make_run: Callable[[], _Run]) -> dict[str, Any]:
    if args.network != "inception":
        raise InputError("is: the Inception Score reads Inception's class logits; use --network inception.")
    a = _source(args.a, "A", "is", allow_stats=False, limit=args.num_samples)
    _need(a, args.splits, f"--splits {args.splits} (one image per split at least)")
    run = make_run()
    extracted = _extract(a, run, is_splits=args.splits)
    assert extracted.inception_score is not None
    mean, std = extracted.inception_score
    return {
        "is": mean,
        "is_std": std,
        "is_splits": args.splits,
        "num_samples": extracted.count,
        "network": _provenance(run, "logits")["extractor"],
        **_files(a),
    }


def _stats(args: argparse.Namespace, make_run: Callable[[], _Run]) -> dict[str, Any]:
    src = _source(args.src, "SRC", "stats", allow_stats=True, limit=args.num_samples)
    rank = _env_int("RANK", 0)
    if src.is_stats:
        stats, provenance = _load_stats(src, None)
        provenance = {**provenance, "source": str(Path(src.text).resolve())}
    else:
        _need(src, 2, "a covariance")
        run = make_run()
        rank = run.rank
        extracted = _extract(src, run, moments=True)
        assert extracted.stats is not None
        stats = extracted.stats
        provenance = {
            **_provenance(run),
            "source": str(Path(src.text).resolve()),
            "pixel_space": _uint8_space().to_json(),
            "count": extracted.count,
        }
    result: dict[str, Any] = {
        "num_samples": stats.n,
        "num_features": stats.num_features,
        "network": provenance.get("extractor"),
    }
    if args.output is not None:
        if rank == 0:
            from lightning_ganeval.stats_files import save_stats

            try:
                written = save_stats(args.output, stats, provenance)
            except OSError as err:
                raise InputError(f"-o: cannot write {args.output!r} ({err}).") from None
        else:
            written = Path(args.output)
        result["output"] = str(written)
    return {**result, **_files(src)}


def _cmmd(args: argparse.Namespace, make_run: Callable[[], _Run]) -> dict[str, Any]:
    """CMMD of folder A against folder B (CLIP embeddings by default; rows normalised, RBF σ = 10, × 1000)."""
    from lightning_ganeval.metrics.cmmd import cmmd_from_features

    minimum = 2 if args.estimator == "unbiased" else 1
    a = _source(args.a, "A", "cmmd", allow_stats=False, limit=args.num_samples)
    b = _source(args.b, "B", "cmmd", allow_stats=False, limit=args.num_samples)
    for source in (a, b):
        _need(source, minimum, f"the {args.estimator} estimator")
    run = make_run()
    fake = _extract(a, run, features=True).features
    real = _extract(b, run, features=True).features
    assert fake is not None
    assert real is not None
    return {
        "cmmd": cmmd_from_features(real, fake, estimator=args.estimator, device=run.device),
        "cmmd_estimator": args.estimator,
        "num_samples_a": len(fake),
        "num_samples_b": len(real),
        "network": _provenance(run)["extractor"],
        **_files(a, b),
    }


def _vendi(args: argparse.Namespace, make_run: Callable[[], _Run]) -> dict[str, Any]:
    """Vendi score of folder A (Inception pool3 by default; cosine kernel, computed through the d x d dual)."""
    from lightning_ganeval.metrics.vendi import vendi_score

    a = _source(args.a, "A", "vendi", allow_stats=False, limit=args.num_samples)
    run = make_run()
    features = _extract(a, run, features=True).features
    assert features is not None
    return {
        "vendi": vendi_score(features.to(run.device)),
        "num_samples": len(features),
        "network": _provenance(run)["extractor"],
        **_files(a),
    }


def _memorization(args: argparse.Namespace, make_run: Callable[[], _Run]) -> dict[str, Any]:
    """``memorization GENERATED TRAIN [--test TEST]``: AuthPct, C_T, the memorised fraction and the evidence grid."""
    if not 0 <= args.quantile <= 1:
        raise InputError(f"--quantile must lie in [0, 1], got {args.quantile}.")
    if not 0 <= args.test_fraction < 1:
        raise InputError(f"--test-fraction must lie in [0, 1), got {args.test_fraction}.")
    gen = _source(args.a, "GENERATED", "memorization", allow_stats=False, limit=args.num_samples)
    train = _source(args.b, "TRAIN", "memorization", allow_stats=False, limit=args.num_samples)
    test = (
        _source(args.test, "--test", "memorization", allow_stats=False, limit=args.num_samples) if args.test else None
    )
    _need(train, 3 if test is None else 2, "a nearest other training image (and a test split)")
    import torch

    from lightning_ganeval.metrics.memorization import memorization_scores, seeded_split

    assert train.files is not None
    train_pos = torch.arange(len(train.files))
    test_pos = None
    if test is None and args.test_fraction > 0:
        try:
            train_pos, test_pos = seeded_split(len(train.files), args.test_fraction, args.split_seed, what="TRAIN")
        except ValueError as err:
            raise InputError(str(err)) from None
    run = make_run()
    fake = _extract(gen, run, features=True).features
    real = _extract(train, run, features=True).features
    held_out = _extract(test, run, features=True).features if test is not None else None
    assert fake is not None
    assert real is not None
    if test_pos is not None:
        held_out = real[test_pos]
    values, found = memorization_scores(
        real[train_pos],
        fake,
        held_out,
        quantile=args.quantile,
        device=run.device,
        nearest=args.nearest,
        neighbours=args.neighbours,
    )
    result: dict[str, Any] = {
        **values,
        "quantile": args.quantile,
        "test": args.test
        if test is not None
        else (f"split {args.test_fraction} seed {args.split_seed}" if test_pos is not None else None),
        "num_samples_generated": len(fake),
        "num_train": len(train_pos),
        "num_test": 0 if held_out is None else len(held_out),
        "network": _provenance(run)["extractor"],
        **_files(*(s for s in (gen, train, test) if s is not None)),
    }
    if found is not None and args.grid and run.rank == 0:
        assert gen.files is not None
        result["grid"] = _write_nearest_grid(args.grid, gen.files, train.files, train_pos, found)
        if args.json:  # which files sit closest to the training set, for scripts
            result["nearest_generated"] = [str(gen.files[int(i)]) for i in found.generated]
            result["nearest_distance"] = found.distance.tolist()
    return result


def _write_nearest_grid(path: str, generated: list[Path], train: list[Path], train_pos: Tensor, found: Any) -> str:
    """One row per generated image (closest to the training set first), then its nearest training images."""
    import torch
    from PIL import Image
    from torchvision.utils import make_grid

    tiles = []
    for row in range(len(found.generated)):
        shown = read_image(generated[int(found.generated[row])])
        tiles.append(shown)
        for column in found.training[row].tolist():
            image = read_image(train[int(train_pos[column])])
            if image.shape != shown.shape:
                image = (
                    torch.nn.functional.interpolate(
                        image[None].float(), size=shown.shape[-2:], mode="bilinear", antialias=True
                    )[0]
                    .round()
                    .clamp(0, 255)
                    .to(torch.uint8)
                )
            tiles.append(image)
    grid = make_grid(torch.stack(tiles), nrow=1 + found.training.shape[1], padding=2)
    try:
        Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy()).save(path, format="PNG")
    except (OSError, ValueError) as err:
        raise InputError(f"--grid: cannot write {path!r} ({err}).") from None
    return str(path)


def _stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="image folder or .npz statistics file")
    parser.add_argument("-o", "--output", metavar="OUT.npz", help="write the statistics here")


def _fid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="image folder or .npz statistics file (evaluated)")
    parser.add_argument("b", metavar="B", help="image folder or .npz statistics file (reference)")


def _kid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="image folder (evaluated)")
    parser.add_argument("b", metavar="B", help="image folder (reference)")
    parser.add_argument("--subsets", type=_positive, default=100, help="random subsets (default 100)")
    parser.add_argument(
        "--subset-size",
        type=_positive,
        default=None,
        help=f"distinct images per subset and side (default {_KID_SUBSET_SIZE}, as KIDCallback); more than a "
        "folder holds is refused, not capped",
    )
    parser.add_argument("--seed", type=_non_negative, default=0, help="seed of the subset draws (default 0)")


def _is_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="image folder")
    parser.add_argument("--splits", type=_positive, default=10, help="splits, in file order (default 10)")


def _pr_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="image folder (evaluated)")
    parser.add_argument("b", metavar="B", help="image folder (reference)")
    parser.add_argument("--k", type=_positive, default=3, help="k-th nearest neighbour radius (default 3)")


def _cmmd_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="image folder (evaluated)")
    parser.add_argument("b", metavar="B", help="image folder (reference)")
    parser.add_argument(
        "--estimator",
        choices=("biased", "unbiased"),
        default="biased",
        help="biased: the reference code's V-statistic (default); unbiased: the U-statistic",
    )


def _vendi_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="image folder")


def _memorization_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="GENERATED", help="image folder (evaluated)")
    parser.add_argument("b", metavar="TRAIN", help="image folder of the training images")
    parser.add_argument("--test", metavar="TEST", help="image folder of held-out real images, for C_T")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="without --test: share of TRAIN split off for C_T (0.2)"
    )
    parser.add_argument("--split-seed", type=_non_negative, default=0, help="seed of that split (default 0)")
    parser.add_argument("--quantile", type=float, default=0.01, help="memorised-fraction threshold quantile (0.01)")
    parser.add_argument(
        "--grid", metavar="OUT.png", default="nearest_training.png", help="write the grid here ('' for none)"
    )
    parser.add_argument("--nearest", type=_non_negative, default=8, help="generated images in the grid (default 8)")
    parser.add_argument("--neighbours", type=_positive, default=3, help="training images beside each (default 3)")


@dataclass(frozen=True)
class Command:
    """One subcommand: its help, its arguments and what it computes.

    Attributes:
        help: One line for the list of commands in ``--help``.
        add_arguments: Adds the command's own arguments (the evaluation options are added for every command).
        run: ``run(args, make_run)`` returns the result (printed as a table or JSON); ``make_run()`` loads the
            network and joins the process group, so a command calls it only after checking its inputs. Bad input
            raises :class:`InputError`. Heavy modules are imported inside ``run``.
        description: The command's ``--help`` text (default: ``help``).
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Runner
    description: str | None = None


COMMANDS: dict[str, Command] = {
    "stats": Command(
        "FID statistics (mu, sigma) of a folder, as a .npz",
        _stats_arguments,
        _stats,
        "Mean and covariance of a folder's features (or a summary of a .npz); with -o, written as an .npz that "
        "pytorch-fid, `fid` and FIDCallback(real=...) read.",
    ),
    "fid": Command("Fréchet distance between A and B", _fid_arguments, _fid),
    "kid": Command("kernel Inception distance between A and B", _kid_arguments, _kid),
    "is": Command("Inception Score of A", _is_arguments, _is),
    "pr": Command("precision, recall, density and coverage of A against B", _pr_arguments, _pr),
    "cmmd": Command("CMMD between A and B (CLIP embeddings)", _cmmd_arguments, _cmmd),
    "vendi": Command("Vendi score (diversity) of A", _vendi_arguments, _vendi),
    "memorization": Command(
        "does GENERATED copy TRAIN? AuthPct, C_T, memorised fraction, nearest-training grid",
        _memorization_arguments,
        _memorization,
        "AuthPct (dgm-eval), C_T (Meehan et al. 2020, dgm-eval constants; needs held-out real images: --test, or"
        " a seeded split of TRAIN) and the memorised fraction (generated images at or below the --quantile of"
        " the training images' own nearest-neighbour distances), plus a PNG grid of the generated images"
        " closest to TRAIN, each beside its nearest training images.",
    ),
}
"""The subcommands, in ``--help`` order."""

# --------------------------------------------------------------------------------------------- parsing


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line (plus a pointer to --help) and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lightning-ganeval`` (its subcommands and their options)."""
    from lightning_ganeval._version import __version__

    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("evaluation options")
    group.add_argument("--device", help="where the network runs: cpu, cuda, cuda:1 (default: cuda if available)")
    group.add_argument("--batch-size", type=_positive, default=64, help="images per forward pass (default 64)")
    group.add_argument(
        "--workers",
        type=_non_negative,
        default=None,
        help=f"image decoding processes (default: the CPUs of this process per local rank, at most "
        f"{_MAX_DEFAULT_WORKERS}; 0 decodes in the main process)",
    )
    group.add_argument(
        "--network",
        choices=tuple(_NETWORKS),
        default=None,
        help="feature network: the FID Inception v3 (default; clip for cmmd), DINOv2 ViT-L/14 (FD_DINOv2; needs "
        "timm) or CLIP ViT-L/14-336 (CMMD; needs transformers)",
    )
    group.add_argument(
        "--resize",
        choices=(*_INCEPTION_RESIZE, *_DINOV2_RESIZE),
        default=None,
        help="resize to the network's input: tf1 (reference, default) or antialias for Inception; bicubic "
        "(default) or pil for DINOv2; pil (reference, default) or bicubic for CLIP",
    )
    group.add_argument(
        "--inception-weights",
        metavar="PATH",
        help="Inception weights file (default: $LIGHTNING_GANEVAL_INCEPTION_WEIGHTS, the torch hub cache, download)",
    )
    group.add_argument(
        "--dinov2-weights",
        metavar="PATH",
        help="DINOv2 weights file (default: $LIGHTNING_GANEVAL_DINOV2_WEIGHTS, the torch hub cache, download)",
    )
    group.add_argument(
        "--dinov2-model",
        choices=("vitl14", "vitb14", "vits14"),
        default="vitl14",
        help="DINOv2 backbone (FD_DINOv2 is defined with vitl14, the default)",
    )
    group.add_argument(
        "--clip-weights",
        metavar="PATH",
        help="CLIP weights file or folder (default: $LIGHTNING_GANEVAL_CLIP_WEIGHTS, the Hugging Face and torch hub "
        "caches, download)",
    )
    group.add_argument(
        "--num-samples",
        type=_positive,
        metavar="N",
        help="use the first N images of each folder, in sorted path order (a .npz is used whole)",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")
    group.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")

    parser = _Parser(
        prog=PROG,
        description="FID, KID, Inception Score, precision/recall, CMMD, Vendi and memorization of image folders and "
        "statistics files, with "
        "the pipeline of the lightning_ganeval callbacks. A is the evaluated (generated) set, B the reference "
        "(real) set. Folders are searched recursively, following links to folders. Under torchrun the files are "
        "sharded over the processes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name, parents=[common], help=command.help, description=command.description or command.help
        )
        command.add_arguments(sub)
    return parser


# --------------------------------------------------------------------------------------------- main


def _format(result: dict[str, Any]) -> str:
    rows = []
    for key, value in result.items():
        if key == "files":
            shown = "; ".join(_describe_counts(argument, counts) for argument, counts in value.items())
        else:
            shown = f"{value:.6g}" if isinstance(value, float) else ("-" if value is None else str(value))
        rows.append((key, shown))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {shown}" for key, shown in rows)


def _describe_counts(argument: str, counts: dict[str, Any]) -> str:
    """``A: read 10 of 12 (--num-samples), skipped 2 (1 not .png/.jpg/.jpeg, ...)``."""
    text = f"{argument}: read {counts['read']}"
    if counts["read"] != counts["found"]:
        text += f" of {counts['found']} (--num-samples)"
    text += f", skipped {counts['skipped']}"
    if counts["skipped"]:
        text += " (" + _describe_skipped(Counter(counts["skipped_by_reason"])) + ")"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: The arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on bad input (reported as one line on stderr).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if args.network is None:
        args.network = "clip" if args.command == "cmmd" else "inception"
    env_rank = _env_int("RANK", 0)
    created = False
    rank = env_rank
    prefix = f"{PROG} {args.command}"

    def make_run() -> _Run:
        nonlocal created, rank
        from lightning_ganeval.real_images import default_max_workers

        local_rank = _env_int("LOCAL_RANK", 0)
        device = _device(args.device, local_rank if _env_int("WORLD_SIZE", 1) > 1 else None)
        rank, world_size, created = _start_distributed(device)
        workers = args.workers
        if workers is None:
            local = _env_int("LOCAL_WORLD_SIZE", world_size)
            workers = min(_MAX_DEFAULT_WORKERS, default_max_workers(max(1, local)))
        network = _build_network(args, device)
        return _Run(network, device, rank, world_size, args.batch_size, workers, not args.no_progress)

    try:
        with warnings.catch_warnings():
            # Library warnings as one line each, in the command line's terms (rank 0 only, as the result).
            warnings.showwarning = _one_line_warnings(prefix, env_rank == 0)
            _check_options(args)
            result = COMMANDS[args.command].run(args, make_run)
    except InputError as err:
        # Errors found before the pass are the same on every rank: rank 0 reports them. Errors of a pass (an
        # unreadable file) are found by one rank: it reports them (the others stop as `_OtherRankFailed`).
        if rank == 0 or isinstance(err, _ShardError):
            print(f"{prefix}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except _OtherRankFailed:
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    finally:
        if created:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(result) if args.json else _format(result), flush=True)
    return EXIT_OK
