"""PrecisionRecallCallback: the Lightning layer of :class:`lightning_ganeval.metrics.PrecisionRecall`."""

from __future__ import annotations

from torch.utils.data import DataLoader
from typing_extensions import Unpack

from lightning_ganeval.callbacks._arguments import RealMetricArguments
from lightning_ganeval.callbacks._checks import check_int
from lightning_ganeval.callbacks.base import _GenerativeMetricCallback
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
        k: int = 3,
        max_real: int | None = None,
        block_size: int = 10_000,
        name: str = "pr",
        **kwargs: Unpack[RealMetricArguments],
    ) -> None:
        self.real = real
        self.k = check_int("k", k, 1)
        self.max_real = None if max_real is None else check_int("max_real", max_real, 2)
        self.block_size = check_int("block_size", block_size, 1)
        super().__init__(name=name, **kwargs)

    def _check_arguments(self) -> None:
        num_samples, k = self.num_samples, self.k
        if isinstance(num_samples, int) and not isinstance(num_samples, bool) and k >= num_samples:
            raise ValueError(f"`k` ({k}) must be smaller than `num_samples` ({num_samples}).")
        if self.max_real is not None and k >= self.max_real:
            raise ValueError(f"`k` ({k}) must be smaller than `max_real` ({self.max_real}).")

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
