"""Type stub of ``lightning_ganeval.metrics`` and the one list of its public names, read at run time by
``_lazy.stub_exports`` (see the package root's stub)."""

from lightning_ganeval.metrics.base import GenerativeMetric as GenerativeMetric
from lightning_ganeval.metrics.base import PerSampleMetric as PerSampleMetric
from lightning_ganeval.metrics.base import RealData as RealData
from lightning_ganeval.metrics.base import RealRequest as RealRequest
from lightning_ganeval.metrics.cmmd import CMMD as CMMD
from lightning_ganeval.metrics.fid import FID as FID
from lightning_ganeval.metrics.inception_score import InceptionScore as InceptionScore
from lightning_ganeval.metrics.kid import KID as KID
from lightning_ganeval.metrics.memorization import Memorization as Memorization
from lightning_ganeval.metrics.ppl import PerceptualPathLength as PerceptualPathLength
from lightning_ganeval.metrics.precision_recall import PrecisionRecall as PrecisionRecall
from lightning_ganeval.metrics.registry import MetricEntry as MetricEntry
from lightning_ganeval.metrics.registry import build_metric as build_metric
from lightning_ganeval.metrics.registry import metric_entry as metric_entry
from lightning_ganeval.metrics.registry import metric_names as metric_names
from lightning_ganeval.metrics.registry import register_metric as register_metric
from lightning_ganeval.metrics.vendi import VendiScore as VendiScore
