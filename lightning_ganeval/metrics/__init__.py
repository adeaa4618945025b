"""Metrics over the shared evaluation pass: one small plain-torch unit each (see ``base.py``).

Adding a metric: a subclass of :class:`~lightning_ganeval.metrics.base.GenerativeMetric` in its own file, a line
here, and (for Lightning) a thin callback in ``lightning_ganeval/callbacks/``.
"""

from lightning_ganeval.metrics.base import GenerativeMetric, PerSampleMetric, RealData, RealRequest
from lightning_ganeval.metrics.cmmd import CMMD
from lightning_ganeval.metrics.fid import FID
from lightning_ganeval.metrics.inception_score import InceptionScore
from lightning_ganeval.metrics.kid import KID
from lightning_ganeval.metrics.memorization import Memorization
from lightning_ganeval.metrics.ppl import PerceptualPathLength
from lightning_ganeval.metrics.precision_recall import PrecisionRecall
from lightning_ganeval.metrics.vendi import VendiScore

__all__ = [
    "CMMD",
    "FID",
    "KID",
    "GenerativeMetric",
    "InceptionScore",
    "Memorization",
    "PerSampleMetric",
    "PerceptualPathLength",
    "PrecisionRecall",
    "RealData",
    "RealRequest",
    "VendiScore",
]
