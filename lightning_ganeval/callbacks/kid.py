"""KIDCallback: the Lightning layer of :class:`lightning_ganeval.metrics.KID`."""

from __future__ import annotations

from torch.utils.data import DataLoader
from typing_extensions import Unpack

from lightning_ganeval.callbacks._arguments import RealMetricArguments
from lightning_ganeval.callbacks._checks import check_int
from lightning_ganeval.callbacks.base import _GenerativeMetricCallback
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
        subsets: int = 100,
        subset_size: int = 1000,
        max_real: int | None = None,
        kid_seed: int = 0,
        name: str = "kid",
        **kwargs: Unpack[RealMetricArguments],
    ) -> None:
        self.real = real
        self.subsets = check_int("subsets", subsets, 1)
        self.subset_size = check_int("subset_size", subset_size, 2)
        self.max_real = None if max_real is None else check_int("max_real", max_real, 2)
        self.kid_seed = check_int("kid_seed", kid_seed, 0)
        super().__init__(name=name, **kwargs)

    def _check_arguments(self) -> None:
        num_samples, subset_size = self.num_samples, self.subset_size
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

    def _build_metric(self) -> KID:
        return KID(
            name=self.name,
            feature_extractor=self.feature_extractor,
            subsets=self.subsets,
            subset_size=self.subset_size,
            max_real=self.max_real if self.max_real is not None else max(self.num_samples, self.subset_size),
            seed=self.kid_seed,
        )
