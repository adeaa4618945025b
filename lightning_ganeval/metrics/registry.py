"""Metrics by name: the one list that the :class:`~lightning_ganeval.evaluator.Evaluator` (``Evaluator(["fid",
"is"], ...)``) and the command line (one subcommand per entry, its options as flags) read.

An entry names its class lazily (``"module:Class"``) and describes itself in plain data: a one-line summary, what it
needs of the real data, the feature networks it can read, and the constructor arguments offered as command-line
flags. This module imports only the standard library, so that the command line lists the metrics and checks its
arguments before torch is imported; :func:`build_metric` imports the metric's module when it builds one.

Adding a metric: its file in ``metrics/`` (a :class:`~lightning_ganeval.metrics.base.GenerativeMetric` subclass) and
one :func:`register_metric` call below (or in your own code, with the class itself, for the Evaluator).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

__all__ = ["MetricEntry", "Option", "build_metric", "metric_entry", "metric_names", "register_metric"]

OPTION_KINDS = ("positive", "non_negative", "float", "choice")


@dataclass(frozen=True)
class Option:
    """A constructor argument of a metric, offered as the command-line flag ``--<name with dashes>``.

    Attributes:
        name: The keyword argument of the metric's constructor.
        kind: ``"positive"`` / ``"non_negative"`` (integers), ``"float"``, or ``"choice"`` (one of ``choices``).
        default: The constructor's default (shown in ``--help``; the flag left out passes nothing).
        help: One line for ``--help``.
        choices: The allowed values of a ``"choice"``.
    """

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in OPTION_KINDS:
            raise ValueError(f"Option {self.name!r}: `kind` must be one of {OPTION_KINDS}, got {self.kind!r}.")
        if (self.kind == "choice") != bool(self.choices):
            raise ValueError(f"Option {self.name!r}: `choices` go with kind 'choice' (and only with it).")

    @property
    def flag(self) -> str:
        """``--subset-size`` for ``subset_size``."""
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class MetricEntry:
    """One registered metric.

    Attributes:
        name: The name (``Evaluator(["fid"])``, ``lightning-ganeval fid``); also the metric's default key prefix.
        target: ``"package.module:Class"``, imported by :meth:`load`, or the class itself.
        summary: One line for help texts.
        real: What the metric compares with: ``None`` (nothing: IS, Vendi), ``"moments"`` (a mean and covariance,
            which a ``.npz`` statistics file can stand for) or ``"features"`` (per-sample rows of real images).
        networks: The feature networks it can read on the command line (the first is the default).
        options: Constructor arguments offered as command-line flags.
        description: A longer text for the command's ``--help`` (default: ``summary``).
        inputs: The names of its image sets on the command line (default ``A``, and ``B`` with real data).
    """

    name: str
    target: str | type
    summary: str
    real: str | None = None
    networks: tuple[str, ...] = ("inception", "dinov2", "clip")
    options: tuple[Option, ...] = ()
    description: str | None = None
    inputs: tuple[str, ...] = ()

    def load(self) -> type:
        """The metric's class (imports its module: torch and the metric's dependencies)."""
        if not isinstance(self.target, str):
            return self.target
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]

    def build(self, **options: Any) -> Any:
        """An instance with ``options`` as keyword arguments (the constructor checks them)."""
        return self.load()(**options)


_REGISTRY: dict[str, MetricEntry] = {}


def register_metric(
    name: str,
    target: str | type,
    *,
    summary: str,
    real: str | None = None,
    networks: tuple[str, ...] = ("inception", "dinov2", "clip"),
    options: tuple[Option, ...] = (),
    description: str | None = None,
    inputs: tuple[str, ...] = (),
) -> MetricEntry:
    """Register a metric under ``name`` (see :class:`MetricEntry` for the arguments).

    Raises:
        ValueError: ``name`` is taken, or ``real`` is not one of ``None``, ``"moments"``, ``"features"``.
    """
    if name in _REGISTRY:
        raise ValueError(f"A metric named {name!r} is registered already ({_REGISTRY[name].target}).")
    if real not in (None, "moments", "features"):
        raise ValueError(f"`real` must be None, 'moments' or 'features', got {real!r}.")
    inputs = tuple(inputs) or (("A", "B") if real else ("A",))
    entry = MetricEntry(name, target, summary, real, tuple(networks), tuple(options), description, inputs)
    _REGISTRY[name] = entry
    return entry


def metric_names() -> list[str]:
    """The registered names, in registration order."""
    return list(_REGISTRY)


def metric_entry(name: str) -> MetricEntry:
    """The entry of ``name``.

    Raises:
        KeyError: No metric of that name (the message lists the registered ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"No metric named {name!r}; registered: {', '.join(_REGISTRY)}.") from None


