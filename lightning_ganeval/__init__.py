"""FID, Inception Score, KID, precision/recall, CMMD, Vendi and memorization for PyTorch Lightning GAN training.

The callbacks (:class:`FIDCallback`, :class:`InceptionScoreCallback`, :class:`KIDCallback`,
:class:`PrecisionRecallCallback`, :class:`CMMDCallback`, :class:`VendiScoreCallback`,
:class:`MemorizationCallback`) are loaded on first access, so that the plain-torch parts (the :class:`Evaluator`
and its metrics, extractors, accumulators, math, statistics files) can be imported without Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightning_ganeval._version import __version__ as __version__

_EXPORTS = {
    "FIDCallback": "callbacks",
    "InceptionScoreCallback": "callbacks",
    "KIDCallback": "callbacks",
    "MemorizationCallback": "callbacks",
    "PrecisionRecallCallback": "callbacks",
    "Evaluator": "evaluator",
    "EvaluationResult": "evaluator",
    "EvaluationWarning": "evaluator",
    "FID": "metrics",
    "InceptionScore": "metrics",
    "KID": "metrics",
    "Memorization": "metrics",
    "PrecisionRecall": "metrics",
    "GenerativeMetric": "metrics",
    "PixelSpace": "images",
    "infer_pixel_space": "images",
    "DINOv2Extractor": "dinov2",
    "InceptionExtractor": "extractor",
    "InceptionFeatures": "extractor",
    "get_extractor": "extractor",
    "to_uint8_rgb": "images",
    "ConvertedImages": "images",
    "FIDMoments": "moments",
    "ISMarginals": "moments",
    "GaussianStats": "math",
    "FrechetReference": "math",
    "frechet_distance": "math",
    "inception_score": "math",
    "load_stats": "reference",
    "save_stats": "reference",
    "InceptionWeights": "weights",
    "WeightsError": "weights",
    "resolve_weights": "weights",
    "WEIGHTS_ENV_VAR": "weights",
    "CMMDCallback": "callbacks",
    "VendiScoreCallback": "callbacks",
    "CMMD": "metrics",
    "VendiScore": "metrics",
    "CLIPExtractor": "clip",
    "PPLCallback": "callbacks",
    "PerceptualPathLength": "metrics",
    "LPIPSVGG16": "lpips",
}

__all__ = [
    "CMMD",
    "FID",
    "KID",
    "LPIPSVGG16",
    "WEIGHTS_ENV_VAR",
    "CLIPExtractor",
    "CMMDCallback",
    "ConvertedImages",
    "DINOv2Extractor",
    "EvaluationResult",
    "EvaluationWarning",
    "Evaluator",
    "FIDCallback",
    "FIDMoments",
    "FrechetReference",
    "GaussianStats",
    "GenerativeMetric",
    "ISMarginals",
    "InceptionExtractor",
    "InceptionFeatures",
    "InceptionScore",
    "InceptionScoreCallback",
    "InceptionWeights",
    "KIDCallback",
    "Memorization",
    "MemorizationCallback",
    "PPLCallback",
    "PerceptualPathLength",
    "PixelSpace",
    "PrecisionRecall",
    "PrecisionRecallCallback",
    "VendiScore",
    "VendiScoreCallback",
    "WeightsError",
    "frechet_distance",
    "get_extractor",
    "inception_score",
    "infer_pixel_space",
    "load_stats",
    "resolve_weights",
    "save_stats",
    "to_uint8_rgb",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_ganeval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lightning_ganeval.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from lightning_ganeval.callbacks import (
        CMMDCallback,
        FIDCallback,
        InceptionScoreCallback,
        KIDCallback,
        MemorizationCallback,
        PPLCallback,
        PrecisionRecallCallback,
        VendiScoreCallback,
    )
    from lightning_ganeval.clip import CLIPExtractor
    from lightning_ganeval.dinov2 import DINOv2Extractor
    from lightning_ganeval.evaluator import EvaluationResult, EvaluationWarning, Evaluator
    from lightning_ganeval.extractor import InceptionExtractor, InceptionFeatures, get_extractor
    from lightning_ganeval.images import ConvertedImages, PixelSpace, infer_pixel_space, to_uint8_rgb
    from lightning_ganeval.lpips import LPIPSVGG16
    from lightning_ganeval.math import FrechetReference, GaussianStats, frechet_distance, inception_score
    from lightning_ganeval.metrics import (
        CMMD,
        FID,
        KID,
        GenerativeMetric,
        InceptionScore,
        Memorization,
        PerceptualPathLength,
        PrecisionRecall,
        VendiScore,
    )
    from lightning_ganeval.moments import FIDMoments, ISMarginals
    from lightning_ganeval.reference import load_stats, save_stats
    from lightning_ganeval.weights import WEIGHTS_ENV_VAR, InceptionWeights, WeightsError, resolve_weights
