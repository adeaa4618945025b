"""Type stub of the package root and the one list of its public API: ``__init__.py`` reads the imports below at
run time (``_lazy.stub_exports``) for ``__all__`` and the names it loads on first access; type checkers and IDEs
read them instead of ``__getattr__``."""

from lightning_ganeval._version import __version__ as __version__
from lightning_ganeval.callbacks import CMMDCallback as CMMDCallback
from lightning_ganeval.callbacks import FIDCallback as FIDCallback
from lightning_ganeval.callbacks import InceptionScoreCallback as InceptionScoreCallback
from lightning_ganeval.callbacks import KIDCallback as KIDCallback
from lightning_ganeval.callbacks import MemorizationCallback as MemorizationCallback
from lightning_ganeval.callbacks import PPLCallback as PPLCallback
from lightning_ganeval.callbacks import PrecisionRecallCallback as PrecisionRecallCallback
from lightning_ganeval.callbacks import VendiScoreCallback as VendiScoreCallback
from lightning_ganeval.clip import CLIPExtractor as CLIPExtractor
from lightning_ganeval.dinov2 import DINOv2Extractor as DINOv2Extractor
from lightning_ganeval.evaluator import EvaluationResult as EvaluationResult
from lightning_ganeval.evaluator import EvaluationWarning as EvaluationWarning
from lightning_ganeval.evaluator import Evaluator as Evaluator
from lightning_ganeval.inception import InceptionExtractor as InceptionExtractor
from lightning_ganeval.inception import get_extractor as get_extractor
from lightning_ganeval.lpips import LPIPSVGG16 as LPIPSVGG16
from lightning_ganeval.metrics import CMMD as CMMD
from lightning_ganeval.metrics import FID as FID
from lightning_ganeval.metrics import KID as KID
from lightning_ganeval.metrics import GenerativeMetric as GenerativeMetric
from lightning_ganeval.metrics import InceptionScore as InceptionScore
from lightning_ganeval.metrics import Memorization as Memorization
from lightning_ganeval.metrics import PerceptualPathLength as PerceptualPathLength
from lightning_ganeval.metrics import PerSampleMetric as PerSampleMetric
from lightning_ganeval.metrics import PrecisionRecall as PrecisionRecall
from lightning_ganeval.metrics import RealData as RealData
from lightning_ganeval.metrics import RealRequest as RealRequest
from lightning_ganeval.metrics import VendiScore as VendiScore
from lightning_ganeval.pixel_space import PixelSpace as PixelSpace
from lightning_ganeval.stats_files import load_stats as load_stats
from lightning_ganeval.stats_files import save_stats as save_stats
from lightning_ganeval.weights import WeightsError as WeightsError
from lightning_ganeval.weights import resolve_weights as resolve_weights
