"""VendiScoreCallback: the Lightning layer of :class:`lightning_ganeval.metrics.VendiScore`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from lightning_ganeval.callbacks.base import SampleFn, _GenerativeMetricCallback
from lightning_ganeval.metrics.vendi import VendiScore

__all__ = ["VendiScoreCallback"]


class VendiScoreCallback(_GenerativeMetricCallback):
    r"""Vendi score (Friedman & Dieng, TMLR 2023) of the generator's samples, at the end of training epochs.

    Logs ``vendi`` (``name`` replaces it), ``vendi_num_samples``, ``vendi_nonfinite`` and ``vendi_clamped``: the
    exponential of the Shannon entropy of the eigenvalues of K / n, with K = X Xᵀ the cosine kernel of the
    L2-normalised feature rows (``vendi_score.score_X``, dgm-eval's ``compute_vendi_score``), on Inception pool3
    features by default or any ``feature_extractor=``. The effective number of distinct samples: 1 when the
    generator collapses to one mode, at most min(num_samples, d). Needs no real data.

    Computed from the d × d matrix Σ x̂x̂ᵀ / n, which has the same non-zero eigenvalues as K / n: float64 sums
    merged over DDP ranks (the same value at any world size), d² float64 of memory (32 MiB for Inception's
    d = 2048), flat in ``num_samples``; one d × d eigendecomposition per evaluation.

    Args:
        num_samples: Generated samples per evaluation.
        feature_extractor: Any ``nn.Module`` mapping uint8 images to ``N x d`` features; default Inception pool3.
        Other arguments: as :class:`~lightning_ganeval.FIDCallback`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has an invalid value (named in the message).

    Example::

        >>> from lightning_ganeval import VendiScoreCallback
        >>> VendiScoreCallback(num_samples=5_000).state_key
        "VendiScoreCallback{'name': 'vendi'}"
    """

    def __init__(
        self,
        *,
        num_samples: int = 10_000,
        batch_size: int = 64,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        model_weights: str = "averaged",
        latent_shape: int | Sequence[int] | None = None,
        sample_fn: SampleFn | str | None = None,
        value_range: tuple[float, float] | None = None,
        normalize: tuple[Any, Any] | None = None,
        inception_weights: str | os.PathLike[str] | None = None,
        resize: str = "tf1",
        fast: bool = False,
        feature_extractor: nn.Module | None = None,
        seed: int = 0,
        name: str = "vendi",
        nonfinite: str = "exclude",
        progress: bool = True,
    ) -> None:
        self.name = name
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

    def _build_metric(self) -> VendiScore:
        return VendiScore(name=self.name, feature_extractor=self.feature_extractor)
