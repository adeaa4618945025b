"""Making ``EarlyStopping`` and ``ModelCheckpoint`` act on fresh values of the keys the metric callbacks log.

The metric callbacks log at the end of training epochs, and only every ``every_n_epochs`` epochs (or, on a step
schedule, at the end of the batch whose optimizer step crosses a multiple of ``every_n_train_steps``). Lightning runs
``EarlyStopping`` and ``ModelCheckpoint`` after every other callback in that hook, so they see this epoch's value;
what needs adjusting is *when* they look:

- an ``EarlyStopping`` that monitors one of our keys checks at train-epoch end (at validation end it would see the
  previous evaluation) and only on epochs with a fresh evaluation, so patience counts evaluations and
  ``strict=True`` does not fail before the first one;
- a ``ModelCheckpoint`` that monitors one of our keys ranks checkpoints only on evaluation epochs (with a
  validation loop it would otherwise raise at epoch 0, where the key does not exist yet, or rank by a stale value).

On a step schedule ``EarlyStopping`` still checks at train-epoch end (Lightning has no step-wise check), on epochs
that held an evaluation, and a ``ModelCheckpoint`` ranks only at the optimizer steps where the key was computed:
give it ``every_n_train_steps`` equal to the callback's.

An evaluation whose monitored value is NaN (e.g. KID when fewer finite samples than ``subset_size`` remained) is
skipped by the ``EarlyStopping`` gate with a warning that gives the reason: Lightning would stop the fit on it
(``check_finite``) with a message that does not say why, and a NaN says nothing about improvement.

Both adjustments are per instance and undone in ``teardown`` and ``on_exception``, so that a later ``fit`` with the
same objects starts from Lightning's own behaviour. They go through attributes that are private to Lightning
(``EarlyStopping._run_early_stopping_check``, ``ModelCheckpoint._save_topk_checkpoint`` and the two
``_..._on_train_epoch_end`` flags); a Lightning release without one of them is left unadjusted, with one warning that
names the public settings that avoid stale values instead of a crash.
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from lightning_ganeval.callbacks._compat import lightning_classes

__all__ = ["MonitorAdjustments"]


class _FreshGate:
    """Stands in for a bound method of a monitoring callback; runs it only when the owner has a fresh value.

    Fresh means evaluated in this epoch, or with ``per_step`` at this very optimizer step (a ``ModelCheckpoint``
    that saves every N training steps next to a metric callback on a step schedule). With ``skip_nan``, an
    evaluation whose monitored value is NaN is skipped too, with a warning naming the reason.
    """

    def __init__(self, target: Any, method: str, owner: Any, per_step: bool = False, *, skip_nan: bool = False) -> None:
        self.target, self.method, self.owner = target, method, owner
        self.per_step, self.skip_nan = per_step, skip_nan

    def __call__(self, trainer: Any, *args: Any, **kwargs: Any) -> Any:
        if self.owner._evaluated_epoch != trainer.current_epoch:
            return None
        if self.per_step and self.owner._evaluated_step != trainer.global_step:
            return None
        if self.skip_nan and self._skipped_nan(trainer):
            return None
        return getattr(type(self.target), self.method)(self.target, trainer, *args, **kwargs)

    def _skipped_nan(self, trainer: Any) -> bool:
        monitor = self.target.monitor
        value = trainer.callback_metrics.get(monitor)
        if value is None or not math.isnan(float(value)):
            return False
        reason = getattr(self.owner, "_nan_reasons", {}).get(monitor, "the metric gave no reason")
        rank_zero_warn(
            f"`{type(self.target).__name__}(monitor={monitor!r})` skips epoch {trainer.current_epoch}: `{monitor}` is"
            f" NaN because {reason}. The evaluation neither stops training nor counts towards `patience`.",
            category=UserWarning,
        )
        return True


class MonitorAdjustments:
    """The adjustments one metric callback made to the Trainer's monitoring callbacks, and their undoing."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self._undo: list[tuple[Any, str, Any, bool]] = []  # (object, attribute, old value, was in __dict__)

    def _set(self, target: Any, attribute: str, value: Any) -> None:
        had = attribute in target.__dict__
        self._undo.append((target, attribute, target.__dict__.get(attribute), had))
        setattr(target, attribute, value)

    def apply(self, trainer: Any) -> None:
        """Adjust the monitoring callbacks of ``trainer`` that watch one of the owner's keys (in ``on_fit_start``)."""
        keys = set(self.owner._logged_keys())
        early_stopping = lightning_classes("callbacks", "EarlyStopping")
        checkpoint = lightning_classes("callbacks", "ModelCheckpoint")
        for callback in trainer.callbacks:
            if isinstance(callback, early_stopping) and callback.monitor in keys:
                self._gate_early_stopping(callback)
            elif isinstance(callback, checkpoint) and callback.monitor in keys:
                self._gate_checkpoint(callback)

    def undo(self) -> None:
        """Restore every adjusted attribute (``teardown`` and ``on_exception``)."""
        for target, attribute, old, had in reversed(self._undo):
            if had:
                target.__dict__[attribute] = old
            else:
                target.__dict__.pop(attribute, None)
        self._undo = []

    def _missing(self, callback: Any, names: tuple[str, ...], fix: str) -> bool:
        """Warn (and return True) when this Lightning lacks one of the private attributes the adjustment uses."""
        missing = [name for name in names if not hasattr(callback, name)]
        if not missing:
            return False
        rank_zero_warn(
            f"`{type(callback).__name__}(monitor={callback.monitor!r})` is left as it is: this Lightning version has"
            f" no `{type(callback).__name__}.{missing[0]}`, which lightning_ganeval uses to act only on epochs where"
            f" `{callback.monitor}` is freshly computed; between evaluations it may see a stale or missing value. "
            f"{fix}",
            category=UserWarning,
        )
        return True

    def _gate_early_stopping(self, callback: Any) -> None:
        every = getattr(self.owner, "every_n_epochs", None) or 1
        fix = (
            "To avoid it, evaluate every epoch (`every_n_epochs=1`) and pass"
            " `EarlyStopping(check_on_train_epoch_end=True)`"
            + (f", or count `patience` in epochs ({every} per evaluation)." if every > 1 else ".")
        )
        if self._missing(callback, ("_run_early_stopping_check", "_check_on_train_epoch_end"), fix):
            return
        if isinstance(callback.__dict__.get("_run_early_stopping_check"), _FreshGate):
            return
        if callback._check_on_train_epoch_end is False:
            rank_zero_info(
                f"`EarlyStopping(monitor={callback.monitor!r})` now checks at the end of the training epoch, where"
                f" `{type(self.owner).__name__}` computes `{callback.monitor}`; at the end of validation it would see"
                " the previous evaluation's value."
            )
        self._set(callback, "_check_on_train_epoch_end", True)
        gate = _FreshGate(callback, "_run_early_stopping_check", self.owner, skip_nan=True)
        self._set(callback, "_run_early_stopping_check", gate)

    def _gate_checkpoint(self, callback: Any) -> None:
        steps = getattr(self.owner, "every_n_train_steps", None)
        schedule = f"every_n_train_steps={steps}" if steps else f"every_n_epochs={self.owner.every_n_epochs or 1}"
        fix = (
            f"To avoid it, pass `ModelCheckpoint({schedule}, save_on_train_epoch_end=True)`, the same"
            " schedule as the metric callback."
        )
        if self._missing(callback, ("_save_topk_checkpoint", "_save_on_train_epoch_end"), fix):
            return
        if isinstance(callback.__dict__.get("_save_topk_checkpoint"), _FreshGate):
            return
        if callback._save_on_train_epoch_end is None:
            # Lightning's default saves at validation end when there is a validation loop; the key only changes at
            # train epoch end, so save there.
            self._set(callback, "_save_on_train_epoch_end", True)
        elif not callback._save_on_train_epoch_end:
            rank_zero_warn(
                f"`ModelCheckpoint(monitor={callback.monitor!r}, save_on_train_epoch_end=False)` saves at the end of"
                f" validation, before `{callback.monitor}` is computed for the epoch: it ranks each checkpoint by the"
                " previous evaluation. Leave `save_on_train_epoch_end` at None or set it to True.",
                category=UserWarning,
            )
            return
        # Rank (top-k) checkpoints only on evaluation epochs: elsewhere the key is missing (Lightning raises once a
        # validation loop has run) or stale. `save_last` is not affected.
        self._set(
            callback,
            "_save_topk_checkpoint",
            _FreshGate(callback, "_save_topk_checkpoint", self.owner, per_step=bool(steps)),
        )
