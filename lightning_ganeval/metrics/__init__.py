"""Metrics over the shared evaluation pass: one small plain-torch unit each (see ``base.py``), registered by name.

Adding a metric: a subclass of :class:`~lightning_ganeval.metrics.base.GenerativeMetric` in its own file and one
:func:`~lightning_ganeval.metrics.registry.register_metric` call in ``registry.py``; the
:class:`~lightning_ganeval.evaluator.Evaluator` (``Evaluator(["name"], ...)``) and the command line
(``lightning-ganeval name ...``) then know it. Names are loaded on first access, so that the registry (standard
library only) can be read without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_ganeval._lazy import lazy_exports

# name -> the module (under lightning_ganeval.metrics) that defines it.
_EXPORTS = {
    "CMMD": "cmmd",
    "FID": "fid",
    "KID": "kid",
    "GenerativeMetric": "base",
    "InceptionScore": "inception_score",
    "Memorization": "memorization",
    "MetricEntry": "registry",
    "PerSampleMetric": "base",
    "PerceptualPathLength": "ppl",
    "PrecisionRecall": "precision_recall",
    "RealData": "base",
    "RealRequest": "base",
    "VendiScore": "vendi",
    "build_metric": "registry",
    "metric_entry": "registry",
    "metric_names": "registry",
    "register_metric": "registry",
}

__all__ = list(_EXPORTS)  # the one list, as in the package root
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:  # for type checkers and IDEs, which cannot follow __getattr__
    from lightning_ganeval.metrics.base import GenerativeMetric, PerSampleMetric, RealData, RealRequest
    from lightning_ganeval.metrics.cmmd import CMMD
    from lightning_ganeval.metrics.fid import FID
    from lightning_ganeval.metrics.inception_score import InceptionScore
    from lightning_ganeval.metrics.kid import KID
    from lightning_ganeval.metrics.memorization import Memorization
    from lightning_ganeval.metrics.ppl import PerceptualPathLength
    from lightning_ganeval.metrics.precision_recall import PrecisionRecall
    from lightning_ganeval.metrics.registry import (
        MetricEntry,
        build_metric,
        metric_entry,
        metric_names,
        register_metric,
    )
    from lightning_ganeval.metrics.vendi import VendiScore
