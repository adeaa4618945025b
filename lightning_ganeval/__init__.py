"""Generative-model metrics for PyTorch Lightning training: FID, IS, KID, precision/recall, CMMD, Vendi, PPL and
memorization, as callbacks, from a plain loop (:class:`Evaluator`) or the command line.

The public API is the one list :data:`_EXPORTS` below (``__all__``): the callbacks, the :class:`Evaluator` and its
result, the metric units and the bases to write another (:class:`GenerativeMetric`, :class:`PerSampleMetric`,
:class:`RealRequest`, :class:`RealData`), :class:`PixelSpace`, the feature networks, the statistics files and the
weights resolution. Everything else stays importable from its module (``lightning_ganeval.frechet.frechet_distance``,
``lightning_ganeval.images.to_uint8_rgb``, ...). Names are loaded on first access, so that the plain-torch parts can
be imported without Lightning (only the callbacks need it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_ganeval._lazy import lazy_exports
from lightning_ganeval._version import __version__ as __version__

# name -> the module (under lightning_ganeval) that defines it.
_EXPORTS = {
    # Lightning callbacks
    "FIDCallback": "callbacks",
    "InceptionScoreCallback": "callbacks",
    "KIDCallback": "callbacks",
    "PrecisionRecallCallback": "callbacks",
    "CMMDCallback": "callbacks",
    "VendiScoreCallback": "callbacks",
    "PPLCallback": "callbacks",
    "MemorizationCallback": "callbacks",
    # plain loops and Fabric
    "Evaluator": "evaluator",
    "EvaluationResult": "evaluator",
    "EvaluationWarning": "evaluator",
    # metric units
    "FID": "metrics",
    "InceptionScore": "metrics",
    "KID": "metrics",
    "PrecisionRecall": "metrics",
    "CMMD": "metrics",
    "VendiScore": "metrics",
    "PerceptualPathLength": "metrics",
    "Memorization": "metrics",
    # writing another metric
    "GenerativeMetric": "metrics",
    "PerSampleMetric": "metrics",
    "RealRequest": "metrics",
    "RealData": "metrics",
    # pixels, networks, files, weights
    "PixelSpace": "pixel_space",
    "InceptionExtractor": "inception",
    "get_extractor": "inception",
    "DINOv2Extractor": "dinov2",
    "CLIPExtractor": "clip",
    "LPIPSVGG16": "lpips",
    "load_stats": "stats_files",
    "save_stats": "stats_files",
    "resolve_weights": "weights",
    "WeightsError": "weights",
}

__all__ = list(_EXPORTS)  # the one list; tests/test_layering.py checks the TYPE_CHECKING block against it


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:  # for type checkers and IDEs, which cannot follow __getattr__
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
    from lightning_ganeval.inception import InceptionExtractor, get_extractor
    from lightning_ganeval.lpips import LPIPSVGG16
    from lightning_ganeval.metrics import (
        CMMD,
        FID,
        KID,
        GenerativeMetric,
        InceptionScore,
        Memorization,
        PerceptualPathLength,
        PerSampleMetric,
        PrecisionRecall,
        RealData,
        RealRequest,
        VendiScore,
    )
    from lightning_ganeval.pixel_space import PixelSpace
    from lightning_ganeval.stats_files import load_stats, save_stats
    from lightning_ganeval.weights import WeightsError, resolve_weights
