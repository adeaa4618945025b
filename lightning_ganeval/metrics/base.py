"""The contract between one metric and the shared evaluation pass.

A metric is a small plain-torch object: it says which features it reads (``network`` and ``layer``), what it
needs from the real data (``real_request``), accumulates one batch at a time (``update``, called with the global
sample indices of the latent bank) and turns its accumulators into logged values (``compute``, a collective
under DDP: every rank calls it). The :class:`~lightning_ganeval.evaluator.Evaluator` owns everything shared:
the latent bank, the generator calls, the conversion to uint8 and one forward per feature network per batch.
Adding a metric is one file with one subclass, plus a line in ``metrics/__init__.py``.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_ganeval.accumulators import FeatureBank
from lightning_ganeval.frechet import GaussianStats

__all__ = [
    "GenerativeMetric",
    "PerSampleMetric",
    "RealData",
    "RealRequest",
    "check_feature_pair",
    "check_int",
    "features_fingerprint",
    "ieee_float32_matmul",
]


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``, else a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return value


def check_feature_pair(real: Tensor, fake: Tensor) -> None:
    """Refuse a ``real`` / ``fake`` pair that is not two 2-D real-valued tensors of one positive width."""
    for name, x in (("real", real), ("fake", fake)):
        if not isinstance(x, Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}.")
        if x.ndim != 2:
            raise ValueError(f"`{name}` must be a 2-D (rows, features) tensor, got shape {tuple(x.shape)}.")
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"`real` and `fake` must have the same feature dimension, got {real.shape[1]} and {fake.shape[1]}."
        )
    if real.shape[1] == 0:
        raise ValueError("`real` and `fake` have 0 features per row; at least 1 is needed.")


@contextlib.contextmanager
def ieee_float32_matmul() -> Iterator[None]:
    """Full-precision float32 matrix products inside the block, whatever the global matmul precision.

    ``torch.set_float32_matmul_precision("high")`` or ``("medium")``, which Lightning suggests on recent GPUs, lets
    float32 products run in TF32 on CUDA and in bfloat16 on oneDNN CPUs (8 to 11 significant bits instead of 24).
    The float32 paths of KID and precision/recall bound their rounding with the float32 unit roundoff, so they
    force IEEE float32 here and restore the caller's settings on exit.
    """
    backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
    saved = [backend.fp32_precision for backend in backends]
    try:
        for backend in backends:
            backend.fp32_precision = "ieee"
        yield
    finally:
        for backend, value in zip(backends, saved, strict=True):
            backend.fp32_precision = value


@dataclass(frozen=True)
class RealRequest:
    """What a metric needs from the real images, in its network's ``layer``.

    Attributes:
        moments: The float64 mean and covariance (FID).
        max_features: Keep up to this many per-sample feature rows (KID, precision/recall); 0 for none.
    """

    moments: bool = False
    max_features: int = 0


@dataclass(frozen=True)
class RealData:
    """Real-side data handed to a metric after the real pass (or loaded from a file).

    Attributes:
        stats: Mean and covariance, when requested.
        features: ``(n, d)`` float32 rows on the CPU, when requested: a seeded uniform sample of the whole real
            set (not its first rows), in order of the sample's priority (any prefix is again a uniform sample).
        source: A short description for messages and provenance.
        num_images: The real images the data were computed from (``None`` when a file does not record it).
        indices: ``(n,)`` int64 global indices of the ``features`` rows in the real data (dataset indices for
            map-style data), to map a row back to its image.
    """

    stats: GaussianStats | None = None
    features: Tensor | None = None
    source: str = ""
    num_images: int | None = None
    indices: Tensor | None = None

    def describe_rows(self) -> str:
        """What a metric compares with, for the log, e.g. ``"1000 real rows, a seeded uniform sample of 50000"``."""
        total = "an unknown number of" if self.num_images is None else str(self.num_images)
        if self.features is not None:
            rows = len(self.features)
            if self.num_images is not None and rows >= self.num_images:
                return f"{rows} real rows (all {total} real images)"
            return f"{rows} real rows, a seeded uniform sample of {total} real images"
        if self.stats is not None:
            where = f" ({self.source})" if self.source and not self.source.endswith("real images") else ""
            return f"the moments of {total} real images{where}"
        return "no real data"


class GenerativeMetric(abc.ABC):
    """One metric over the shared evaluation pass.

    Args:
        name: Prefix of the returned keys (``fid``, ``is``, ...).
        feature_extractor: The feature network; ``None`` for the evaluator's Inception.
        layer: Which output of the network: ``"pool"`` / ``"logits"`` for Inception, ``"features"`` for a network
            that returns one tensor; ``None`` picks the metric's default.
    """

    #: Layer read from the default Inception when ``layer`` is None.
    default_layer: str = "pool"

    def __init__(self, *, name: str, feature_extractor: nn.Module | None = None, layer: str | None = None) -> None:
        self.name = name
        self.feature_extractor = feature_extractor
        self.layer = layer
        self.num_samples = 0

    # ------------------------------------------------------------------------------------- declarations

    def keys(self) -> list[str]:
        """The keys :meth:`compute` returns (besides those of the evaluation itself)."""
        return [self.name]

    def primary_key(self) -> str:
        """The key of the headline value (progress bar, ``last_score``)."""
        return self.name

    def real_request(self) -> RealRequest | None:
        """What the metric needs from real images; ``None`` when it needs none (Inception Score)."""
        return None

    def min_samples(self) -> int:
        """The smallest ``num_samples`` this metric can score."""
        return 2

    def resolved_layer(self) -> str:
        """The layer read from the network: the argument, else the default for Inception, else ``features``."""
        if self.layer is not None:
            return self.layer
        return self.default_layer if self.feature_extractor is None else "features"

    # ---------------------------------------------------------------------------------------- lifecycle

    def set_real(self, real: RealData) -> None:
        """Receive the real-side data (once per fit, before the first :meth:`reset`)."""
        del real

    @abc.abstractmethod
    def reset(self, num_samples: int, device: torch.device) -> None:
        """Prepare empty accumulators for an evaluation of ``num_samples`` samples on ``device``."""

    @abc.abstractmethod
    def update(self, features: Tensor, indices: Tensor) -> None:
        """Add one batch: ``features`` of the metric's layer, ``indices`` their global positions in the bank."""

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """Merge over ranks (a collective: every rank calls it) and return the scores, keyed as :meth:`keys`."""

    def describe(self) -> dict[str, Any]:
        """Settings that change the number (stored with checkpoints to notice a change on resume)."""
        return {"layer": self.resolved_layer()}

    def nan_reasons(self) -> dict[str, str]:
        """Why values of the last :meth:`compute` are NaN, by key, as a sentence fragment (not a collective).

        A subclass that can return NaN sets ``self._nan_reasons`` in :meth:`compute`; the evaluator names the reason
        in its warning (and a generic one for a NaN without a reason).
        """
        return dict(getattr(self, "_nan_reasons", {}))

    def expected_nan(self) -> set[str]:
        """Keys of the last :meth:`compute` that are NaN because the user turned them off (e.g. C_T without test
        rows): their reason is reported, but the evaluator does not warn about them. Set ``self._expected_nan``."""
        return set(getattr(self, "_expected_nan", ()))


