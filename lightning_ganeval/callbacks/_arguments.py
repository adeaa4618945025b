"""The keyword arguments the metric callbacks share, written once, and the flat signatures built from them.

A callback declares its own arguments and takes the shared ones as ``**kwargs: Unpack[RealMetricArguments]`` (or
another of the typed dicts below). Type checkers then check every shared argument at the call (PEP 692), and
:func:`spell_out` gives the class the flat signature a hand-written one would have, every argument with its type
and default: what ``inspect.signature``, ``help()``, IDEs and LightningCLI/jsonargparse (``--help``,
``--print_config``, YAML files) read. An argument's default is written beside its type as
``Annotated[type, Default(value)]``; type checkers read the type, :func:`spell_out` the default.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, TypedDict, get_type_hints

import lightning.pytorch as pl
from torch import Tensor, nn
from typing_extensions import Unpack, get_args, get_origin  # noqa: UP035 (the origin of Unpack[...] is typing_extensions.Unpack)

from lightning_ganeval.callbacks._checks import check_callable
from lightning_ganeval.pixel_space import PixelSpace

__all__ = [
    "ClipMetricArguments",
    "Default",
    "FeatureMetricArguments",
    "InceptionMetricArguments",
    "RealMetricArguments",
    "SampleFn",
    "ScheduleArguments",
    "check_names",
    "pixel_space",
    "resolve_callable",
    "shared_defaults",
    "spell_out",
]

SampleFn = Callable[["pl.LightningModule", Tensor], Tensor]


class Default:
    """The default of a shared argument: ``Annotated[int, Default(64)]``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Default({self.value!r})"


class ScheduleArguments(TypedDict, total=False):
    """What every metric callback takes, PPLCallback included: when it evaluates, how it samples and reports."""

    batch_size: Annotated[int, Default(64)]
    every_n_epochs: Annotated[int | None, Default(None)]
    every_n_train_steps: Annotated[int | None, Default(None)]
    model_weights: Annotated[str, Default("averaged")]
    latent_shape: Annotated[int | Sequence[int] | None, Default(None)]
    sample_fn: Annotated[SampleFn | str | None, Default(None)]
    value_range: Annotated[tuple[float, float] | None, Default(None)]
    normalize: Annotated[tuple[Any, Any] | None, Default(None)]
    seed: Annotated[int, Default(0)]
    nonfinite: Annotated[str, Default("exclude")]
    progress: Annotated[bool, Default(True)]


class _SampleCount(TypedDict, total=False):
    num_samples: Annotated[int, Default(10_000)]


class MetricArguments(_SampleCount, ScheduleArguments, total=False):
    """The callbacks of the shared pass of ``num_samples`` generated images."""


class _InceptionArguments(TypedDict, total=False):
    inception_weights: Annotated[str | os.PathLike[str] | None, Default(None)]
    resize: Annotated[str, Default("tf1")]
    fast: Annotated[bool, Default(False)]


class _FeatureArguments(TypedDict, total=False):
    feature_extractor: Annotated[nn.Module | None, Default(None)]


class _RealArguments(TypedDict, total=False):
    real_value_range: Annotated[tuple[float, float] | None, Default(None)]
    real_normalize: Annotated[tuple[Any, Any] | None, Default(None)]
    real_image_fn: Annotated[Callable[[Any], Tensor] | str | None, Default(None)]
    num_real: Annotated[int | None, Default(None)]
    cache_dir: Annotated[str | os.PathLike[str] | None, Default(None)]


class InceptionMetricArguments(MetricArguments, _InceptionArguments, total=False):
    """A metric of Inception features (InceptionScoreCallback)."""


class FeatureMetricArguments(InceptionMetricArguments, _FeatureArguments, total=False):
    """A metric of Inception features or ``feature_extractor``'s (VendiScoreCallback)."""


class RealMetricArguments(FeatureMetricArguments, _RealArguments, total=False):
    """A metric that compares with real images (FID, KID, precision/recall, memorisation)."""


class ClipMetricArguments(MetricArguments, _FeatureArguments, _RealArguments, total=False):
    """A metric of CLIP features that compares with real images (CMMDCallback): no Inception arguments."""


def _arguments_of(typed_dict: type) -> dict[str, tuple[Any, Any]]:
    """``{name: (type, default)}`` of a typed dict of :class:`Default`-annotated arguments."""
    arguments = {}
    for name, hint in get_type_hints(typed_dict, include_extras=True).items():
        kind, *metadata = get_args(hint)
        (default,) = (m.value for m in metadata if isinstance(m, Default))
        arguments[name] = (kind, default)
    return arguments


def shared_defaults() -> dict[str, Any]:
    """The default of every shared argument (that of the argument a callback lacks, for the code it shares)."""
    return {name: default for name, (_, default) in _arguments_of(RealMetricArguments).items()}


def spell_out(init: Callable[..., None]) -> inspect.Signature | None:
    """``init``'s signature with ``**kwargs: Unpack[SomeArguments]`` replaced by the arguments it stands for.

    The arguments ``init`` declares come first, then the shared ones it does not declare, each keyword-only with
    its type and default. None when ``init`` takes no such ``**kwargs`` (nothing to spell out).
    """
    signature = inspect.signature(init)
    parameters = list(signature.parameters.values())
    rest = next((p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    if rest is None or rest.annotation is inspect.Parameter.empty:
        return None
    try:
        hints = get_type_hints(init, include_extras=True)
    except Exception:  # e.g. a user's subclass with hints only importable under TYPE_CHECKING: left as written
        return None
    unpacked = hints.get(rest.name)
    if get_origin(unpacked) is not Unpack:
        return None
    (typed_dict,) = get_args(unpacked)
    own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in parameters if p is not rest]
    declared = {p.name for p in own}
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, (kind, default) in _arguments_of(typed_dict).items()
        if name not in declared
    ]
    return signature.replace(parameters=[*own, *shared])


def check_names(cls: type, given: Mapping[str, Any], accepted: Sequence[str]) -> None:
    """Refuse an argument ``cls`` does not take, as Python would for a hand-written signature (plus a hint)."""
    for name in given:
        if name not in accepted:
            close = difflib.get_close_matches(name, accepted, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}.{hint}")


def resolve_callable(name: str, value: Any) -> Any:
    """A callable, or an import path ``"package.module.function"`` to one (LightningCLI / YAML configs)."""
    if isinstance(value, str):
        module, _, attribute = value.rpartition(".")
        if not module:
            raise TypeError(
                f"`{name}` must be a callable, an import path 'package.module.function' to one, or None; got the"
                f" string {value!r}."
            )
        try:
            value = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(f"`{name}` names {value!r}, which cannot be imported: {err}") from err
    return check_callable(name, value)


def pixel_space(prefix: str, value_range: Any, normalize: Any) -> PixelSpace | None:
    """The declared pixel space of ``<prefix>value_range`` / ``<prefix>normalize``, or None when neither is given."""
    if value_range is None and normalize is None:
        return None
    return PixelSpace.parse(value_range=value_range, normalize=normalize, argument_prefix=prefix)
