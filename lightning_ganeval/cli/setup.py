"""Setting a command up: the device, the torchrun process group, the feature network, statistics files.

Everything that needs torch is imported inside the functions, which run only once the arguments and the folders
are checked.
"""

from __future__ import annotations

import argparse
import os
import re
import warnings
from typing import TYPE_CHECKING, Any

from lightning_ganeval.cli.arguments import NETWORKS, resize
from lightning_ganeval.cli.messages import MAX_MESSAGE, InputError, translate

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lightning_ganeval.frechet import GaussianStats

__all__ = ["build_network", "check_stats_file", "device_for", "env_int", "load_stats_file", "start_distributed"]


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def device_for(text: str | None, local_rank: int | None) -> torch.device:
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


def start_distributed(device: torch.device) -> tuple[int, int, bool]:
    """Join the torchrun process group (from its environment variables); ``(rank, world_size, created)``."""
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if env_int("WORLD_SIZE", 1) <= 1:
        return 0, 1, False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), True


def _weights_flag(args: argparse.Namespace) -> str:
    """Where the network's weights came from, for a message: the flag, else its environment variable or cache."""
    if args.network in ("inception", "clip"):
        _, flag, attribute, variable = NETWORKS[args.network]
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
    return translate(re.sub(r"^weights file .*? (is not|does not|has) ", r"\1 ", message, count=1), MAX_MESSAGE)


def build_network(args: argparse.Namespace, device: torch.device) -> nn.Module:
    import pickle

    from lightning_ganeval.weights import WeightsError

    mode = resize(args)
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

                network: nn.Module = get_extractor(device, weights=args.inception_weights, resize=mode)
            elif args.network == "clip":
                from lightning_ganeval.clip import CLIPExtractor

                network = CLIPExtractor(args.clip_weights, resize=mode, device=device, progress=not args.no_progress)
            else:
                from lightning_ganeval.dinov2 import DINOv2Extractor

                network = DINOv2Extractor(args.dinov2_weights, model=args.dinov2_model, resize=mode, device=device)
        except WeightsError as err:
            raise InputError(translate(str(err))) from None
        except (ValueError, TypeError, RuntimeError, KeyError, OSError, EOFError, pickle.UnpicklingError) as err:
            # A weights file that exists but is not the network's: corrupt, truncated, another architecture.
            raise InputError(f"{_weights_flag(args)}: cannot load the weights: {_weights_problem(err)}") from None
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return network


def load_stats_file(source: Any, expect: dict[str, Any] | None) -> tuple[GaussianStats, dict[str, Any]]:
    from lightning_ganeval.stats_files import load_stats

    try:
        return load_stats(source.text, expect=expect)
    except (OSError, ValueError) as err:
        raise InputError(f"{source.argument}: {translate(str(err))}") from None


def check_stats_file(source: Any) -> None:
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
        load_stats_file(source, None)
