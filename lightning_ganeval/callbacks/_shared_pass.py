"""The shared pass: the metric callbacks of one Trainer with equal sampling settings, and their one Evaluator.

Callbacks find each other through ``trainer.callbacks`` when they are set up (:func:`join_shared_pass`): no
registry outside the Trainer, so two Trainers in one process, or one after the other, never share a pass. The
group samples the generator once per evaluation and runs each distinct feature network once on the samples; it
prepares the pixel space, the real data of every member and a pre-flight batch once per fit.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_ganeval.callbacks._sample_fns import describe_function, function_key, provable
from lightning_ganeval.distributed import agree
from lightning_ganeval.evaluator import EvaluationWarning, Evaluator
from lightning_ganeval.images import to_uint8_rgb
from lightning_ganeval.networks import network_device
from lightning_ganeval.pixel_space import PixelSpace
from lightning_ganeval.real_cache import infer_real_space
from lightning_ganeval.real_pass import prepare_real_data
from lightning_ganeval.sampling import check_generated, preserved_module_state

if TYPE_CHECKING:
    from lightning_ganeval.callbacks.base import _GenerativeMetricCallback

__all__ = ["join_shared_pass"]


def _all_ranks(trainer: pl.Trainer, fn: Callable[[], Any], what: str) -> Any:
    """Run ``fn`` on every rank; if it raises on any rank, raise on every rank (instead of a hang)."""
    error: Exception | None = None
    result = None
    try:
        result = fn()
    except Exception as err:  # re-raised by `agree` once every rank knows
        error = err
    agree(error, world_size=trainer.world_size, message=f"{what} failed on another process; see its traceback.")
    return result


def agreed_real_space(trainer: pl.Trainer, source: Any, **kwargs: Any) -> tuple[PixelSpace, str]:
    """:func:`~lightning_ganeval.real_cache.infer_real_space` of ``source`` with rank 0's conclusion on every rank;
    a failure on any rank stops every rank. ``kwargs`` go to ``infer_real_space``."""
    inferred = _all_ranks(trainer, lambda: infer_real_space(source, **kwargs), "Inferring the pixel space")
    return trainer.strategy.broadcast(inferred, src=0)


@contextlib.contextmanager
def _naming_the_side(side: str, what: str) -> Iterator[None]:
    """Say which side (generated or real images) a TypeError/ValueError is about, unless it already does."""
    try:
        yield
    except (TypeError, ValueError) as err:
        if re.search(rf"\b{side}\b", str(err), flags=re.IGNORECASE):
            raise
        raise type(err)(f"Checking the {side} images ({what}): {err}") from err


class _SharedEvaluation:
    """The callbacks with equal sampling settings in one Trainer, and their one :class:`Evaluator`."""

    def __init__(self, trainer: pl.Trainer, key: tuple[Any, ...]) -> None:
        # A weak reference: the Trainer holds the callbacks, which hold their pass.
        self.trainer = weakref.ref(trainer)
        self.key = key  # the sampling settings the members share (see `_sampling_key`)
        self.members: list[_GenerativeMetricCallback] = []
        self.evaluator: Evaluator | None = None
        self.prepared_for: object | None = None
        self.token: tuple[int, int] | None = None
        self.results: dict[str, Any] = {}  # this evaluation's result per scored weights (averaged / current)
        self.space: PixelSpace | None = None
        self.space_reason: str | None = None  # what the space was inferred from; None when declared

    @property
    def owner(self) -> _GenerativeMetricCallback:
        return self.members[0]

    def describe(self) -> str:
        return "/".join(m.name for m in self.members)

    # ------------------------------------------------------------------------------------------ per fit

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Once per fit: pixel space, real data for every member, a pre-flight batch; on every rank together."""
        if self.prepared_for is trainer.fit_loop and self.evaluator is not None:
            return
        owner = self.owner
        inception = next((m._extractor for m in self.members if m._extractor is not None), None)
        self.space_reason = None
        self.space = owner._space or self._infer_space(trainer)
        self.evaluator = Evaluator(
            [m._metric for m in self.members],
            num_samples=owner.num_samples,
            latent_shape=owner._resolved_latent_shape,
            batch_size=owner.batch_size,
            seed=owner.seed,
            space=self.space,
            inception=inception,
            nonfinite="exclude",
            # The evaluator's warnings name what the callbacks log and the arguments they take.
            wording={
                "clamped": ", ".join(f"`{m.name}_clamped`" for m in self.members),
                "nonfinite": ", ".join(f"`{m.name}_nonfinite`" for m in self.members),
                "space": "`normalize=`"
                if owner._space_argument() == "normalize"
                else "`value_range=` (or `normalize=`)",
            },
        )
        for source, members in self._real_sources(trainer):
            _all_ranks(trainer, lambda s=source, ms=members: self._prepare_real(trainer, s, ms), "The real pass")
        _all_ranks(trainer, lambda: self._preflight(trainer, pl_module), "The pre-flight check")
        self.prepared_for = trainer.fit_loop
        self.token = None

    def _infer_space(self, trainer: pl.Trainer) -> PixelSpace:
        member = next((m for m in self.members if m._wants_real_loader()), None)
        source = member._real_loader(trainer) if member is not None else None
        compares_with_a_file = any(m._metric.real_request() is not None for m in self.members)
        if source is None and not compares_with_a_file and _is_loader(trainer.train_dataloader):
            # Inception Score alone: the generator imitates the training data, so it shares their space.
            source = trainer.train_dataloader
        if source is None:
            # A statistics file has no pixels to look at: the documented default.
            space = PixelSpace.from_value_range(-1.0, 1.0)
            rank_zero_info(
                f"lightning_ganeval: {self.describe()} has no real images to look at; generated images are read as"
                f" {space.describe()} (the default). Pass `value_range=` or `normalize=` to declare it."
            )
            return space
        space, reason = agreed_real_space(
            trainer, source, image_fn=getattr(member, "real_image_fn", None), num_real=getattr(member, "num_real", None)
        )
        self.space_reason = reason
        rank_zero_info(
            f"lightning_ganeval: inferred the pixel space {space.describe()} from {reason}; generated images are read"
            f" in the same space ({self.describe()}). Pass `value_range=` or `normalize=` to declare it."
        )
        return space

    def _real_sources(self, trainer: pl.Trainer) -> list[tuple[Any, list[_GenerativeMetricCallback]]]:
        """Members grouped by real data and real-side settings: one real pass per group."""
        sources: dict[tuple[Any, ...], tuple[Any, list[_GenerativeMetricCallback]]] = {}
        for member in self.members:
            if member._metric.real_request() is None:
                continue
            real = member._real_source(trainer)
            sources.setdefault((id(real), member._real_settings_key()), (real, []))[1].append(member)
        return list(sources.values())

    def _prepare_real(self, trainer: pl.Trainer, real: Any, members: list[Any]) -> None:
        first = members[0]
        wanting = [(m._network(), m._metric) for m in members]
        names = "/".join(m.name for m in members)
        bar = first._progress_bar(trainer, total=None, desc=f"Real data for {names}", unit="img")

        def progress(done: int, total: int | None) -> None:
            bar.update(done - bar.n)

        with bar, _naming_the_side("real", f"real data of {names}"):
            results = prepare_real_data(
                real,
                wanting,
                space=first._real_space or self.space,
                inferred_from=None if first._real_space is not None else self.space_reason,
                image_fn=getattr(first, "real_image_fn", None),
                num_real=getattr(first, "num_real", None),
                cache_dir=getattr(first, "cache_dir", None),
                progress=None if bar.disable else progress,
            )
        for member in members:
            member._metric.set_real(results[member._metric])
            member._on_real_data(trainer)

    def _preflight(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Run the generator on 2 latents of the bank and check what it returns, before any training step."""
        owner = self.owner
        assert self.evaluator is not None
        assert self.space is not None
        sample, source = owner._sampler(pl_module)
        latents = self.evaluator.bank.shard(0, 1)[0].latents[:2].to(pl_module.device)
        precision = trainer.precision_plugin
        with preserved_module_state(pl_module), precision.predict_step_context():
            output = sample(precision.convert_input(latents))
        with _naming_the_side("generated", f"a pre-flight batch of {source}"):
            images = check_generated(output, len(latents), source=source)
            converted = to_uint8_rgb(images, self.space, side="generated", argument=owner._space_argument())
            if not bool(converted.finite.any()):
                raise ValueError(
                    f"Every generated image of the pre-flight batch ({source} on {len(latents)} latents of the bank)"
                    " holds NaN or Inf: the generator produces no finite image, so no metric could be computed."
                )

    # ------------------------------------------------------------------------------------ per evaluation

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, weights: str = "current") -> Any:
        token = (trainer.current_epoch, trainer.global_step)
        if self.token != token:
            self.token, self.results = token, {}
        if weights in self.results:
            return self.results[weights]
        owner = self.owner
        assert self.evaluator is not None
        sample, source = owner._sampler(pl_module)
        precision = trainer.precision_plugin
        wanted = max(m._log_images for m in self.members) if trainer.is_global_zero else 0
        total = sum(len(b.indices) for b in self.evaluator.bank.shard(trainer.global_rank, trainer.world_size))
        bar = owner._progress_bar(trainer, total=total, desc=f"Evaluating {self.describe()}", unit="img")

        def call(generate: Callable[[Tensor], Any], latents: Tensor) -> Any:
            # Autocast for "*-mixed", the low default dtype for "*-true": the generator runs as in training.
            with precision.predict_step_context():
                return generate(precision.convert_input(latents))

        with bar:
            result = self.evaluator.evaluate(
                sample,
                module=pl_module,
                rank=trainer.global_rank,
                world_size=trainer.world_size,
                keep_images=wanted,
                progress=lambda done: bar.update(done - bar.n),
                source=source if weights == "current" else f"{source} on the averaged weights",
                generator_device=network_device(pl_module),  # an averaged copy may live elsewhere
                call=call,
                warn=False,
            )
        self.results[weights] = result
        # Once per evaluation of the group, not once per callback: four callbacks sharing the pass warn once.
        when = f"epoch {trainer.current_epoch}"
        if owner.every_n_train_steps is not None:
            when += f", step {trainer.global_step}"
        which = "" if weights == "current" else f", {weights} weights"
        for message in result.warnings:
            rank_zero_warn(
                f"lightning_ganeval, {when} ({self.describe()}{which}): {message}", category=EvaluationWarning
            )
        return result


def _is_loader(loader: Any) -> bool:
    return isinstance(loader, DataLoader)


def join_shared_pass(callback: _GenerativeMetricCallback, trainer: pl.Trainer) -> _SharedEvaluation:
    """The shared pass of ``callback`` in this fit: that of an earlier callback of ``trainer.callbacks`` with equal
    sampling settings, or a new one (in ``setup``, which Lightning calls in the order of ``trainer.callbacks``)."""
    if callback._group is not None and callback in callback._group.members:
        callback._group.members.remove(callback)  # a pass of an earlier fit that ended without teardown
    groups = _passes_of(trainer, callback)
    key = callback._sampling_key()
    group = next((g for g in groups if g.key == key), None)
    if group is None:
        # The key's last entry is the Inception network. A callback that reads none (it has its own
        # `feature_extractor`) shares the samples of a group with any Inception, and an Inception callback
        # joins a group that has none yet; otherwise the generator would run once more per batch.
        group = next((g for g in groups if g.key[:-1] == key[:-1] and None in (g.key[-1], key[-1])), None)
        if group is None:
            group = _SharedEvaluation(trainer, key)
        elif key[-1] is not None:
            group.key = key
    if callback not in group.members:
        group.members.append(callback)
    group.evaluator = None  # rebuilt in on_train_start with every member
    _warn_if_split_by_sample_fn(callback, group, groups)
    return group


def _passes_of(trainer: pl.Trainer, callback: _GenerativeMetricCallback) -> list[_SharedEvaluation]:
    """The shared passes the other callbacks of ``trainer`` joined in this fit, in the order of the callbacks."""
    passes: list[_SharedEvaluation] = []
    for other in trainer.callbacks:
        group = getattr(other, "_group", None) if other is not callback else None
        if isinstance(group, _SharedEvaluation) and group.trainer() is trainer and group not in passes:
            passes.append(group)
    return passes


def _warn_if_split_by_sample_fn(
    callback: _GenerativeMetricCallback, group: _SharedEvaluation, groups: list[_SharedEvaluation]
) -> None:
    """Warn when another group differs from ours only by a ``sample_fn`` that could not be proven equal."""
    mine, rest = function_key(callback.sample_fn), callback._sampling_key(without_sample_fn=True)
    for other in groups:
        theirs = function_key(other.owner.sample_fn)
        if other is group or mine is None or theirs is None:
            continue
        if provable(mine) and provable(theirs):
            continue  # different code or different captured objects: meant to differ
        other_rest = other.owner._sampling_key(without_sample_fn=True)
        if other_rest[:-1] != rest[:-1]:
            continue
        if None not in (other_rest[-1], rest[-1]) and other_rest[-1] != rest[-1]:
            continue  # different Inception settings: separate passes anyway (the last entry)
        rank_zero_warn(
            f"`{type(callback).__name__}(name={callback.name!r})` and {other.describe()} have equal sampling settings"
            f" but different `sample_fn` objects ({describe_function(callback.sample_fn)} and"
            f" {describe_function(other.owner.sample_fn)}) that cannot be shown to compute the same thing, so every"
            " evaluation runs the generator and the feature network once more for each. If they sample alike, pass"
            " the same function object to every callback (define it once, e.g. `def sample(pl_module, z): ...`).",
            category=UserWarning,
        )
