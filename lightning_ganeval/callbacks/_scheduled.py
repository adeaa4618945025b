"""When a metric callback evaluates, which weights it scores, and how it logs: shared by every metric callback.

The shared-pass callbacks (``base.py``) and ``PPLCallback`` (its own pass of latent pairs) differ in what an
evaluation computes, not in when it runs: an epoch or optimizer-step schedule, the EarlyStopping/ModelCheckpoint
adjustments, the averaged copy of a ``WeightAveraging`` callback, the latent shape from the hyperparameters, the
logging and the history all live here once, and so do the arguments they share (:mod:`._arguments`): a subclass
takes them as ``**kwargs: Unpack[...]``, hands them to :meth:`_init_arguments`, and implements
:meth:`_evaluate_and_log` and :meth:`_logged_keys`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_ganeval.callbacks._arguments import (
    check_names,
    pixel_space,
    resolve_callable,
    shared_defaults,
    spell_out,
)
from lightning_ganeval.callbacks._checks import check_bool, check_choice, check_int, check_name
from lightning_ganeval.callbacks._compat import lightning_classes
from lightning_ganeval.callbacks._state_keys import check_state_keys
from lightning_ganeval.callbacks.monitors import MonitorAdjustments
from lightning_ganeval.evaluator import NONFINITE_POLICIES
from lightning_ganeval.pixel_space import PixelSpace
from lightning_ganeval.sampling import normalize_latent_shape

__all__ = ["MODEL_WEIGHTS", "rank_zero_first"]

#: What ``model_weights=`` accepts: with a ``WeightAveraging`` callback in the Trainer, score its averaged copy,
#: the weights being trained, or both (the current ones logged under ``<key>_current``).
MODEL_WEIGHTS = ("averaged", "current", "both")

T = TypeVar("T")


def rank_zero_first(trainer: pl.Trainer, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 first (e.g. a download); its outcome, an error included, is broadcast to every rank.

    A missing file then stops every rank with the same message before training starts, instead of leaving the
    others waiting at a barrier. Returns rank 0's result on every rank.
    """
    outcome: Any = None
    if trainer.is_global_zero:
        try:
            outcome = fn()
        except Exception as err:  # broadcast below, then raised on every rank
            outcome = err
    outcome = trainer.strategy.broadcast(outcome, src=0)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


