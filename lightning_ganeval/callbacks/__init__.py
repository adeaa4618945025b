"""The Lightning layer: one thin callback per metric over a shared evaluation pass (see ``base.py``)."""

from lightning_ganeval.callbacks.cmmd import CMMDCallback
from lightning_ganeval.callbacks.fid import FIDCallback
from lightning_ganeval.callbacks.inception_score import InceptionScoreCallback
from lightning_ganeval.callbacks.kid import KIDCallback
from lightning_ganeval.callbacks.memorization import MemorizationCallback
from lightning_ganeval.callbacks.ppl import PPLCallback
from lightning_ganeval.callbacks.precision_recall import PrecisionRecallCallback
from lightning_ganeval.callbacks.vendi import VendiScoreCallback

__all__ = [
    "CMMDCallback",
    "FIDCallback",
    "InceptionScoreCallback",
    "KIDCallback",
    "MemorizationCallback",
    "PPLCallback",
    "PrecisionRecallCallback",
    "VendiScoreCallback",
]
