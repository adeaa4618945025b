"""Image folders: which files a folder holds (and what was skipped, and why), and decoding them.

Folders: every ``.png``, ``.jpg`` and ``.jpeg`` file below the folder (any case, recursively; hidden files and
folders, whose names start with a dot, are skipped), in sorted order of their path relative to the folder.
Symbolic links to folders are followed; a folder reached a second time (a link back to an ancestor, or two links
to one folder) is searched once, so that a loop ends and no image is read twice through folder links. Each file is
decoded with Pillow and converted to RGB as torch-fidelity and pytorch-fid do (grayscale tiled, alpha dropped),
except 16-bit grayscale PNGs, which are scaled to 8 bits (value / 257, rounded) where those two clip them at 255.

Standard library only at import (torch, numpy and Pillow load inside :func:`read_image`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_ganeval.cli.messages import InputError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "IMAGE_SUFFIXES",
    "SKIP_REASONS",
    "FolderImages",
    "ImageFolderDataset",
    "ImageListing",
    "as_list",
    "describe_skipped",
    "list_images",
    "read_image",
    "scan_images",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

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


def as_list(items: list[Tensor | str]) -> list[Tensor | str]:
    """Collate into a plain list: images of one batch may differ in size (module level: workers pickle it)."""
    return items


def describe_skipped(skipped: Counter[str]) -> str:
    """``1 hidden (...), 2 not .png/.jpg/.jpeg``: the skipped entries by reason, for messages and the files line."""
    return ", ".join(f"{count} {SKIP_REASONS[reason]}" for reason, count in sorted(skipped.items()))


class ShardError(InputError):
    """Bad input found while reading this process's share of the files (only this rank knows it)."""


class FolderImages:
    """The ``image_fn`` of a folder's loader: the decoded images of a batch, or the error of an unreadable file.

    The real pass and :meth:`~lightning_ganeval.evaluator.Evaluator.evaluate_images` call it on each batch (a list
    from :func:`as_list`, images of different sizes allowed) in the main process, so an unreadable file stops the
    pass as one line naming the file and the folder's argument; the other ranks learn it from the pass.

    Args:
        argument: The folder's name on the command line (``A``, ``B``, ``--test``), for the message.
    """

    def __init__(self, argument: str) -> None:
        self.argument = argument

    def __call__(self, items: list[Tensor | str]) -> list[Tensor]:
        for item in items:
            if isinstance(item, str):
                raise ShardError(f"{self.argument}: {item}")
        return items  # type: ignore[return-value]
