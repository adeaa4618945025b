"""The Lightning layer shared by every callback of the shared pass: setup, networks, evaluation, logging.

A metric callback is a thin class: it declares its own arguments (the shared ones are in ``_arguments.py``),
builds one :class:`~lightning_ganeval.metrics.base.GenerativeMetric` and declares its logged keys. In ``setup``,
callbacks with equal sampling settings join one shared pass (``_shared_pass.py``), which owns a plain-torch
:class:`~lightning_ganeval.evaluator.Evaluator`: the generator is sampled once per evaluation and each distinct
feature network runs once on the samples, whatever the number of callbacks. Scheduling, state and the logging of
values are in ``_scheduled.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import lightning.pytorch as pl
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_ganeval.callbacks._arguments import SampleFn
from lightning_ganeval.callbacks._checks import check_bool, check_choice, check_int, check_path
from lightning_ganeval.callbacks._compat import lightning_classes
from lightning_ganeval.callbacks._sample_fns import function_key
from lightning_ganeval.callbacks._scheduled import _ScheduledCallback, rank_zero_first
from lightning_ganeval.callbacks._shared_pass import _SharedEvaluation, join_shared_pass
from lightning_ganeval.callbacks._state_keys import install_trainer_check
from lightning_ganeval.callbacks.grids import log_grid
from lightning_ganeval.evaluator import CLAMPED_WARNING_FRACTION
from lightning_ganeval.inception import RESIZE_MODES, get_extractor
from lightning_ganeval.metrics.base import GenerativeMetric
from lightning_ganeval.networks import network_identity
from lightning_ganeval.pixel_space import PixelSpace
from lightning_ganeval.sampling import isolated_rng
from lightning_ganeval.weights import InceptionWeights, resolve_weights

__all__ = ["CLAMPED_WARNING_FRACTION", "SampleFn"]


def _lacks_forward(module: nn.Module) -> bool:
    """``forward`` is torch's or LightningModule's placeholder (which only raises NotImplementedError)."""
    forward = getattr(type(module), "forward", None)
    placeholders = (nn.Module, *lightning_classes("core", "LightningModule"))
    return forward is None or any(forward is getattr(base, "forward", None) for base in placeholders)


# Attribute names GAN code gives its generator: generator, gen, G, netG, g_ema, ema_generator, decoder, ...
_GENERATOR_NAME = re.compile(r"(?i)^(g|netg|g_?ema|gen|.*generator.*|.*_g|decoder)$")


def _generator_like_children(module: nn.Module) -> list[str]:
    """Names of the submodules that look like a generator, most likely first (``generator`` before ``netG``)."""
    names = [name for name, _ in module.named_children() if _GENERATOR_NAME.match(name)]
    return sorted(names, key=lambda name: (name.lower() != "generator", "ema" in name.lower(), names.index(name)))


class _GenerativeMetricCallback(_ScheduledCallback):
    """Configuration, scheduling, the shared pass, state and logging of the metric callbacks."""

    # Attributes that only exist while fitting; dropped when the callback is pickled (ddp_spawn) or saved.
    _RUNTIME_ATTRIBUTES: ClassVar[tuple[str, ...]] = ("_extractor", "_group", "_monitors", "_weights", "_averaging")

    def __init__(self, **arguments: Any) -> None:
        """The shared arguments (:mod:`._arguments`), after the subclass has set its own."""
        values = self._init_arguments(arguments)
        self.num_samples = values["num_samples"]  # checked below, against the metric's minimum
        self.inception_weights = check_path("inception_weights", values["inception_weights"])
        self.resize = check_choice("resize", values["resize"], RESIZE_MODES)
        self.fast = check_bool("fast", values["fast"])
        self._log_images = check_int("log_images", values.get("log_images", 0), 0)
        feature_extractor = values["feature_extractor"]
        if feature_extractor is not None and not isinstance(feature_extractor, nn.Module):
            raise TypeError(
                "`feature_extractor` must be a torch.nn.Module mapping uint8 N x 3 x H x W images to N x d features,"
                f" or None for Inception; got {type(feature_extractor).__name__}."
            )
        self.feature_extractor = feature_extractor
        self._init_real(values)
        self._check_arguments()
        self._metric = self._build_metric()
        check_int("num_samples", self.num_samples, self._metric.min_samples())
        # Before the Trainer is built: two callbacks with one state key are refused with a message naming `name=`.
        install_trainer_check()

        # Set by `load_state_dict` before a fit (a resume by hand): that fit continues the restored history.
        self._restored_before_fit = False
        self._grid_failures: set[int] = set()  # ids of the loggers that could not take a grid in this fit
        self._extractor: nn.Module | None = None
        self._weights: InceptionWeights | None = None
        self._group: _SharedEvaluation | None = None
        self._resolved_latent_shape: tuple[int, ...] | None = None

    # -------------------------------------------------------------------------------- subclass interface

    def _build_metric(self) -> GenerativeMetric:
        raise NotImplementedError

    def _init_real(self, values: Mapping[str, Any]) -> None:
        """Check and set the real-data arguments, for a callback that compares with real images."""

    def _check_arguments(self) -> None:
        """Checks across a subclass's own arguments and the shared ones (``subset_size <= num_samples``)."""

    def _logged_keys(self) -> list[str]:
        keys = [*self._metric.keys(), f"{self.name}_nonfinite", f"{self.name}_clamped"]
        if self.model_weights == "both":
            metric_keys = self._metric.keys()
            keys += [f"{key}_current" for key in metric_keys]
        return keys

    @property
    def _real_space(self) -> PixelSpace | None:
        return None

    def _wants_real_loader(self) -> bool:
        return False

    def _real_loader(self, trainer: pl.Trainer) -> Any:
        return None

    def _real_source(self, trainer: pl.Trainer) -> Any:
        return None

    def _real_settings_key(self) -> tuple[Any, ...]:
        return ()

    def _on_real_data(self, trainer: pl.Trainer) -> None:
        """Called on every rank once the metric has its real data (once per fit)."""

    def _space_argument(self) -> str:
        return "normalize" if self.normalize is not None else "value_range"

    def _uses_inception(self) -> bool:
        return self.feature_extractor is None

    def _network(self) -> nn.Module:
        network = self.feature_extractor if self.feature_extractor is not None else self._extractor
        assert network is not None
        return network

    # ----------------------------------------------------------------------------------------- state

    # The checkpointed settings keep their key of earlier versions, so that old checkpoints still compare.
    _SETTINGS_KEY: ClassVar[str] = "sampling"
    _SETTINGS_WORD: ClassVar[str] = "sampling settings"

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Before a fit (by hand) or right after its `setup` (`ckpt_path=`): either way that fit resumes.
        self._restored_before_fit = True
        super().load_state_dict(state_dict)

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Lightning silently skips callbacks without saved state; a renamed callback would restart its history.
        if self.state_key not in checkpoint.get("callbacks", {}):
            rank_zero_warn(
                f"The checkpoint has no state for `{self.state_key}`: its `history` starts empty. Was it saved with"
                " another `name`, or without this callback?",
                category=UserWarning,
            )

    def _settings(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "seed": self.seed,
            "latent_shape": list(self._resolved_latent_shape or self.latent_shape or []) or None,
            "pixel_space": None if self._space is None else self._space.describe(),
            "resize": self.resize,
            "fast": self.fast,
            **{k: v for k, v in self._metric.describe().items() if isinstance(v, (int, float, str, bool))},
        }

    def _pickled_metric(self) -> GenerativeMetric:
        # A fresh metric: its real data (up to N x d features), accumulators and reference root stay behind.
        return self._build_metric()

    # ----------------------------------------------------------------------------------------- hooks

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._check_unique_keys(trainer)
        # Before anything is loaded or read: a module without `forward` would otherwise fail only in the
        # pre-flight, after the whole real pass, with torch's bare NotImplementedError.
        self._check_generator(pl_module)
        self._resolved_latent_shape = self._resolve_latent_shape(pl_module)
        device = trainer.strategy.root_device
        # Building networks draws from the global RNG (parameter initialisation before the weights are loaded):
        # training's random stream must not notice.
        with isolated_rng():
            if self._uses_inception() or self._needs_inception_anyway():
                self._weights = self._resolve_weights_rank_zero_first(trainer)
                self._extractor = get_extractor(device, weights=self._weights, resize=self.resize, fast=self.fast)
            if self.feature_extractor is not None:
                self.feature_extractor.to(device)
        self._metric.feature_extractor = self.feature_extractor
        if not self._restored_before_fit:
            # A callback reused for another fit starts a new curve; a resume (`ckpt_path=`) restores the old one
            # after this hook, through `load_state_dict`.
            self._start_new_history()
        self._restored_before_fit = False
        self._evaluated_epoch = None
        self._evaluated_step = None
        self._grid_failures = set()
        self._group = join_shared_pass(self, trainer)

    def _start_new_history(self) -> None:
        """Forget the scores (and what else the checkpointed state holds) of an earlier fit."""
        self.history = []
        self.last_score = None

    def _needs_inception_anyway(self) -> bool:
        return False

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        assert self._group is not None, "setup(stage='fit') must run before on_train_start"
        self._group.prepare(trainer, pl_module)
        self._start_schedule(trainer)

    # --------------------------------------------------------------------------------- averaged weights

    def _announce_averaging(self, trainer: pl.Trainer, averaging: Any) -> None:
        # Once per group: its first member speaks for all.
        if trainer.is_global_zero and self._group is not None and self is self._group.owner:
            also = " and the current weights (logged as `<key>_current`)" if self.model_weights == "both" else ""
            rank_zero_info(
                f"lightning_ganeval: {self._group.describe()} score the averaged weights of"
                f" `{type(averaging).__name__}`{also}. Pass `model_weights='current'` to score the weights being"
                " trained instead, or `model_weights='both'` to log both."
            )

    # ------------------------------------------------------------------------------------- evaluation

    def _evaluate_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._group is not None, "setup(stage='fit') must run before an evaluation"
        first = self._first_weights()
        values = self._evaluate_values(trainer, pl_module, first)
        if first == "averaged" and self.model_weights == "both":
            current = self._evaluate_values(trainer, pl_module, "current")
            metric_keys = self._metric.keys()
            values.update({f"{key}_current": current[key] for key in metric_keys})
        self._publish(trainer, pl_module, values, self._metric.primary_key())

    def _evaluate_values(self, trainer: pl.Trainer, pl_module: pl.LightningModule, weights: str) -> dict[str, float]:
        assert self._group is not None
        module = self._scored_module(pl_module, weights)
        result = self._group.evaluate(trainer, module, weights)
        if result.num_nonfinite and self.nonfinite == "raise":
            raise ValueError(
                f"The generator produced {result.num_nonfinite} non-finite (NaN or Inf) samples out of"
                f" {self.num_samples} at epoch {trainer.current_epoch}, and `nonfinite='raise'`. Pass"
                " `nonfinite='exclude'` to leave them out of the statistics and log their count instead."
            )
        # The group has warned about clamped and non-finite samples and NaN values; EarlyStopping's gate
        # (callbacks/monitors.py) names the reason when it skips a NaN, by the key as logged.
        suffix = (
            "_current" if weights == "current" and self._averaging is not None and self.model_weights == "both" else ""
        )
        if not suffix:
            self._nan_reasons = {}
        self._nan_reasons.update({f"{key}{suffix}": reason for key, reason in result.nan_reasons.items()})
        values = dict(result.by_metric[self._metric.name])
        values[f"{self.name}_nonfinite"] = float(result.num_nonfinite)
        values[f"{self.name}_clamped"] = float(result.clamped_fraction)
        # The states were merged, so every rank holds the same numbers; broadcasting rank 0's makes them
        # bit-identical, so that EarlyStopping and ModelCheckpoint decide the same way on every rank.
        values = trainer.strategy.broadcast(values, src=0)
        if self._log_images and result.images is not None and trainer.is_global_zero:
            step = max(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step) - 1, 0)
            suffix = "_current" if weights == "current" and self.model_weights == "both" else ""
            images = result.images[: self._log_images]
            for logger in trainer.loggers:
                # One logger at a time: one that cannot take the grid must not keep it from the others.
                try:
                    log_grid([logger], f"{self.name}_samples{suffix}", images, step)
                except Exception as err:  # a grid is a picture, not a number: warn and keep training
                    self._grid_failed(logger, err)
        return values

    def _grid_failed(self, logger: Any, error: Exception) -> None:
        """A grid is a picture, not a number: warn once per logger and fit, and let training go on."""
        if id(logger) in self._grid_failures:
            return
        self._grid_failures.add(id(logger))
        where = f" (log_dir {logger.log_dir!r})" if getattr(logger, "log_dir", None) else ""
        rank_zero_warn(
            f"The `{self.name}_samples` grid could not be sent to {type(logger).__name__}{where}:"
            f" {type(error).__name__}: {error}. Training goes on and `{self.name}` is still logged; later grids for"
            " this logger are tried again without a new warning.",
            category=UserWarning,
        )

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._release(trainer)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._release(trainer)

    def _release(self, trainer: pl.Trainer) -> None:
        self._restored_before_fit = False  # a state loaded for this fit is not one for the next
        self._undo_monitors()
        if self._group is not None and self in self._group.members:
            self._group.members.remove(self)
        self._group = None
        self._extractor = None

    # ------------------------------------------------------------------------------------------ steps

    def _check_generator(self, pl_module: pl.LightningModule) -> None:
        """Without ``sample_fn`` the module itself is the generator: it needs a ``forward`` of its own."""
        if self.sample_fn is not None or not _lacks_forward(pl_module):
            return
        cls = type(pl_module).__name__
        candidates = _generator_like_children(pl_module)
        attribute = candidates[0] if candidates else "generator"
        found = (
            f" It has a submodule `{attribute}` that looks like the generator."
            if candidates
            else " (Replace `generator` by the attribute that holds your generator.)"
        )
        raise TypeError(
            f"`{type(self).__name__}(name={self.name!r})` samples with `pl_module(z)`, but `{cls}` defines no"
            f" `forward` (GAN code often calls `self.generator(z)` in `training_step` instead). Pass"
            f" `sample_fn=lambda pl_module, z: pl_module.{attribute}(z)` to the callback, or define"
            f" `forward(self, z)` in `{cls}`.{found}"
        )

    def _resolve_weights_rank_zero_first(self, trainer: pl.Trainer) -> InceptionWeights:
        # Rank 0 finds (and, if needed, downloads) the file first; the others then find it in the cache.
        found = rank_zero_first(trainer, lambda: resolve_weights(self.inception_weights, progress=self.progress))
        if trainer.is_global_zero:
            return found
        return resolve_weights(self.inception_weights, progress=False)

    def _sampling_key(self, *, without_sample_fn: bool = False) -> tuple[Any, ...]:
        return (
            self.num_samples,
            self.batch_size,
            self.every_n_epochs,
            self.every_n_train_steps,
            self._resolved_latent_shape,
            # Equivalent functions (one lambda written per callback) share the pass; see _sample_fns.py.
            None if without_sample_fn else function_key(self.sample_fn),
            self._space,
            self.seed,
            None if self._extractor is None else network_identity(self._extractor),
        )

    def _sampler(self, pl_module: pl.LightningModule) -> tuple[Callable[[Tensor], Any], str]:
        sample_fn = self.sample_fn
        if sample_fn is None:
            return pl_module, "pl_module(z)"
        return (lambda z: sample_fn(pl_module, z)), "sample_fn(pl_module, z)"

    def _progress_bar(self, trainer: pl.Trainer, *, total: int | None, desc: str, unit: str) -> Tqdm:
        enabled = self.progress and trainer.is_global_zero and trainer.progress_bar_callback is not None
        # `delay`: short evaluations finish before the bar would appear, so only long ones show one.
        return Tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, delay=2.0, disable=not enabled)
