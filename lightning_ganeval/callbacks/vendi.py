"""VendiScoreCallback: the Lightning layer of :class:`lightning_ganeval.metrics.VendiScore`."""

from __future__ import annotations

from typing_extensions import Unpack

from lightning_ganeval.callbacks._arguments import FeatureMetricArguments
from lightning_ganeval.callbacks.base import _GenerativeMetricCallback
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
        TypeError, ValueError: On invalid arguments, naming the argument.

    Example::

        >>> from lightning_ganeval import VendiScoreCallback
        >>> VendiScoreCallback(num_samples=5_000).state_key
        "VendiScoreCallback{'name': 'vendi'}"
    """

    def __init__(self, *, name: str = "vendi", **kwargs: Unpack[FeatureMetricArguments]) -> None:
        super().__init__(name=name, **kwargs)

    def _build_metric(self) -> VendiScore:
        return VendiScore(name=self.name, feature_extractor=self.feature_extractor)