class _ScheduledCallback(Callback):
    """Schedule, monitors, averaged weights, latent shape and logging of a metric callback."""

    name: str
    latent_shape: tuple[int, ...] | None
    model_weights: str
    every_n_epochs: int | None
    every_n_train_steps: int | None
    _space: PixelSpace | None

    # The names of the flat signature (see _arguments.py): what the class takes, checked in `_init_arguments`.
    _ARGUMENT_NAMES: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        signature = None if init is None else spell_out(init)
        if signature is not None:
            # What `inspect.signature`, `help()` and LightningCLI/jsonargparse read: every argument, flat.
            init.__signature__ = signature  # type: ignore[union-attr]
            cls._ARGUMENT_NAMES = tuple(signature.parameters)[1:]

    def _init_arguments(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Check and set the :class:`ScheduleArguments` (in ``__init__``); all shared arguments, defaults filled."""
        check_names(type(self), arguments, self._ARGUMENT_NAMES)
        values = {**shared_defaults(), **arguments}
        every_n_epochs, every_n_train_steps = values["every_n_epochs"], values["every_n_train_steps"]
        if every_n_epochs is not None and every_n_train_steps is not None:
            raise ValueError(
                f"`every_n_epochs={every_n_epochs!r}` and `every_n_train_steps={every_n_train_steps!r}` are mutually"
                " exclusive: pass one of them (the other stays None)."
            )
        self.every_n_train_steps = (
            None if every_n_train_steps is None else check_int("every_n_train_steps", every_n_train_steps, 1)
        )
        self.every_n_epochs = (
            None if self.every_n_train_steps is not None else check_int("every_n_epochs", every_n_epochs or 1, 1)
        )
        if every_n_epochs is not None:
            check_int("every_n_epochs", every_n_epochs, 1)
        self.model_weights = check_choice("model_weights", values["model_weights"], MODEL_WEIGHTS)
        self.batch_size = check_int("batch_size", values["batch_size"], 1)
        latent_shape = values["latent_shape"]
        self.latent_shape = None if latent_shape is None else normalize_latent_shape(latent_shape)
        self.sample_fn = resolve_callable("sample_fn", values["sample_fn"])
        self.value_range = values["value_range"]
        self.normalize = values["normalize"]
        self._space = pixel_space("", self.value_range, self.normalize)
        self.seed = check_int("seed", values["seed"], 0)
        self.name = check_name(values["name"])
        self.nonfinite = check_choice("nonfinite", values["nonfinite"], NONFINITE_POLICIES)
        self.progress = check_bool("progress", values["progress"])
        self.last_score: float | None = None
        self.history: list[dict[str, float]] = []
        self._evaluated_epoch: int | None = None
        self._evaluated_step: int | None = None
        self._step_bucket = 0
        self._averaging: Any = None
        self._monitors: MonitorAdjustments | None = None
        return values

    # ---------------------------------------------------------------------------------- subclass interface

    def _settings(self) -> dict[str, Any]:
        """What makes the values of two evaluations comparable (checkpointed; a change warns on resume)."""
        raise NotImplementedError

    def _logged_keys(self) -> list[str]:
        raise NotImplementedError

    def _evaluate_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise NotImplementedError

    def _announce_averaging(self, trainer: pl.Trainer, averaging: Any) -> None:
        """Say once that the averaged weights are scored (rank 0)."""
        rank_zero_info(
            f"lightning_ganeval: `{self.name}` scores the averaged weights of `{type(averaging).__name__}`. Pass"
            " `model_weights='current'` to score the weights being trained instead, or `'both'` to log both."
        )

    # ----------------------------------------------------------------------------------------- state

    _SETTINGS_KEY: ClassVar[str] = "settings"
    _SETTINGS_WORD: ClassVar[str] = "settings"

    @property
    @override
    def state_key(self) -> str:
        # The logged name is unique per Trainer (checked in setup), so it tells instances apart.
        return self._generate_state_key(name=self.name)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [dict(entry) for entry in self.history],
            "last_score": self.last_score,
            "evaluated_epoch": self._evaluated_epoch,
            self._SETTINGS_KEY: self._settings(),
        }

    # Attributes that only exist while fitting; dropped when the callback is pickled (ddp_spawn) or saved.
    _RUNTIME_ATTRIBUTES: ClassVar[tuple[str, ...]] = ()

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn pickles the callbacks: the networks are rebuilt in setup, on each process's device.
        state = self.__dict__.copy()
        for attribute in self._RUNTIME_ATTRIBUTES:
            state[attribute] = None
        state["_metric"] = self._pickled_metric()
        return state

    def _pickled_metric(self) -> Any:
        """The metric a pickled callback carries: none, it is built in ``setup``."""
        return None

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(entry) for entry in state_dict.get("history", [])]
        self.last_score = state_dict.get("last_score")
        self._evaluated_epoch = state_dict.get("evaluated_epoch")
        saved, current = state_dict.get(self._SETTINGS_KEY), self._settings()
        # A latent shape still to be read from the hparams (restored before setup) is not a change.
        changed = sorted(
            k for k in current if current[k] is not None and saved is not None and saved.get(k) != current[k]
        )
        if changed:
            rank_zero_warn(
                f"`{type(self).__name__}(name={self.name!r})` was restored from a checkpoint made with other"
                f" {self._SETTINGS_WORD} ({', '.join(f'{k}: {saved.get(k)!r} -> {current[k]!r}' for k in changed)});"
                f" the `{self.name}` curve is not continuous across the resume.",
                category=UserWarning,
            )

    # ----------------------------------------------------------------------------------------- schedule

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After every callback's setup, so EarlyStopping has resolved its own `check_on_train_epoch_end`.
        self._monitors = MonitorAdjustments(self)
        self._monitors.apply(trainer)

    def _start_schedule(self, trainer: pl.Trainer) -> None:
        """In ``on_train_start``: the step schedule's position and the averaging callback, if any."""
        # After a resume global_step is restored: the next evaluation is at the next multiple.
        self._step_bucket = trainer.global_step // (self.every_n_train_steps or 1)
        self._averaging = self._find_weight_averaging(trainer)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs is None or not self._should_evaluate(trainer):
            return
        self._evaluate_and_log(trainer, pl_module)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.every_n_train_steps is None or not self._should_evaluate(trainer):
            return
        # global_step counts optimizer steps; it may move by more than one per batch (manual optimization with
        # several optimizers) and not at all (gradient accumulation): evaluate when it crosses a multiple.
        bucket = trainer.global_step // self.every_n_train_steps
        if bucket <= self._step_bucket:
            return
        self._step_bucket = bucket
        self._evaluate_and_log(trainer, pl_module)

    def _should_evaluate(self, trainer: pl.Trainer) -> bool:
        if getattr(trainer.state.fn, "value", trainer.state.fn) != "fit" or trainer.sanity_checking:
            return False
        if trainer.fast_dev_run:
            return False
        return self.every_n_epochs is None or (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _undo_monitors(self) -> None:
        if self._monitors is not None:
            self._monitors.undo()
        self._monitors = None

    # --------------------------------------------------------------------------------- averaged weights

    def _find_weight_averaging(self, trainer: pl.Trainer) -> Any:
        """The Trainer's ``WeightAveraging`` callback whose averaged copy is scored, or None (said once)."""
        classes = lightning_classes("callbacks", "WeightAveraging")
        averaging = next((c for c in trainer.callbacks if classes and isinstance(c, classes)), None)
        if averaging is None and self.model_weights == "both":
            rank_zero_warn(
                f"`{type(self).__name__}(name={self.name!r}, model_weights='both')` finds no WeightAveraging callback"
                " (e.g. EMAWeightAveraging) in the Trainer: it scores the current weights under the plain keys and"
                " logs no `<key>_current`. Add the averaging callback, or pass `model_weights='current'`.",
                category=UserWarning,
            )
        if averaging is None or self.model_weights == "current":
            return None
        if not isinstance(getattr(averaging, "_average_model", None), nn.Module):
            rank_zero_warn(
                f"`{type(self).__name__}(name={self.name!r})` scores the current weights: this Lightning version's"
                f" `{type(averaging).__name__}` keeps its averaged model where lightning_ganeval cannot find it"
                " (`_average_model`). Pass `model_weights='current'` to silence this.",
                category=UserWarning,
            )
            return None
        self._announce_averaging(trainer, averaging)
        return averaging

    def _first_weights(self) -> str:
        """The weights logged under the plain keys: the averaged copy when there is one to score."""
        return "averaged" if self._averaging is not None and self.model_weights != "current" else "current"

    def _scored_module(self, pl_module: pl.LightningModule, weights: str) -> pl.LightningModule:
        """The module sampled for ``weights`` ("averaged" or "current").

        The averaged copy is sampled in place (``AveragedModel.module`` is a whole copy of the LightningModule),
        never swapped into ``pl_module``: an evaluation that fails leaves both exactly as they were.
        """
        if weights == "averaged" and self._averaging is not None:
            average = getattr(self._averaging, "_average_model", None)
            if isinstance(average, nn.Module):
                return average.module
        return pl_module

    # --------------------------------------------------------------------------------- setup helpers

    def _check_unique_keys(self, trainer: pl.Trainer) -> None:
        check_state_keys(trainer.callbacks)  # also those Lightning did not check (`configure_callbacks`)
        mine = set(self._logged_keys())
        for other in trainer.callbacks:
            keys = getattr(other, "_logged_keys", None)
            if other is self or not callable(keys):
                continue
            clash = mine & set(keys())
            if clash:
                raise ValueError(
                    f"`{type(self).__name__}(name={self.name!r})` and"
                    f" `{type(other).__name__}(name={getattr(other, 'name', None)!r})` would both log"
                    f" {', '.join(f'`{k}`' for k in sorted(clash))}. Give each callback its own `name`."
                )

    def _resolve_latent_shape(self, pl_module: pl.LightningModule) -> tuple[int, ...]:
        if self.latent_shape is not None:
            return self.latent_shape
        hparams = getattr(pl_module, "hparams", None)
        latent_dim = hparams.get("latent_dim") if hparams is not None and hasattr(hparams, "get") else None
        if latent_dim is None:
            raise ValueError(
                f"`{type(self).__name__}` needs the shape of the generator's latent vector: pass"
                f" `{type(self).__name__}(latent_shape=...)`, or save a `latent_dim` hyperparameter in your"
                f" LightningModule (`self.save_hyperparameters()` with a `latent_dim` argument); "
                f"`{type(pl_module).__name__}.hparams` has no `latent_dim`."
            )
        return normalize_latent_shape(latent_dim, argument="pl_module.hparams.latent_dim")

    # ------------------------------------------------------------------------------------------ logging

    def _publish(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, values: dict[str, float], primary: str
    ) -> None:
        """Log ``values`` (identical on every rank), append them to the history and mark the evaluation fresh."""
        for key, value in values.items():
            # sync_dist with "max" over identical values is exact and keeps Lightning from asking for sync_dist.
            pl_module.log(
                key,
                float(value),
                prog_bar=key == primary,
                logger=bool(trainer.loggers),
                # A step schedule logs at the step it evaluated; an epoch one once per epoch.
                on_step=self.every_n_train_steps is not None,
                on_epoch=self.every_n_train_steps is None,
                sync_dist=True,
                reduce_fx="max",
                batch_size=1,
            )
        self.last_score = float(values[primary])
        self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **values})
        self._evaluated_epoch = trainer.current_epoch
        self._evaluated_step = trainer.global_step
