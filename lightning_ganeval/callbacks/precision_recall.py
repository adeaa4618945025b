"""PrecisionRecallCallback: the Lightning layer of :class:`lightning_ganeval.metrics.PrecisionRecall`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_ganeval.callbacks._checks import check_int
from lightning_ganeval.callbacks.base import SampleFn, _GenerativeMetricCallback
from lightning_ganeval.callbacks.fid import RealDataCallbackMixin
from lightning_ganeval.metrics.precision_recall import PrecisionRecall

__all__ = ["PrecisionRecallCallback"]


class PrecisionRecallCallback(RealDataCallbackMixin, _GenerativeMetricCallback):
    r"""Precision, recall, density and coverage of the generator's samples, at the end of training epochs.

    Logs ``precision`` and ``recall`` (Kynkäänniemi et al. 2019, equal to torch-fidelity's ``prc``), ``density``
    and ``coverage`` (Naeem et al. 2020), from k-nearest-neighbour balls (``k=3``) in the feature space, plus
    ``pr_num_samples``, ``pr_nonfinite`` and ``pr_clamped``. With a ``name`` other than ``"pr"`` every key is
    prefixed (``<name>_precision``, ...). Pairwise distances are computed in blocks on the evaluation device, so
    N = 50,000 fits on one GPU.

    Features are Inception pool3 by default: published ``pr50k3`` numbers (StyleGAN) use VGG16 features and are
    not comparable; pass ``feature_extractor=`` for another network. Memory: as :class:`KIDCallback`, N × d
    float32 per side on the CPU.

    Args:
        real: A DataLoader of real images, or ``None`` for the training dataloader.
        num_samples: Generated samples per evaluation (more than ``k``).
        k: Neighbourhood size.
        max_real: Real samples kept (a seeded uniform sample of the whole real data); default ``num_samples``.
        block_size: Rows of pairwise distances computed at once.
        Other arguments: as :class:`~lightning_ganeval.FIDCallback`.

    Raises:
        ValueError: ``k >= num_samples`` or ``k >= max_real`` (at construction) or ``k >=`` the number of real
            samples (in ``on_train_start``), and the errors of :class:`~lightning_ganeval.FIDCallback`.
    """

    def __init__(
        self,
        *,
        real: DataLoader | None = None,
        num_samples: int = 10_000,
        k: int = 3,
        max_real: int | None = None,
        block_size: int = 10_000,
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
        name: str = "pr",
        nonfinite: str = "exclude",
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> None:
        self.k = check_int("k", k, 1)
        self.max_real = None if max_real is None else check_int("max_real", max_real, 2)
        self.block_size = check_int("block_size", block_size, 1)
        if isinstance(num_samples, int) and not isinstance(num_samples, bool) and k >= num_samples:
            raise ValueError(f"`k` ({k}) must be smaller than `num_samples` ({num_samples}).")
        if self.max_real is not None and k >= self.max_real:
            raise ValueError(f"`k` ({k}) must be smaller than `max_real` ({self.max_real}).")
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

    def _build_metric(self) -> PrecisionRecall:
        return PrecisionRecall(
            name=self.name,
            feature_extractor=self.feature_extractor,
            k=self.k,
            max_real=self.max_real if self.max_real is not None else self.num_samples,
            block_size=self.block_size,
        )

    def _logged_keys(self) -> list[str]:
        prefix = "pr" if self.name == "pr" else self.name
        return [*self._metric.keys(), f"{prefix}_nonfinite", f"{prefix}_clamped"]
