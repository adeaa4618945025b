"""The argument parser: the evaluation options every command takes, ``stats``, and one command per registered metric.

A metric's command comes from its :mod:`~lightning_ganeval.metrics.registry` entry: its name and summary, its
inputs (``A``, and ``B`` when it compares with real data; a ``.npz`` is allowed where the real side is moments), and
its constructor options as flags (``subset_size`` -> ``--subset-size``). The checks of the options that need no
file contents and no torch are here too. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from typing import NoReturn

from lightning_ganeval.cli.messages import InputError
from lightning_ganeval.metrics.registry import MetricEntry, Option, metric_entry, metric_names

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "NETWORKS", "PROG", "build_parser", "check_options", "resize"]

PROG = "lightning-ganeval"
EXIT_OK = 0
EXIT_BAD_INPUT = 2
MAX_DEFAULT_WORKERS = 8
_INCEPTION_RESIZE = ("tf1", "antialias")
_DINOV2_RESIZE = ("bicubic", "pil")
_CLIP_RESIZE = ("pil", "bicubic")  # pil: the reference's Pillow bicubic resize (default)
# Per network: its --resize values (the first is the default), its weights flag and the variable that stands in.
NETWORKS = {
    "inception": (_INCEPTION_RESIZE, "--inception-weights", "inception_weights", "LIGHTNING_GANEVAL_INCEPTION_WEIGHTS"),
    "dinov2": (_DINOV2_RESIZE, "--dinov2-weights", "dinov2_weights", "LIGHTNING_GANEVAL_DINOV2_WEIGHTS"),
    "clip": (_CLIP_RESIZE, "--clip-weights", "clip_weights", "LIGHTNING_GANEVAL_CLIP_WEIGHTS"),
}
STATS_DESCRIPTION = (
    "Mean and covariance of a folder's features (or a summary of a .npz); with -o, written as an .npz that "
    "pytorch-fid, `fid` and FIDCallback(real=...) read."
)


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line (plus a pointer to --help) and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(minimum: int, words: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return value

    return parse


_positive = _integer(1, "a positive integer")
_non_negative = _integer(0, "an integer >= 0")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


_KINDS: dict[str, Callable[[str], object]] = {"positive": _positive, "non_negative": _non_negative, "float": _number}


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    # The default is None: a flag left out passes nothing, and the metric's own default applies (shown here).
    if option.kind == "choice":
        parser.add_argument(
            option.flag, choices=option.choices, default=None, help=f"{option.help} (default {option.default})"
        )
    else:
        parser.add_argument(
            option.flag, type=_KINDS[option.kind], default=None, help=f"{option.help} (default {option.default})"
        )


def _add_metric_arguments(parser: argparse.ArgumentParser, entry: MetricEntry) -> None:
    names = entry.inputs
    stats = " or .npz statistics file" if entry.real == "moments" else ""
    parser.add_argument("a", metavar=names[0], help=f"image folder{stats} (evaluated)")
    if len(names) > 1:
        parser.add_argument("b", metavar=names[1], help=f"image folder{stats} (reference)")
    for option in entry.options:
        _add_option(parser, option)
    if entry.name == "memorization":
        parser.add_argument("--test", metavar="TEST", help="image folder of held-out real images, for C_T")
        parser.add_argument(
            "--grid", metavar="OUT.png", default="nearest_training.png", help="write the grid here ('' for none)"
        )


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
        f"{MAX_DEFAULT_WORKERS}; 0 decodes in the main process)",
    )
    group.add_argument(
        "--network",
        choices=tuple(NETWORKS),
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
        "statistics files, with the metric units and the real pass of the lightning_ganeval callbacks. A is the "
        "evaluated (generated) set, B the reference (real) set. Folders are searched recursively, following links "
        "to folders. Under torchrun the files are sharded over the processes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    summary = "FID statistics (mu, sigma) of a folder, as a .npz"
    stats = subparsers.add_parser("stats", parents=[common], help=summary, description=STATS_DESCRIPTION)
    stats.add_argument("src", metavar="SRC", help="image folder or .npz statistics file")
    stats.add_argument("-o", "--output", metavar="OUT.npz", help="write the statistics here")
    for name in metric_names():
        entry = metric_entry(name)
        sub = subparsers.add_parser(
            name, parents=[common], help=entry.summary, description=entry.description or entry.summary
        )
        _add_metric_arguments(sub, entry)
    return parser


# --------------------------------------------------------------------------------------------- checks

# torch's device types (`torch.device("gpu")` fails); checked without torch so that a typo answers at once.
_DEVICE_PATTERN = re.compile(r"(cpu|cuda|mps|xpu|hpu|npu|mtia|meta|xla|ipu|hip|ve|vulkan|privateuseone)(:\d+)?")


def resize(args: argparse.Namespace) -> str:
    """The ``--resize`` mode for the chosen network (its default when not given)."""
    allowed = NETWORKS[args.network][0]
    if args.resize is None:
        return allowed[0]
    if args.resize not in allowed:
        raise InputError(
            f"--resize {args.resize} does not apply to --network {args.network}; it takes "
            f"{' or '.join(allowed)} (default {allowed[0]})."
        )
    return args.resize


def check_options(args: argparse.Namespace) -> None:
    """The checks of the evaluation options that need no file contents and no torch (every command runs them)."""
    if args.device is not None and not _DEVICE_PATTERN.fullmatch(args.device):
        raise InputError(f"--device: {args.device!r} is not a device (e.g. cpu, cuda, cuda:1).")
    resize(args)
    _, flag, attribute, _ = NETWORKS[args.network]
    path = getattr(args, attribute)
    for network, (_, other, other_attribute, _) in NETWORKS.items():
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
