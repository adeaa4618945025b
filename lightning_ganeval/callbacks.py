r"""
FID and Inception Score callbacks
^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^

Measure a GAN while it trains: at the end of every ``every_n_epochs``-th training epoch the generator is sampled on
a fixed latent bank, the samples go through the FID Inception once, and the scores are logged through
``pl_module.log`` (so that ``trainer.callback_metrics``, the loggers, ``EarlyStopping`` and ``ModelCheckpoint`` see
them).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_ganeval.extractor import RESIZE_MODES, InceptionExtractor, InceptionFeatures, get_extractor
from lightning_ganeval.images import to_uint8_rgb
from lightning_ganeval.math import FrechetReference, GaussianStats
from lightning_ganeval.moments import FIDMoments, ISMarginals
from lightning_ganeval.reference import (
    cached_real_stats,
    compute_real_stats,
    dataset_fingerprint,
    default_max_workers,
    extractor_provenance,
    load_stats,
    real_content_digest,
    real_stats_cache_key,
)
from lightning_ganeval.sampling import (
    LatentBank,
    check_generated,
    isolated_rng,
    norm_buffers,
    normalize_latent_shape,
    preserved_module_state,
    seed_batch_noise,
)
from lightning_ganeval.weights import InceptionWeights, resolve_weights

__all__ = ["FIDCallback", "InceptionScoreCallback"]

SampleFn = Callable[["pl.LightningModule", Tensor], Tensor]
_NONFINITE_POLICIES = ("exclude", "raise")


# ------------------------------------------------------------------------------------------ argument checks


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return value


def _check_value_range(name: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise TypeError(f"`{name}` must be a pair (low, high) of numbers, got {value!r}.")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise TypeError(f"`{name}` must be a pair (low, high) of numbers, got {value!r}.")
    low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"`{name}` must be two finite numbers with low < high, got {value!r}.")
    return low, high


def _check_path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a path (str or os.PathLike) or None, got {type(value).__name__}.")
    return os.fspath(value)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(repr(c) for c in choices)}, got {value!r}.")
    return value


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValueError(f"`name` must be a non-empty string without surrounding spaces, got {value!r}.")
    return value


def _check_callable(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"`{name}` must be a callable or None, got {type(value).__name__}.")
    return value


# ------------------------------------------------------------------------------------- the shared evaluation


class _PassResult:
    """What one sampling pass left for the member callbacks: its token, the merged non-finite count, a grid."""

    def __init__(self, token: tuple[int, int], num_nonfinite: int, images: Tensor | None) -> None:
        self.token = token
        self.num_nonfinite = num_nonfinite
        self.images = images


class _SharedEvaluation:
    """One sampling + Inception pass per evaluation, feeding every member callback's accumulators.

    Callbacks whose sampling settings are equal (see ``_GenerativeMetricCallback._sampling_key``) join the same
    group in ``setup``. Whichever member's ``on_train_epoch_end`` runs first does the pass; the others find its
    result by the token ``(epoch, global_step)`` and only compute and log their own scores.
    """

    def __init__(self, bank: LatentBank, extractor: InceptionExtractor, owner: _GenerativeMetricCallback) -> None:
        self.bank = bank
        self.extractor = extractor
        # The sampling settings (sample_fn, value_range, seed, progress) are the same for all members by
        # construction of the key; take them from the first member.
        self.owner = owner
        self.members: list[_GenerativeMetricCallback] = []
        self.result: _PassResult | None = None

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> _PassResult:
        token = (trainer.current_epoch, trainer.global_step)
        if self.result is not None and self.result.token == token:
            return self.result
        for member in self.members:
            member._reset_accumulators()
        num_nonfinite, images, error = self._run_pass(trainer, pl_module)
        # One collective on every rank, also when this rank failed: the others learn about it instead of waiting
        # forever in the metric synchronisation.
        device = self.extractor.device
        flags = torch.tensor([float(num_nonfinite), float(error is not None)], dtype=torch.float64, device=device)
        flags = trainer.strategy.reduce(flags, reduce_op="sum")
        if error is not None:
            raise error
        if flags[1] > 0:
            raise RuntimeError(
                f"The evaluation of {self.owner._describe_group()} failed on another process; see its traceback."
            )
        self.result = _PassResult(token, int(flags[0]), images)
        return self.result

    def _run_pass(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> tuple[int, Tensor | None, Exception | None]:
        owner = self.owner
        batches = self.bank.shard(trainer.global_rank, trainer.world_size)
        sample, source = owner._sampler(pl_module)
        precision = trainer.precision_plugin
        generator_device = pl_module.device
        extractor_device = self.extractor.device
        wanted_images = max(m._log_images for m in self.members) if trainer.is_global_zero else 0
        grid_parts: list[Tensor] = []
        num_nonfinite = 0
        total = sum(len(b.indices) for b in batches)
        bar = owner._progress_bar(trainer, total=total, desc=f"Evaluating {owner._describe_group()}", unit="img")
        try:
            with preserved_module_state(pl_module):
                _use_rank_zero_norm_stats(pl_module, trainer.world_size)
                for batch in batches:
                    seed_batch_noise(owner.seed, batch.batch_id, generator_device)
                    latents = batch.latents.to(generator_device, non_blocking=True)
                    # Autocast for "*-mixed", the low default dtype for "*-true": the generator runs as in training.
                    with precision.predict_step_context():
                        output = sample(precision.convert_input(latents))
                    converted = to_uint8_rgb(check_generated(output, len(latents), source=source), owner.value_range)
                    features = self.extractor(converted.images.to(extractor_device))
                    finite = converted.finite.to(extractor_device)
                    bad = len(finite) - int(finite.sum())
                    num_nonfinite += bad
                    indices = batch.indices.to(extractor_device)
                    if bad:
                        features = InceptionFeatures(features.pool[finite], features.logits[finite])
                        indices = indices[finite]
                    for member in self.members:
                        member._accumulate(features, indices)
                    missing = wanted_images - sum(len(part) for part in grid_parts)
                    if missing > 0:
                        grid_parts.append(converted.images[:missing].cpu())
                    bar.update(len(latents))
        except Exception as err:  # re-raised by `evaluate` after the other ranks have been told
            return num_nonfinite, None, err
        finally:
            bar.close()
        images = torch.cat(grid_parts) if grid_parts else None
        return num_nonfinite, images, None


def _use_rank_zero_norm_stats(module: pl.LightningModule, world_size: int) -> None:
    """Give every rank rank 0's BatchNorm running statistics for the evaluation (restored afterwards).

    DDP broadcasts buffers at the start of each forward, so after the last training step of an epoch every rank
    holds statistics updated by its own batch: without this, each rank would sample from a slightly different
    generator.
    """
    if world_size < 2 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for buffer in norm_buffers(module):
        torch.distributed.broadcast(buffer, src=0)


# One registry per process; a Trainer that is garbage-collected takes its groups with it.
_GROUPS: weakref.WeakKeyDictionary[pl.Trainer, dict[tuple[Any, ...], _SharedEvaluation]] = weakref.WeakKeyDictionary()


class _FreshMetricGate:
    """Stands in for an ``EarlyStopping`` instance's ``_run_early_stopping_check``.

    It runs the original check only on epochs on which ``callback`` evaluated the monitored key, so that an epoch
    without evaluation (``every_n_epochs > 1``) neither counts a stale value as a new check nor, before the first
    evaluation, trips ``strict=True``.
    """

    def __init__(self, early_stopping: EarlyStopping, callback: _GenerativeMetricCallback) -> None:
        self.early_stopping = early_stopping
        self.callback = callback
        self.original_check_on_train_epoch_end = early_stopping._check_on_train_epoch_end

    def __call__(self, trainer: pl.Trainer) -> None:
        if self.callback._evaluated_epoch != trainer.current_epoch:
            return
        type(self.early_stopping)._run_early_stopping_check(self.early_stopping, trainer)


# ------------------------------------------------------------------------------------------- the callbacks


class _GenerativeMetricCallback(Callback):
    """Configuration, scheduling, sampling, state and logging shared by the FID and IS callbacks."""

    # Attributes that only exist while fitting; dropped when the callback is pickled (ddp_spawn) or saved.
    _RUNTIME_ATTRIBUTES: ClassVar[tuple[str, ...]] = (
        "_extractor",
        "_group",
        "_gates",
        "_checkpoint_overrides",
        "_weights",
    )

    def __init__(
        self,
        *,
        num_samples: int,
        batch_size: int,
        every_n_epochs: int,
        latent_shape: int | Sequence[int] | None,
        sample_fn: SampleFn | None,
        value_range: tuple[float, float],
        inception_weights: str | os.PathLike[str] | None,
        resize: str,
        fast: bool,
        seed: int,
        name: str,
        nonfinite: str,
        progress: bool,
        log_images: int = 0,
    ) -> None:
        self.num_samples = _check_int("num_samples", num_samples, self._min_samples())
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.every_n_epochs = _check_int("every_n_epochs", every_n_epochs, 1)
        self.latent_shape = None if latent_shape is None else normalize_latent_shape(latent_shape)
        self.sample_fn = _check_callable("sample_fn", sample_fn)
        self.value_range = _check_value_range("value_range", value_range)
        self.inception_weights = _check_path("inception_weights", inception_weights)
        self.resize = _check_choice("resize", resize, RESIZE_MODES)
        self.fast = _check_bool("fast", fast)
        self.seed = _check_int("seed", seed, 0)
        self.name = _check_name(name)
        self.nonfinite = _check_choice("nonfinite", nonfinite, _NONFINITE_POLICIES)
        self.progress = _check_bool("progress", progress)
        self._log_images = _check_int("log_images", log_images, 0)

        self.last_score: float | None = None
        self.history: list[dict[str, float]] = []
        self._evaluated_epoch: int | None = None
        self._extractor: InceptionExtractor | None = None
        self._weights: InceptionWeights | None = None
        self._group: _SharedEvaluation | None = None
        self._gates: list[_FreshMetricGate] = []
        self._checkpoint_overrides: list[ModelCheckpoint] = []
        self._resolved_latent_shape: tuple[int, ...] | None = None

    # -------------------------------------------------------------------------------- subclass interface

    def _min_samples(self) -> int:
        return 1

    def _logged_keys(self) -> list[str]:
        raise NotImplementedError

    def _build_accumulators(self, device: torch.device) -> None:
        raise NotImplementedError

    def _reset_accumulators(self) -> None:
        raise NotImplementedError

    def _on_setup(self) -> None:
        """Per-fit reset of subclass state (called at the end of ``setup``)."""

    def _accumulate(self, features: InceptionFeatures, indices: Tensor) -> None:
        raise NotImplementedError

    def _compute(self, trainer: pl.Trainer, num_evaluated: int) -> dict[str, float]:
        """Merge the accumulators over the ranks (a collective: every rank calls it) and return the scores.

        ``num_evaluated`` is the number of samples in the statistics over all ranks (non-finite ones excluded).
        """
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------- state

    @property
    @override
    def state_key(self) -> str:
        # The logged name is unique per Trainer (checked in setup), so it tells instances apart; leaving out
        # num_samples etc. keeps the history when such a setting changes on resume (a warning says so).
        return self._generate_state_key(name=self.name)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [dict(entry) for entry in self.history],
            "last_score": self.last_score,
            "evaluated_epoch": self._evaluated_epoch,
            "sampling": self._sampling_settings(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(entry) for entry in state_dict.get("history", [])]
        self.last_score = state_dict.get("last_score")
        self._evaluated_epoch = state_dict.get("evaluated_epoch")
        saved = state_dict.get("sampling")
        current = self._sampling_settings()
        # A latent shape still to be read from the hparams (restored before setup) is not a change.
        changed = sorted(
            k for k in current if current[k] is not None and saved is not None and saved.get(k) != current[k]
        )
        if changed:
            rank_zero_warn(
                f"`{type(self).__name__}(name={self.name!r})` was restored from a checkpoint made with other sampling"
                f" settings ({', '.join(f'{k}: {saved.get(k)!r} -> {current[k]!r}' for k in changed)}); the"
                f" `{self.name}` curve is not continuous across the resume.",
                category=UserWarning,
            )

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

    def _sampling_settings(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "seed": self.seed,
            "latent_shape": list(self._resolved_latent_shape or self.latent_shape or []) or None,
            "value_range": list(self.value_range),
            "resize": self.resize,
            "fast": self.fast,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for attribute in self._RUNTIME_ATTRIBUTES:
            state[attribute] = [] if attribute in ("_gates", "_checkpoint_overrides") else None
        return state

    # ----------------------------------------------------------------------------------------- hooks

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._check_unique_keys(trainer)
        self._resolved_latent_shape = self._resolve_latent_shape(pl_module)
        self._weights = self._resolve_weights_rank_zero_first(trainer)
        device = trainer.strategy.root_device
        self._extractor = get_extractor(device, weights=self._weights, resize=self.resize, fast=self.fast)
        self._build_accumulators(device)
        self._evaluated_epoch = None
        self._on_setup()
        self._join_group(trainer)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After every callback's setup, so EarlyStopping has resolved its own `check_on_train_epoch_end`.
        self._gate_early_stopping(trainer)
        self._check_model_checkpoints(trainer)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_evaluate(trainer):
            return
        assert self._group is not None, "setup(stage='fit') must run before on_train_epoch_end"
        result = self._group.evaluate(trainer, pl_module)
        if result.num_nonfinite and self.nonfinite == "raise":
            raise ValueError(
                f"The generator produced {result.num_nonfinite} non-finite (NaN or Inf) samples out of"
                f" {self.num_samples} at epoch {trainer.current_epoch}, and `nonfinite='raise'`. Pass"
                " `nonfinite='exclude'` to leave them out of the statistics and log their count instead."
            )
        if result.num_nonfinite:
            rank_zero_warn(
                f"{result.num_nonfinite} of {self.num_samples} generated samples held NaN or Inf at epoch"
                f" {trainer.current_epoch}; they are left out of `{self.name}` (logged as `{self.name}_nonfinite`).",
                category=UserWarning,
            )
        with warnings.catch_warnings():
            # A rank without samples (num_samples < batch_size * world_size) never calls `update`.
            warnings.filterwarnings("ignore", message=r".*compute.* was called before the ``update``")
            # ISMarginals repeats our non-finite warning when samples were excluded.
            warnings.filterwarnings("ignore", message=r"ISMarginals saw \d+ samples but was built for")
            values = self._compute(trainer, self.num_samples - result.num_nonfinite)
        values[f"{self.name}_nonfinite"] = float(result.num_nonfinite)
        # The states were merged, so every rank holds the same numbers; broadcasting rank 0's makes them
        # bit-identical, so that EarlyStopping and ModelCheckpoint decide the same way on every rank.
        values = trainer.strategy.broadcast(values, src=0)
        self._publish(trainer, pl_module, values)
        if self._log_images and result.images is not None:
            self._log_grid(trainer, result.images)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        for gate in self._gates:
            early_stopping = gate.early_stopping
            if early_stopping.__dict__.get("_run_early_stopping_check") is gate:
                del early_stopping.__dict__["_run_early_stopping_check"]
                early_stopping._check_on_train_epoch_end = gate.original_check_on_train_epoch_end
        self._gates = []
        for checkpoint in self._checkpoint_overrides:
            checkpoint._save_on_train_epoch_end = None
        self._checkpoint_overrides = []
        groups = _GROUPS.get(trainer, {})
        for key, group in list(groups.items()):
            if self in group.members:
                group.members.remove(self)
            if not group.members:
                del groups[key]
        self._group = None
        self._extractor = None

    # ------------------------------------------------------------------------------------------ steps

    def _should_evaluate(self, trainer: pl.Trainer) -> bool:
        from lightning.pytorch.trainer.states import TrainerFn

        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return False
        if trainer.fast_dev_run:
            return False
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _check_unique_keys(self, trainer: pl.Trainer) -> None:
        mine = set(self._logged_keys())
        for other in trainer.callbacks:
            if other is self or not isinstance(other, _GenerativeMetricCallback):
                continue
            clash = mine & set(other._logged_keys())
            if clash:
                raise ValueError(
                    f"`{type(self).__name__}(name={self.name!r})` and `{type(other).__name__}(name={other.name!r})`"
                    f" would both log {', '.join(f'`{k}`' for k in sorted(clash))}. Give each callback its own"
                    " `name`."
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

    def _resolve_weights_rank_zero_first(self, trainer: pl.Trainer) -> InceptionWeights:
        # Rank 0 finds (and, if needed, downloads) the file first; the others then find it in the cache. Its
        # outcome, error included, is broadcast, so that a missing file stops every rank with the same message
        # before training starts instead of leaving the others waiting at a barrier.
        strategy = trainer.strategy
        outcome: InceptionWeights | Exception | None = None
        if trainer.is_global_zero:
            try:
                outcome = resolve_weights(self.inception_weights, progress=self.progress)
            except Exception as err:  # broadcast below, then raised on every rank
                outcome = err
        outcome = strategy.broadcast(outcome, src=0)
        if isinstance(outcome, Exception):
            raise outcome
        if trainer.is_global_zero:
            assert outcome is not None
            return outcome
        return resolve_weights(self.inception_weights, progress=False)

    def _sampling_key(self) -> tuple[Any, ...]:
        assert self._extractor is not None
        return (
            self.num_samples,
            self.batch_size,
            self.every_n_epochs,
            self._resolved_latent_shape,
            self.sample_fn,
            self.value_range,
            self.seed,
            self._extractor.identity,
        )

    def _join_group(self, trainer: pl.Trainer) -> None:
        assert self._extractor is not None
        assert self._resolved_latent_shape is not None
        groups = _GROUPS.setdefault(trainer, {})
        key = self._sampling_key()
        group = groups.get(key)
        if group is None or group.extractor is not self._extractor:
            bank = LatentBank(self.num_samples, self._resolved_latent_shape, seed=self.seed, batch_size=self.batch_size)
            group = groups[key] = _SharedEvaluation(bank, self._extractor, owner=self)
        if self not in group.members:
            group.members.append(self)
        self._group = group

    def _describe_group(self) -> str:
        members = self._group.members if self._group is not None else [self]
        return "/".join(m.name for m in members)

    def _sampler(self, pl_module: pl.LightningModule) -> tuple[Callable[[Tensor], Any], str]:
        sample_fn = self.sample_fn
        if sample_fn is None:
            return pl_module, "pl_module(z)"
        return (lambda z: sample_fn(pl_module, z)), "sample_fn(pl_module, z)"

    def _progress_bar(self, trainer: pl.Trainer, *, total: int | None, desc: str, unit: str) -> Tqdm:
        enabled = self.progress and trainer.is_global_zero and trainer.progress_bar_callback is not None
        # `delay`: short evaluations finish before the bar would appear, so only long ones show one.
        return Tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, delay=2.0, disable=not enabled)

    def _gate_early_stopping(self, trainer: pl.Trainer) -> None:
        keys = set(self._logged_keys())
        for callback in trainer.callbacks:
            if not isinstance(callback, EarlyStopping) or callback.monitor not in keys:
                continue
            if isinstance(callback.__dict__.get("_run_early_stopping_check"), _FreshMetricGate):
                continue
            gate = _FreshMetricGate(callback, self)
            if callback._check_on_train_epoch_end is False:
                rank_zero_info(
                    f"`EarlyStopping(monitor={callback.monitor!r})` now checks at the end of the training epoch,"
                    f" where `{type(self).__name__}` computes `{callback.monitor}`; at the end of validation it"
                    " would see the previous evaluation's value."
                )
            callback._check_on_train_epoch_end = True
            callback._run_early_stopping_check = gate  # type: ignore[method-assign]
            self._gates.append(gate)

    def _check_model_checkpoints(self, trainer: pl.Trainer) -> None:
        keys = set(self._logged_keys())
        for callback in trainer.callbacks:
            if not isinstance(callback, ModelCheckpoint) or callback.monitor not in keys:
                continue
            if callback._save_on_train_epoch_end is None:
                # Lightning's default saves at validation end when there is a validation loop that runs more or
                # less often than once per epoch; the key only changes at train epoch end, so save there.
                self._checkpoint_overrides.append(callback)
                callback._save_on_train_epoch_end = True
            elif not callback._save_on_train_epoch_end:
                rank_zero_warn(
                    f"`ModelCheckpoint(monitor={callback.monitor!r}, save_on_train_epoch_end=False)` saves at the end"
                    f" of validation, before `{callback.monitor}` is computed for the epoch: it ranks each checkpoint"
                    " by the previous evaluation. Leave `save_on_train_epoch_end` at None or set it to True.",
                    category=UserWarning,
                )
            every = callback._every_n_epochs
            if self.every_n_epochs > 1 and (every < 1 or every % self.every_n_epochs != 0):
                rank_zero_warn(
                    f"`ModelCheckpoint(monitor={callback.monitor!r}, every_n_epochs={every})` can save on epochs on"
                    f" which `{callback.monitor}` was not re-evaluated (every_n_epochs={self.every_n_epochs}) and"
                    f" would rank them by a stale value. Use `ModelCheckpoint(every_n_epochs={self.every_n_epochs})`.",
                    category=UserWarning,
                )

    def _publish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, values: dict[str, float]) -> None:
        for key, value in values.items():
            # sync_dist with "max" over identical values is exact and keeps Lightning from asking for sync_dist.
            pl_module.log(
                key,
                float(value),
                on_step=False,
                on_epoch=True,
                prog_bar=key == self.name,
                logger=bool(trainer.loggers),
                sync_dist=True,
                reduce_fx="max",
                batch_size=1,
            )
        self.last_score = float(values[self.name])
        self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **values})
        self._evaluated_epoch = trainer.current_epoch

    def _log_grid(self, trainer: pl.Trainer, images: Tensor) -> None:
        if not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        from torchvision.utils import make_grid

        images = images[: self._log_images]
        grid = make_grid(images, nrow=max(1, math.ceil(math.sqrt(len(images)))), padding=2)
        # The step of the epoch-level scalars (Lightning logs them at `_batches_that_stepped - 1`).
        step = max(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step) - 1, 0)
        for logger in loggers:
            logger.experiment.add_image(f"{self.name}_samples", grid, global_step=step)


class FIDCallback(_GenerativeMetricCallback):
    r"""Fréchet Inception Distance of the generator's samples to real data, at the end of training epochs.

    Every ``every_n_epochs`` epochs the callback generates ``num_samples`` images from a fixed latent bank, streams
    their Inception pool3 features into float64 moments (merged across DDP ranks) and logs ``fid`` (or ``name``),
    ``fid_num_samples`` and ``fid_nonfinite`` through ``pl_module.log`` on every rank with the same value.

    Args:
        real: The real side of the distance: a path to a ``.npz`` statistics file (:func:`~lightning_ganeval.
            reference.save_stats`, or pytorch-fid's ``mu``/``sigma`` files), a :class:`~torch.utils.data.DataLoader`
            or ``None`` for the Trainer's training dataloader. Statistics computed from a loader are cached on disk.
        num_samples: Number of generated samples per evaluation (at least 2).
        batch_size: Samples per generator call and Inception pass.
        every_n_epochs: Evaluate at the end of every ``every_n_epochs``-th training epoch.
        latent_shape: Shape of one latent vector; default ``pl_module.hparams.latent_dim``.
        sample_fn: ``sample_fn(pl_module, z) -> images`` for generators that are not ``pl_module(z)`` (an EMA copy,
            class-conditional sampling, truncation). Must pickle for ``ddp_spawn`` (no lambda there).
        value_range: ``(low, high)`` of the generated images.
        real_value_range: Value range of the real images; default ``value_range``.
        real_image_fn: Picks the images out of a real batch; default: the batch itself, the first element of a
            tuple or list, or ``batch["image"]``.
        num_real: Use only the first ``num_real`` real samples; default: the whole dataset.
        inception_weights: Path to the Inception weights; default: ``$LIGHTNING_GANEVAL_INCEPTION_WEIGHTS``, the
            torch hub cache, then a download (see :func:`~lightning_ganeval.weights.resolve_weights`).
        resize: How images reach 299 x 299: ``"tf1"`` (reference) or ``"antialias"``.
        fast: Faster, not reference-exact Inception (see :class:`~lightning_ganeval.extractor.InceptionExtractor`).
        seed: Seed of the latent bank (a private generator; the global random state is left untouched).
        name: Logged key; ``fid`` by default. Two callbacks in one Trainer need different names.
        log_images: Number of samples shown as an image grid in TensorBoard at each evaluation (rank 0's first
            samples); 0 disables it.
        nonfinite: ``"exclude"``: leave samples with NaN/Inf out of the statistics, warn and log their count;
            ``"raise"``: raise a ``ValueError`` instead.
        cache_dir: Directory of the real-statistics cache; default: the reference module's default location.
        progress: Show progress bars (rank 0, only when the Trainer has a progress bar) for the real statistics and
            for evaluations that take more than two seconds.

    Attributes:
        last_score: The latest FID (float64), or None before the first evaluation.
        history: One dict per evaluation: ``epoch``, ``step`` and the logged values.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has an invalid value (the message names it); in ``setup``, if the latent shape
            is unknown or two callbacks log the same key; at an evaluation, if the generator returns something that
            is not an image batch in ``value_range``, or non-finite samples with ``nonfinite="raise"``.
        WeightsError: In ``setup`` (before training starts), if the Inception weights cannot be found.

    Example::

        >>> from lightning_ganeval import FIDCallback
        >>> FIDCallback(real="cifar10_train.npz", num_samples=10_000).state_key
        "FIDCallback{'name': 'fid'}"

    .. note:: **Scheduling.** Evaluations happen in ``on_train_epoch_end`` when ``(epoch + 1) % every_n_epochs ==
       0``, never during the sanity check, ``trainer.validate`` or ``trainer.test``, and not under
       ``fast_dev_run`` (like Lightning's ``EarlyStopping`` and ``ModelCheckpoint``, a smoke run stays fast);
       weights are still resolved in ``setup`` so a missing file fails the smoke run. Real statistics are computed
       in ``on_train_start`` (after the sanity check).

    .. note:: **EarlyStopping and ModelCheckpoint.** Lightning runs their ``on_train_epoch_end`` after every other
       callback's, so they see this epoch's value in any order of the callbacks list, with or without a validation
       loop. In ``on_fit_start`` the callback adjusts those that monitor one of its keys: ``EarlyStopping`` checks
       at the end of the training epoch (not at validation end, where it would see the previous evaluation) and
       only on epochs with a fresh evaluation, so ``every_n_epochs > 1`` does not count stale values and
       ``strict=True`` does not fail before the first evaluation; ``patience`` counts evaluations.
       ``ModelCheckpoint`` with ``save_on_train_epoch_end=None`` saves at train epoch end; a warning says when its
       ``every_n_epochs`` lets it rank checkpoints by a stale value. The adjustments are undone in ``teardown``.

    .. note:: **One pass.** An :class:`InceptionScoreCallback` with the same sampling settings (``num_samples``,
       ``batch_size``, ``every_n_epochs``, ``latent_shape``, ``sample_fn``, ``value_range``, ``seed``, weights,
       ``resize``, ``fast``) shares the generator samples and the Inception pass with this callback.

    .. note:: **Determinism.** Rank ``r`` of ``W`` evaluates the global batches ``r, r + W, ...`` of the bank, so
       any number of processes evaluates the same samples in the same batches and logs the same FID. Noise drawn
       by the generator itself from the global torch RNG is seeded per batch from ``seed``, and all global random
       states, module modes, normalisation statistics and ``requires_grad`` flags are restored afterwards. Under
       DDP every rank samples with rank 0's BatchNorm statistics (DDP syncs buffers only at the next forward).

    .. note:: **Strategies.** Single device, DDP (``ddp``, ``ddp_spawn``, ``ddp_notebook``) and mixed or true half
       precision are supported: the generator runs under the precision plugin's context, its output is cast to
       float32, and the extractor runs float32 unless ``fast``. The generator is called directly on
       ``pl_module`` on each rank, so strategies that shard parameters (FSDP, DeepSpeed stage 3) are not.
    """

    _RUNTIME_ATTRIBUTES = (*_GenerativeMetricCallback._RUNTIME_ATTRIBUTES, "_moments", "_reference")

    def __init__(
        self,
        *,
        real: str | os.PathLike[str] | DataLoader | None = None,
        num_samples: int = 10_000,
        batch_size: int = 64,
        every_n_epochs: int = 1,
        latent_shape: int | Sequence[int] | None = None,
        sample_fn: SampleFn | None = None,
        value_range: tuple[float, float] = (-1.0, 1.0),
        real_value_range: tuple[float, float] | None = None,
        real_image_fn: Callable[[Any], Tensor] | None = None,
        num_real: int | None = None,
        inception_weights: str | os.PathLike[str] | None = None,
        resize: str = "tf1",
        fast: bool = False,
        seed: int = 0,
        name: str = "fid",
        log_images: int = 64,
        nonfinite: str = "exclude",
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(
            num_samples=num_samples,
            batch_size=batch_size,
            every_n_epochs=every_n_epochs,
            latent_shape=latent_shape,
            sample_fn=sample_fn,
            value_range=value_range,
            inception_weights=inception_weights,
            resize=resize,
            fast=fast,
            seed=seed,
            name=name,
            nonfinite=nonfinite,
            progress=progress,
            log_images=log_images,
        )
        if real is not None and not isinstance(real, (str, os.PathLike, DataLoader)):
            raise TypeError(
                "`real` must be a path to a .npz statistics file, a torch DataLoader or None (the training"
                f" dataloader), got {type(real).__name__}."
            )
        self.real = os.fspath(real) if isinstance(real, (str, os.PathLike)) else real
        self.real_value_range = (
            self.value_range if real_value_range is None else _check_value_range("real_value_range", real_value_range)
        )
        self.real_image_fn = _check_callable("real_image_fn", real_image_fn)
        self.num_real = None if num_real is None else _check_int("num_real", num_real, 2)
        self.cache_dir = _check_path("cache_dir", cache_dir)
        self.real_fingerprint: str | None = None
        self._saved_real_fingerprint: str | None = None
        self._moments: FIDMoments | None = None
        self._reference: FrechetReference | None = None

    def _min_samples(self) -> int:
        return 2

    def _logged_keys(self) -> list[str]:
        return [self.name, f"{self.name}_num_samples", f"{self.name}_nonfinite"]

    @override
    def state_dict(self) -> dict[str, Any]:
        # A fingerprint, not the statistics: a 2048 x 2048 float64 covariance would add 32 MiB to every checkpoint.
        return {**super().state_dict(), "real_fingerprint": self.real_fingerprint}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._saved_real_fingerprint = state_dict.get("real_fingerprint")

    def _build_accumulators(self, device: torch.device) -> None:
        # `num_features`/`num_classes` let a stand-in extractor (tests, other feature networks) set the sizes.
        self._moments = FIDMoments(num_features=int(getattr(self._extractor, "num_features", 2048))).to(device)

    def _reset_accumulators(self) -> None:
        assert self._moments is not None
        self._moments.reset()

    def _on_setup(self) -> None:
        # Recomputed (from the disk cache, usually) at every fit: the data may have changed between fits.
        self._reference = None

    def _accumulate(self, features: InceptionFeatures, indices: Tensor) -> None:
        assert self._moments is not None
        if len(features.pool):
            self._moments.update(features.pool)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        stats = self._real_statistics(trainer)
        self.real_fingerprint = _fingerprint(stats)
        self._reference = _frechet_reference(stats, self.real_fingerprint, trainer.strategy.root_device)
        saved = self._saved_real_fingerprint
        if saved is not None and saved != self.real_fingerprint:
            rank_zero_warn(
                f"The real statistics of `FIDCallback(name={self.name!r})` differ from those of the checkpoint"
                f" (fingerprint {saved} -> {self.real_fingerprint}); `{self.name}` values before and after the resume"
                " are not comparable.",
                category=UserWarning,
            )

    def _real_statistics(self, trainer: pl.Trainer) -> GaussianStats:
        extractor = self._extractor
        assert extractor is not None
        expect = extractor_provenance(extractor)
        if isinstance(self.real, str):
            stats, _ = load_stats(self.real, expect=expect)
            return stats
        loader = self.real if self.real is not None else self._train_loader(trainer)
        strategy = trainer.strategy

        def compute() -> GaussianStats:
            bar = self._progress_bar(trainer, total=None, desc=f"Real statistics for `{self.name}`", unit="img")

            def progress(done: int, total: int | None) -> None:
                if total is not None and bar.total != total:
                    bar.total = total
                bar.update(done - bar.n)

            # Iterating a DataLoader draws its base seed from the global RNG; keep training's stream untouched.
            with isolated_rng(), contextlib.closing(bar):
                return compute_real_stats(
                    loader,
                    extractor,
                    value_range=self.real_value_range,
                    image_fn=self.real_image_fn,
                    num_real=self.num_real,
                    rank=trainer.global_rank,
                    world_size=trainer.world_size,
                    progress=None if bar.disable else progress,
                    max_workers=default_max_workers(max(1, trainer.num_devices)),
                )

        try:
            dataset_id = dataset_fingerprint(loader)
        except TypeError:
            # An iterable without indices has no cheap identity: compute every run instead of caching.
            return compute()
        count = len(loader.dataset) if self.num_real is None else min(len(loader.dataset), self.num_real)
        # What the extractor receives (collate_fn, transforms, real_image_fn, value range), not just the data.
        content = real_content_digest(
            loader, image_fn=self.real_image_fn, value_range=self.real_value_range, num_real=self.num_real
        )
        key = real_stats_cache_key(
            dataset_id,
            count,
            self.real_value_range,
            extractor,
            content=content,
            image_fn=_describe_callable(self.real_image_fn),
        )
        cache_dir = Path(self.cache_dir) if self.cache_dir is not None else _default_cache_dir()
        return cached_real_stats(
            cache_dir,
            key,
            compute,
            rank=trainer.global_rank,
            barrier=strategy.barrier,
            broadcast=strategy.broadcast,
            provenance={**expect, "value_range": list(self.real_value_range), "dataset": dataset_id},
            expect=expect,
        )

    def _train_loader(self, trainer: pl.Trainer) -> DataLoader:
        loader = trainer.train_dataloader
        if not isinstance(loader, DataLoader):
            raise ValueError(
                f"`FIDCallback(real=None)` uses the training dataloader for the real statistics, but it is a"
                f" {type(loader).__name__}, not a single torch DataLoader. Pass `real=` a DataLoader or a .npz file."
            )
        return loader

    def _compute(self, trainer: pl.Trainer, num_evaluated: int) -> dict[str, float]:
        assert self._moments is not None
        assert self._reference is not None
        try:
            stats = self._moments.compute()
        except ValueError as err:
            # Fewer than 2 finite samples (all excluded): no score this time, the same on every rank.
            rank_zero_warn(f"`{self.name}` could not be computed ({err}); logging NaN.", category=UserWarning)
            return {self.name: float("nan"), f"{self.name}_num_samples": float(num_evaluated)}
        score = self._reference.distance(stats.mean, stats.cov)
        return {self.name: score, f"{self.name}_num_samples": float(stats.n)}


class InceptionScoreCallback(_GenerativeMetricCallback):
    r"""Inception Score of the generator's samples, at the end of training epochs.

    Every ``every_n_epochs`` epochs the callback generates ``num_samples`` images from a fixed latent bank, streams
    the softmax of their bias-free Inception logits into per-split marginals (``splits`` consecutive splits of the
    bank, by global sample index; merged across DDP ranks) and logs ``is`` (mean over splits), ``is_std``
    (``ddof=0``, like the reference code), ``is_num_samples`` and ``is_nonfinite`` (``name`` replaces ``is``).

    Args:
        num_samples: Number of generated samples per evaluation (at least ``splits``).
        splits: Number of splits.
        batch_size: Samples per generator call and Inception pass.
        every_n_epochs: Evaluate at the end of every ``every_n_epochs``-th training epoch.
        latent_shape: Shape of one latent vector; default ``pl_module.hparams.latent_dim``.
        sample_fn: ``sample_fn(pl_module, z) -> images`` for generators that are not ``pl_module(z)``.
        value_range: ``(low, high)`` of the generated images.
        inception_weights: Path to the Inception weights (see :class:`FIDCallback`).
        resize: ``"tf1"`` (reference) or ``"antialias"``.
        fast: Faster, not reference-exact Inception.
        seed: Seed of the latent bank.
        name: Logged key prefix; ``is`` by default.
        nonfinite: ``"exclude"`` (default) or ``"raise"``, as for :class:`FIDCallback`.
        progress: Show a progress bar for evaluations longer than two seconds (rank 0).

    Attributes:
        last_score: The latest IS mean, or None before the first evaluation.
        history: One dict per evaluation: ``epoch``, ``step`` and the logged values.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has an invalid value, e.g. ``num_samples < splits``.

    Scheduling, EarlyStopping/ModelCheckpoint handling, sharing the pass with a :class:`FIDCallback` and
    determinism are as documented there.

    Example::

        >>> from lightning_ganeval import InceptionScoreCallback
        >>> InceptionScoreCallback(num_samples=5_000, splits=10).state_key
        "InceptionScoreCallback{'name': 'is'}"
    """

    _RUNTIME_ATTRIBUTES = (*_GenerativeMetricCallback._RUNTIME_ATTRIBUTES, "_marginals")

    def __init__(
        self,
        *,
        num_samples: int = 10_000,
        splits: int = 10,
        batch_size: int = 64,
        every_n_epochs: int = 1,
        latent_shape: int | Sequence[int] | None = None,
        sample_fn: SampleFn | None = None,
        value_range: tuple[float, float] = (-1.0, 1.0),
        inception_weights: str | os.PathLike[str] | None = None,
        resize: str = "tf1",
        fast: bool = False,
        seed: int = 0,
        name: str = "is",
        nonfinite: str = "exclude",
        progress: bool = True,
    ) -> None:
        self.splits = _check_int("splits", splits, 1)
        super().__init__(
            num_samples=num_samples,
            batch_size=batch_size,
            every_n_epochs=every_n_epochs,
            latent_shape=latent_shape,
            sample_fn=sample_fn,
            value_range=value_range,
            inception_weights=inception_weights,
            resize=resize,
            fast=fast,
            seed=seed,
            name=name,
            nonfinite=nonfinite,
            progress=progress,
        )
        self._marginals: ISMarginals | None = None

    def _min_samples(self) -> int:
        return self.splits

    def _logged_keys(self) -> list[str]:
        return [self.name, f"{self.name}_std", f"{self.name}_num_samples", f"{self.name}_nonfinite"]

    def _sampling_settings(self) -> dict[str, Any]:
        return {**super()._sampling_settings(), "splits": self.splits}

    def _build_accumulators(self, device: torch.device) -> None:
        num_classes = int(getattr(self._extractor, "num_classes", 1008))
        self._marginals = ISMarginals(self.num_samples, splits=self.splits, num_classes=num_classes).to(device)

    def _reset_accumulators(self) -> None:
        assert self._marginals is not None
        self._marginals.reset()

    def _accumulate(self, features: InceptionFeatures, indices: Tensor) -> None:
        assert self._marginals is not None
        if len(features.logits):
            self._marginals.update(features.logits, indices)

    def _compute(self, trainer: pl.Trainer, num_evaluated: int) -> dict[str, float]:
        assert self._marginals is not None
        try:
            mean, std = self._marginals.compute()
        except ValueError as err:
            # Every sample of a split was non-finite and excluded: no score this time (the same on every rank).
            rank_zero_warn(f"`{self.name}` could not be computed ({err}); logging NaN.", category=UserWarning)
            mean, std = float("nan"), float("nan")
        return {
            self.name: float(mean),
            f"{self.name}_std": float(std),
            f"{self.name}_num_samples": float(num_evaluated),
        }


# The square root of a 2048 x 2048 covariance takes seconds on a CPU; refits in one process (sweeps, tests) reuse it.
_REFERENCES: dict[tuple[str, str], FrechetReference] = {}
_MAX_REFERENCES = 2


def _frechet_reference(stats: GaussianStats, fingerprint: str, device: torch.device) -> FrechetReference:
    key = (fingerprint, str(device))
    reference = _REFERENCES.pop(key, None)
    if reference is None:
        reference = FrechetReference(stats.mean, stats.cov, device=device)
    _REFERENCES[key] = reference  # most recently used last
    while len(_REFERENCES) > _MAX_REFERENCES:
        del _REFERENCES[next(iter(_REFERENCES))]
    return reference


def _fingerprint(stats: GaussianStats) -> str:
    """A short digest of real statistics (n, mean, covariance) to notice a change on resume."""
    digest = hashlib.sha256()
    digest.update(str(stats.n).encode())
    for tensor in (stats.mean, stats.cov):
        digest.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _describe_callable(fn: Callable[..., Any] | None) -> str:
    """A stable description of ``real_image_fn`` for the cache key (lambdas all read ``<lambda>``)."""
    if fn is None:
        return "default"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def _default_cache_dir() -> Path:
    """``$TORCH_HOME/lightning_ganeval/real_stats`` (``~/.cache/torch/...`` by default), next to torch hub's cache."""
    return Path(torch.hub.get_dir()).parent / "lightning_ganeval" / "real_stats"
