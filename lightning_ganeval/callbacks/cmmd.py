"""CMMDCallback: the Lightning layer of :class:`lightning_ganeval.metrics.CMMD`."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import lightning.pytorch as pl
from torch import nn
from torch.utils.data import DataLoader
from typing_extensions import Unpack, override

from lightning_ganeval.callbacks._arguments import ClipMetricArguments
from lightning_ganeval.callbacks._checks import check_choice, check_int, check_path
from lightning_ganeval.callbacks.base import _GenerativeMetricCallback
from lightning_ganeval.callbacks.fid import RealDataCallbackMixin
from lightning_ganeval.metrics.cmmd import CMMD, ESTIMATORS
from lightning_ganeval.sampling import isolated_rng

__all__ = ["CMMDCallback"]

_CLIP_RESIZE = ("pil", "bicubic")


class CMMDCallback(RealDataCallbackMixin, _GenerativeMetricCallback):
    r"""CMMD of the generator's samples to real data (Jayasumana et al., CVPR 2024), at the end of training epochs.

    Logs ``cmmd`` (``name`` replaces it), ``cmmd_num_samples``, ``cmmd_nonfinite`` and ``cmmd_clamped``: the MMD²
    between the CLIP ViT-L/14-336 image embeddings of the generated and the real images, every row L2-normalised,
    Gaussian RBF kernel with σ = 10, times 1000, as google-research's ``cmmd`` computes it. The default
    ``estimator="biased"`` is the reference code's V-statistic (means over the full kernel matrices, diagonal
    included; the paper calls its estimator unbiased, the code is not); ``"unbiased"`` gives the U-statistic.
    Shares the generator pass with the other metric callbacks; the CLIP network runs once per batch for every
    callback that uses it, the real embeddings come from one real pass and are cached beside FID's statistics.

    The CLIP network (:class:`~lightning_ganeval.clip.CLIPExtractor`, Hugging Face ``transformers``: the extra
    ``[clip]``) is found or downloaded on rank 0 first: ``clip_weights=``, ``$LIGHTNING_GANEVAL_CLIP_WEIGHTS``, the
    Hugging Face cache, the torch hub cache, then a verified download.

    Memory: the generated and the real embeddings are kept as N × 768 float32 on the CPU (31 MB per side at N = 10k)
    and gathered on every rank once per evaluation; the kernel sums run in float64 on the evaluation device in
    blocks of 4096 rows (a 4096 × N temporary, never N × N). The real side's sum is computed once per fit.

    Args:
        real: A DataLoader of real images, or ``None`` for the training dataloader.
        num_samples: Generated samples per evaluation (at least 2).
        estimator: ``"biased"`` (reference) or ``"unbiased"``.
        max_real: Real samples kept (the first ones of the real data); default ``num_samples``.
        clip_weights: Path to the CLIP weights (a file or a folder); default: see above.
        clip_resize: ``"pil"`` (the reference's Pillow bicubic, CPU) or ``"bicubic"`` (torch, on the device).
        feature_extractor: Any ``nn.Module`` mapping uint8 images to ``N x d`` features instead of CLIP (its rows
            are L2-normalised by the metric too).
        Other arguments: as :class:`~lightning_ganeval.FIDCallback`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has an invalid value (named in the message).

    Example::

        >>> from lightning_ganeval import CMMDCallback
        >>> CMMDCallback(num_samples=5_000).state_key
        "CMMDCallback{'name': 'cmmd'}"
    """

    _RUNTIME_ATTRIBUTES: ClassVar[tuple[str, ...]] = (*_GenerativeMetricCallback._RUNTIME_ATTRIBUTES, "_clip")

    def __init__(
        self,
        *,
        real: DataLoader | None = None,
        estimator: str = "biased",
        max_real: int | None = None,
        clip_weights: str | os.PathLike[str] | None = None,
        clip_resize: str = "pil",
        name: str = "cmmd",
        **kwargs: Unpack[ClipMetricArguments],
    ) -> None:
        self.real = real
        self.estimator = check_choice("estimator", estimator, ESTIMATORS)
        self.max_real = None if max_real is None else check_int("max_real", max_real, 2)
        self.clip_weights = check_path("clip_weights", clip_weights)
        self.clip_resize = check_choice("clip_resize", clip_resize, _CLIP_RESIZE)
        self._clip: nn.Module | None = None
        super().__init__(name=name, **kwargs)

    def _build_metric(self) -> CMMD:
        return CMMD(
            name=self.name,
            feature_extractor=self.feature_extractor,
            estimator=self.estimator,
            max_real=self.max_real if self.max_real is not None else max(self.num_samples, 2),
        )

    def _uses_inception(self) -> bool:
        return False

    def _network(self) -> nn.Module:
        network = self.feature_extractor if self.feature_extractor is not None else self._clip
        assert network is not None
        return network

    def _settings(self) -> dict[str, Any]:
        settings = super()._settings()
        # Inception's settings do not apply; CLIP's resize does.
        for key in ("resize", "fast"):
            settings.pop(key, None)
        return {**settings, "clip_resize": self.clip_resize}

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.feature_extractor is None:
            # Building the network draws from the global RNG before its weights are loaded.
            with isolated_rng():
                self._clip = self._load_clip_rank_zero_first(trainer)
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and self.feature_extractor is None:
            self._metric.feature_extractor = self._clip

    def _load_clip_rank_zero_first(self, trainer: pl.Trainer) -> nn.Module:
        from lightning_ganeval.clip import get_clip_extractor, resolve_clip_weights

        # As for Inception: rank 0 finds or downloads the file, its outcome (an error included) is broadcast, so a
        # missing file stops every rank with the same message before training instead of a hang at a barrier.
        outcome: Any = None
        if trainer.is_global_zero:
            try:
                outcome = resolve_clip_weights(self.clip_weights, progress=self.progress)
            except Exception as err:  # broadcast below, then raised on every rank
                outcome = err
        outcome = trainer.strategy.broadcast(outcome, src=0)
        if isinstance(outcome, Exception):
            raise outcome
        weights = outcome if trainer.is_global_zero else resolve_clip_weights(self.clip_weights, progress=False)
        return get_clip_extractor(trainer.strategy.root_device, weights=weights, resize=self.clip_resize)

    def _release(self, trainer: pl.Trainer) -> None:
        super()._release(trainer)
        self._clip = None
