"""KIDCallback: the Lightning layer of :class:`lightning_ganeval.metrics.KID`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_ganeval.callbacks._checks import check_int
from lightning_ganeval.callbacks.base import SampleFn, _GenerativeMetricCallback
from lightning_ganeval.callbacks.fid import RealDataCallbackMixin
from lightning_ganeval.metrics.kid import KID

__all__ = ["KIDCallback"]


class KIDCallback(RealDataCallbackMixin, _GenerativeMetricCallback):
    r"""Kernel Inception Distance of the generator's samples to real data, at the end of training epochs.

    Logs ``kid`` and ``kid_std`` (``name`` replaces ``kid``), ``kid_num_samples``, ``kid_nonfinite`` and
    ``kid_clamped``: the unbiased MMD² with the cubic polynomial kernel ``k(x, y) = (x·y / d + 1)³`` over
    ``subsets`` random subsets of ``subset_size`` samples per side (defaults as torch-fidelity and StyleGAN2-ADA),
    std over subsets with ``ddof=0``. Subsets are drawn with a seeded generator over global sample indices, so the
    value is identical at any world size. Shares the generator pass and the Inception pass with the other metric
    callbacks; the real features come from the same real pass as FID's statistics and are cached beside them.

    Memory: the generated and the real features are kept as N × d float32 on the CPU (80 MB per side at N = 10k,
    d = 2048; 400 MB at 50k) and gathered on every rank once per evaluation.

    Args:
        real: A DataLoader of real images, or ``None`` for the training dataloader (a statistics file is not
            enough: KID compares samples).
        num_samples: Generated samples per evaluation (at least ``subset_size``).
        subsets: Number of subsets.
        subset_size: Samples per subset and side.
        max_real: Real samples kept for the comparison (a seeded uniform sample of the whole real data); default
            ``num_samples``.
        kid_seed: Seed of the subset draws.
        feature_extractor: Any ``nn.Module`` mapping uint8 images to ``N x d`` features; default Inception pool3.
        Other arguments: as :class:`~lightning_ganeval.FIDCallback`.

    Raises:
        ValueError: ``subset_size`` larger than ``num_samples`` or ``max_real`` (at construction) or than the real
            samples (in ``on_train_start``), and the errors of :class:`~lightning_ganeval.FIDCallback`.
    """

    def __init__(
        self,
        *,
        real: DataLoader | None = None,
        num_samples: int = 10_000,
        subsets: int = 100,
        subset_size: int = 1000,
        max_real: int | None = None,
        kid_seed: int = 0,
        batch_size: int = 64,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        model_weights: str = "averaged",
        latent_shape: int | Sequence[int] | None = None,
        sample_fn: SampleFn | str | None = None,
        value_range: tuple[float, float] | None = None,
        normalize: tuple[Any, Any] | None = None,
        real_value_range: tuple[float, float] | None = None,
        real_normalize: tuple[Any, Any] | None = None,
        real_image_fn: Callable[[Any], Tensor] | str | None = None,
        num_real: int | None = None,
        inception_weights: str | os.PathLike[str] | None = None,
        resize: str = "tf1",
        fast: bool = False,
        feature_extractor: nn.Module | None = None,
        seed: int = 0,
        name: str = "kid",
        nonfinite: str = "exclude",
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> None:
        self.subsets = check_int("subsets", subsets, 1)
        self.subset_size = check_int("subset_size", subset_size, 2)
        self.max_real = None if max_real is None else check_int("max_real", max_real, 2)
        self.kid_seed = check_int("kid_seed", kid_seed, 0)
        if isinstance(num_samples, int) and not isinstance(num_samples, bool) and subset_size > num_samples:
            raise ValueError(
                f"`subset_size` ({subset_size}) must not exceed `num_samples` ({num_samples}): each subset draws"
                " subset_size distinct generated samples."
            )
        if self.max_real is not None and subset_size > self.max_real:
            raise ValueError(
                f"`subset_size` ({subset_size}) must not exceed `max_real` ({self.max_real}): each subset draws"
                " subset_size distinct real samples among the max_real kept."
            )
        self.name = name
        self.num_samples = num_samples
        super().__init__(
            num_samples=num_samples,
            batch_size=batch_size,
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            model_weights=model_weights,
            latent_shape=latent_shape,
            sample_fn=sample_fn,
            value_range=value_range,
            normalize=normalize,
            inception_weights=inception_weights,
            resize=resize,
            fast=fast,
            seed=seed,
            name=name,
            nonfinite=nonfinite,
            progress=progress,
            feature_extractor=feature_extractor,
        )
        self._init_real(
            real, real_value_range, real_normalize, real_image_fn, num_real, cache_dir, allow_stats_file=False
        )

    def _build_metric(self) -> KID:
        return KID(
            name=self.name,
            feature_extractor=self.feature_extractor,
            subsets=self.subsets,
            subset_size=self.subset_size,
            max_real=self.max_real if self.max_real is not None else max(self.num_samples, self.subset_size),
            seed=self.kid_seed,
        )
