"""Metrics over the shared evaluation pass: one small plain-torch unit each (see ``base.py``).

Adding a metric: a subclass of :class:`~lightning_ganeval.metrics.base.GenerativeMetric` in its own file, a line
here, and (for Lightning) a thin callback in ``lightning_ganeval/callbacks/``.
"""

from lightning_ganeval.metrics.base import GenerativeMetric, RealData, RealRequest
from lightning_ganeval.metrics.fid import FID
from lightning_ganeval.metrics.inception_score import InceptionScore
from lightning_ganeval.metrics.kid import KID
from lightning_ganeval.metrics.ppl import PerceptualPathLength
from lightning_ganeval.metrics.precision_recall import PrecisionRecall

__all__ = [
    "FID",
    "KID",
    "GenerativeMetric",
    "InceptionScore",
    "PerceptualPathLength",
    "PrecisionRecall",
    "RealData",
    "RealRequest",
]
