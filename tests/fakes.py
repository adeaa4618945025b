"""Test doubles shared by the callback tests (importable in ``ddp_spawn`` children, unlike conftest fixtures)."""

from __future__ import annotations

import contextlib
import datetime
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lightning_ganeval.inception import InceptionFeatures


class FakeExtractor(nn.Module):
    """Fixed random projections of 4 x 4 average-pooled pixels: per-sample, deterministic, fast.

    It has the extractor's interface (uint8 in, ``pool``/``logits`` out, ``device``, ``identity``) and counts its
    calls, so tests can check that one pass feeds both metrics.
    """

    num_features = 16
    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w_pool", torch.randn(48, self.num_features, generator=g) / 4)
        self.register_buffer("w_logits", torch.randn(self.num_features, self.num_classes, generator=g) * 2)
        self.device = torch.device("cpu")
        self.identity = "fake-extractor/v1"
        self.calls = 0

    def forward(self, images: torch.Tensor) -> InceptionFeatures:
        assert images.dtype == torch.uint8
        self.calls += 1
        x = F.adaptive_avg_pool2d(images.float() / 127.5 - 1, 4).flatten(1)
        pool = torch.tanh(x @ self.w_pool)
        return InceptionFeatures(pool=pool, logits=pool @ self.w_logits)


def half_average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
    """An EMA with decay 0.5 for ``WeightAveraging(avg_fn=...)``; module-level so that ``ddp_spawn`` can pickle it
    (``EMAWeightAveraging``'s own closure cannot be pickled)."""
    return 0.5 * averaged + 0.5 * current


_COLLECTIVES = ("all_gather", "all_reduce", "all_gather_object", "broadcast", "reduce", "gather")


@contextlib.contextmanager
def counted_collectives() -> Iterator[list[str]]:
    """The names of the collectives called inside the block, in order."""
    calls: list[str] = []
    originals = {name: getattr(dist, name) for name in _COLLECTIVES}

    def counting(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return originals[name](*args, **kwargs)

        return call

    for name in _COLLECTIVES:
        setattr(dist, name, counting(name))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


def join_gloo_group(rank: int, world_size: int, workdir: str) -> None:
    """A spawned test process joins a CPU gloo group through a file store in ``workdir`` (one torch thread:
    2-3 processes share the CI cores, and oversubscribed OpenMP threads crawl)."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{os.path.join(workdir, 'store')}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=120),
    )


def quiet_trainer(trainer_class: Any, root: Path, callbacks: list[Any], **kwargs: Any) -> Any:
    """A quiet one-CPU ``trainer_class`` (``lightning.pytorch.Trainer`` or ``pytorch_lightning.Trainer``): two
    epochs, no logger, checkpoints, progress bar or model summary; ``kwargs`` override or add Trainer arguments.

    Taking the class keeps this module free of Lightning, for the processes that import it.
    """
    options: dict[str, Any] = {
        "default_root_dir": root,
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 2,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **kwargs,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's tips about workers and logging intervals
        return trainer_class(callbacks=callbacks, **options)