def features_fingerprint(features: Tensor) -> str:
    """A short digest of feature rows, to notice a change of the real data on resume."""
    return hashlib.sha256(features.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class PerSampleMetric(GenerativeMetric):
    """A metric that compares per-sample features of both sides (KID, precision/recall).

    The generated rows are kept on the CPU in a :class:`~lightning_ganeval.accumulators.FeatureBank` and gathered on
    every rank, in global sample order, by :meth:`generated_features`; the real rows (``max_real`` rows, a seeded
    uniform sample of the whole real set) come from the real pass. Subclasses check the real rows in
    :meth:`check_real` and score in :meth:`compute`.
    """

    def __init__(self, *, name: str, feature_extractor: nn.Module | None, layer: str | None, max_real: int) -> None:
        super().__init__(name=name, feature_extractor=feature_extractor, layer=layer)
        self.max_real = check_int("max_real", max_real, 2)
        self.real: RealData | None = None
        self.real_fingerprint: str | None = None
        self._bank: FeatureBank | None = None
        self._device = torch.device("cpu")

    def real_request(self) -> RealRequest:
        return RealRequest(max_features=self.max_real)

    def check_real(self, count: int) -> None:
        """Raise a ValueError naming the argument if ``count`` real rows are too few."""

    def set_real(self, real: RealData) -> None:
        self.check_real(0 if real.features is None else len(real.features))
        assert real.features is not None
        self.real = real
        self.real_fingerprint = features_fingerprint(real.features)

    def reset(self, num_samples: int, device: torch.device) -> None:
        if self.real is None or self.real.features is None:
            raise RuntimeError(f"`{self.name}`: set_real() must run before the first evaluation.")
        self.num_samples = num_samples
        self._device = device
        width = self.real.features.shape[1]
        if self._bank is None or self._bank.num_features != width:
            # Every rank knows d from the real features, also one that gets no generated sample.
            self._bank = FeatureBank(num_features=width)
        self._bank.reset()

    def update(self, features: Tensor, indices: Tensor) -> None:
        assert self._bank is not None
        self._bank.update(features, indices)

    def generated_features(self) -> Tensor:
        """Every rank's generated rows in global sample order (a collective: every rank calls it)."""
        assert self._bank is not None
        return self._bank.compute()

    def real_features(self) -> Tensor:
        assert self.real is not None
        assert self.real.features is not None
        return self.real.features