def build_metric(name: str, **options: Any) -> Any:
    """A new metric unit by name, e.g. ``build_metric("kid", subset_size=100)``.

    Raises:
        KeyError: No metric of that name.
        TypeError: An option the metric's constructor does not take (the message lists those it takes).
        ValueError: A bad option value (from the constructor).
    """
    cls = metric_entry(name).load()
    accepted = inspect.signature(cls).parameters
    unknown = [key for key in options if key not in accepted]
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        raise TypeError(
            f"Metric {name!r} ({cls.__name__}) takes no option {', '.join(map(repr, unknown))}; it takes "
            f"{', '.join(k for k in accepted if k != 'self')}."
        )
    return cls(**options)


# ------------------------------------------------------------------------------------------- the metrics
_M = "lightning_ganeval.metrics"

register_metric("fid", f"{_M}.fid:FID", summary="Fréchet distance between A and B", real="moments")
register_metric(
    "kid",
    f"{_M}.kid:KID",
    summary="kernel Inception distance between A and B",
    real="features",
    options=(
        Option("subsets", "positive", 100, "random subsets"),
        Option(
            "subset_size",
            "positive",
            1000,
            "distinct images per subset and side (as KIDCallback); more than a folder holds is refused, not capped",
        ),
        Option("seed", "non_negative", 0, "seed of the subset draws"),
    ),
)
register_metric(
    "is",
    f"{_M}.inception_score:InceptionScore",
    summary="Inception Score of A",
    networks=("inception",),
    options=(Option("splits", "positive", 10, "splits, in file order"),),
)
register_metric(
    "pr",
    f"{_M}.precision_recall:PrecisionRecall",
    summary="precision, recall, density and coverage of A against B",
    real="features",
    options=(Option("k", "positive", 3, "k-th nearest neighbour radius"),),
)
register_metric(
    "cmmd",
    f"{_M}.cmmd:CMMD",
    summary="CMMD between A and B (CLIP embeddings)",
    real="features",
    networks=("clip", "inception", "dinov2"),
    options=(
        Option(
            "estimator",
            "choice",
            "biased",
            "biased: the reference code's V-statistic; unbiased: the U-statistic",
            ("biased", "unbiased"),
        ),
    ),
)
register_metric(
    "vendi",
    f"{_M}.vendi:VendiScore",
    summary="Vendi score (diversity) of A",
)
register_metric(
    "memorization",
    f"{_M}.memorization:Memorization",
    summary="does GENERATED copy TRAIN? AuthPct, C_T, memorised fraction, nearest-training grid",
    real="features",
    inputs=("GENERATED", "TRAIN"),
    options=(
        Option("test_fraction", "float", 0.2, "without --test: share of TRAIN split off for C_T"),
        Option("split_seed", "non_negative", 0, "seed of that split"),
        Option("quantile", "float", 0.01, "memorised-fraction threshold quantile"),
        Option("nearest", "non_negative", 8, "generated images in the grid"),
        Option("neighbours", "positive", 3, "training images beside each"),
    ),
    description="AuthPct (dgm-eval), C_T (Meehan et al. 2020, dgm-eval constants; needs held-out real images: --test,"
    " or a seeded split of TRAIN) and the memorised fraction (generated images at or below the --quantile of the"
    " training images' own nearest-neighbour distances), plus a PNG grid of the generated images closest to TRAIN,"
    " each beside its nearest training images.",
)
