"""FIDCallback: the Lightning layer of :class:`lightning_ganeval.metrics.FID`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

import lightning.pytorch as pl
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader
from typing_extensions import Unpack

from lightning_ganeval.callbacks._arguments import RealMetricArguments, pixel_space, resolve_callable
from lightning_ganeval.callbacks._checks import check_bool, check_extrapolation_samples, check_int, check_path
from lightning_ganeval.callbacks._sample_fns import function_key
from lightning_ganeval.callbacks.base import _GenerativeMetricCallback
from lightning_ganeval.metrics.fid import FID
from lightning_ganeval.pixel_space import PixelSpace

__all__ = ["FIDCallback", "RealDataCallbackMixin"]


class RealDataCallbackMixin:
    """Arguments and state of callbacks whose metric compares with real images (FID, KID, precision/recall)."""

    name: str
    real: Any  # set by the subclass from its own `real=` argument, checked in `_init_real`
    _metric: Any

    # False where the metric compares per-sample features, which a statistics file does not hold.
    _accepts_stats_file: ClassVar[bool] = False

    def _init_real(self, values: Mapping[str, Any]) -> None:
        real = self.real  # as the subclass got it
        if real is not None and not isinstance(real, (str, os.PathLike, DataLoader)):
            raise TypeError(
                "`real` must be a path to a .npz statistics file, a torch DataLoader or None (the training"
                f" dataloader), got {type(real).__name__}."
            )
        if isinstance(real, (str, os.PathLike)) and not self._accepts_stats_file:
            raise ValueError(
                f"`real` of {type(self).__name__} must be a DataLoader or None: it compares per-sample features, which"
                f" a statistics file ({os.fspath(real)!r}) does not hold."
            )
        self.real = os.fspath(real) if isinstance(real, (str, os.PathLike)) else real
        self.real_value_range = values["real_value_range"]
        self.real_normalize = values["real_normalize"]
        self._real_space_declared = pixel_space("real_", self.real_value_range, self.real_normalize)
        self.real_image_fn = resolve_callable("real_image_fn", values["real_image_fn"])
        num_real = values["num_real"]
        self.num_real = None if num_real is None else check_int("num_real", num_real, 2)
        self.cache_dir = check_path("cache_dir", values["cache_dir"])
        self.real_fingerprint: str | None = None
        self._saved_real_fingerprint: str | None = None

    @property
    def _real_space(self) -> PixelSpace | None:
        return self._real_space_declared

    def _wants_real_loader(self) -> bool:
        return not isinstance(self.real, str)

    def _real_loader(self, trainer: pl.Trainer) -> Any:
        if isinstance(self.real, str):
            return None
        if self.real is not None:
            return self.real
        loader = trainer.train_dataloader
        if not isinstance(loader, DataLoader):
            raise ValueError(
                f"`{type(self).__name__}(real=None)` uses the training dataloader for the real data, but it is a"
                f" {type(loader).__name__}, not a single torch DataLoader. Pass `real=` a DataLoader"
                f"{' or a .npz file' if self._accepts_stats_file else ''}."
            )
        return loader

    def _real_source(self, trainer: pl.Trainer) -> Any:
        return self.real if isinstance(self.real, str) else self._real_loader(trainer)

    def _real_settings_key(self) -> tuple[Any, ...]:
        # Equivalent `real_image_fn`s (one lambda per callback) share the real pass.
        return (self._real_space_declared, function_key(self.real_image_fn), self.num_real, self.cache_dir)

    def _start_new_history(self) -> None:
        super()._start_new_history()  # type: ignore[misc]
        self.real_fingerprint = None
        self._saved_real_fingerprint = None

    def state_dict(self) -> dict[str, Any]:
        # A fingerprint, not the real data: a 2048 x 2048 float64 covariance would add 32 MiB to every checkpoint.
        return {**super().state_dict(), "real_fingerprint": self.real_fingerprint}  # type: ignore[misc]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # type: ignore[misc]
        self._saved_real_fingerprint = state_dict.get("real_fingerprint")

    def _on_real_data(self, trainer: pl.Trainer) -> None:
        real = getattr(self._metric, "real", None)
        if real is not None:  # once per fit: how many real rows (KID, PR) or images (FID) the metric compares with
            rank_zero_info(f"lightning_ganeval: `{self.name}` compares with {real.describe_rows()}.")
        fingerprint = getattr(self._metric, "real_fingerprint", None)
        self.real_fingerprint = fingerprint
        saved = self._saved_real_fingerprint
        if saved is not None and fingerprint is not None and saved != fingerprint:
            rank_zero_warn(
                f"The real statistics of `{type(self).__name__}(name={self.name!r})` differ from those of the"
                f" checkpoint (fingerprint {saved} -> {fingerprint}); `{self.name}` values before and after the resume"
                " are not comparable.",
                category=UserWarning,
            )


class FIDCallback(RealDataCallbackMixin, _GenerativeMetricCallback):
    r"""Fréchet Inception Distance of the generator's samples to real data, at the end of training epochs.

    Every ``every_n_epochs`` epochs the callback generates ``num_samples`` images from a fixed latent bank, streams
    their Inception pool3 features (or ``feature_extractor``'s) into float64 moments merged across DDP ranks, and
    logs ``fid`` (or ``name``), ``fid_num_samples``, ``fid_nonfinite``, ``fid_clamped`` and, with ``extrapolate``,
    ``fid_inf`` through ``pl_module.log`` on every rank with the same value.

    Args:
        real: The real side: a ``.npz`` statistics file (:func:`~lightning_ganeval.stats_files.save_stats`, or
            pytorch-fid's ``mu``/``sigma`` files), a :class:`~torch.utils.data.DataLoader`, or ``None`` for the
            Trainer's training dataloader. Statistics computed from a loader are cached on disk.
        num_samples: Generated samples per evaluation.
        batch_size: Samples per generator call and network forward.
        every_n_epochs: Evaluate at the end of every ``every_n_epochs``-th training epoch (1 when neither this nor
            ``every_n_train_steps`` is given).
        every_n_train_steps: Evaluate instead every ``every_n_train_steps`` optimizer steps (``trainer.global_step``,
            what ``ModelCheckpoint(every_n_train_steps=...)`` counts: with gradient accumulation one step per
            accumulated batch group, with manual optimization one per ``optimizer.step()``, so two per batch for a
            GAN stepping a generator and a discriminator optimizer). Mutually exclusive with ``every_n_epochs``.
        model_weights: With a ``WeightAveraging`` callback (e.g. ``EMAWeightAveraging``) in the Trainer:
            ``"averaged"`` (default) scores its averaged copy, ``"current"`` the weights being trained, ``"both"``
            logs both (the current ones as ``<key>_current``). Without one, the current weights are scored.
        latent_shape: Shape of one latent vector; default ``pl_module.hparams.latent_dim``.
        sample_fn: ``sample_fn(pl_module, z) -> images`` for generators that are not ``pl_module(z)`` (an EMA copy,
            class-conditional sampling, truncation), or its import path ``"package.module.function"``. Must pickle
            for ``ddp_spawn`` (no lambda there).
        value_range: ``(low, high)`` of the images (real and generated: one pixel space, as the discriminator
            sees them). Default: inferred from the real data (see the README's "pixel space").
        normalize: ``(mean, std)`` instead of ``value_range``, for images ``(pixels01 - mean) / std`` (torchvision
            ``Normalize``); scalars or per-channel sequences.
        real_value_range: Value range of the real images when it differs from the generated one.
        real_normalize: ``(mean, std)`` of the real images when it differs from the generated one.
        real_image_fn: Picks the images out of a real batch (or an import path to such a function); default: the
            batch itself, the one image tensor of a tuple/list (``TensorDataset(images, labels)``, torchvision
            ``(image, label)``), or ``batch["image"]`` / ``batch["pixel_values"]``.
        num_real: Use only the first ``num_real`` real samples; required for unsized (iterable) real data.
        inception_weights: Path to the Inception weights; default: ``$LIGHTNING_GANEVAL_INCEPTION_WEIGHTS``, the
            torch hub cache, then a verified download (see :func:`~lightning_ganeval.weights.resolve_weights`).
        resize: How images reach 299 x 299: ``"tf1"`` (reference) or ``"antialias"``.
        fast: Faster, not reference-exact Inception (see :class:`~lightning_ganeval.inception.InceptionExtractor`).
        feature_extractor: Any ``nn.Module`` mapping uint8 ``N x 3 x H x W`` images to ``N x d`` features (it does
            its own resizing and normalisation), e.g. :class:`~lightning_ganeval.dinov2.DINOv2Extractor` for
            FD_DINOv2; default: Inception pool3. It runs in eval mode on the training device and never lands in a
            checkpoint; its identity (class and weights digest) keys the real-statistics cache.
        extrapolate: Also log ``<name>_inf``: FID∞ (Chong & Forsyth 2020), the intercept of a line in 1/N fitted
            to the FID of the first k·N/points samples.
        extrapolation_points: Number of sample counts in that fit (at least 2).
        seed: Seed of the latent bank (a private generator; the global random state is left untouched).
        name: Logged key; ``fid`` by default. Two callbacks in one Trainer need different names.
        log_images: Samples shown as an image grid in the loggers at each evaluation; 0 disables it.
        nonfinite: ``"exclude"``: leave samples with NaN/Inf out, warn and log their count; ``"raise"``.
        cache_dir: Folder of the real-data cache; default ``$TORCH_HOME/lightning_ganeval/real_stats``.
        progress: Show progress bars (rank 0, when the Trainer has one) for the real pass and long evaluations.

    Attributes:
        last_score: The latest FID (float64), or None before the first evaluation.
        history: One dict per evaluation: ``epoch``, ``step`` and the logged values.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has an invalid value (the message names it); in ``on_train_start`` (before any
            training step), if the pre-flight batch of the generator or of the real data is not an image batch in
            the pixel space, or unsized real data come without ``num_real``.
        WeightsError: In ``setup``, if the Inception weights cannot be found.

    Example::

        >>> from lightning_ganeval import FIDCallback
        >>> FIDCallback(real="cifar10_train.npz", num_samples=10_000).state_key
        "FIDCallback{'name': 'fid'}"

    .. note:: **Scheduling.** Evaluations happen in ``on_train_epoch_end`` when ``(epoch + 1) % every_n_epochs ==
       0``, never during the sanity check, ``validate``/``test`` or ``fast_dev_run``. The pixel space, the real
       data and a pre-flight check of one generator batch happen in ``on_train_start``.

    .. note:: **EarlyStopping and ModelCheckpoint** monitoring one of the keys are adjusted in ``on_fit_start``:
       ``EarlyStopping`` checks at train-epoch end and only on evaluation epochs (``patience`` counts
       evaluations); ``ModelCheckpoint`` saves at train-epoch end and ranks checkpoints only on evaluation epochs.
       Undone in ``teardown`` and ``on_exception``.

    .. note:: **One pass.** Metric callbacks with the same sampling settings (``num_samples``, ``batch_size``,
       ``every_n_epochs``, ``latent_shape``, ``sample_fn``, pixel space, ``seed``, Inception settings) share the
       generator samples; each distinct feature network then runs once on them.

    .. note:: **Determinism.** Rank ``r`` of ``W`` evaluates the global batches ``r, r + W, ...`` of the bank, so
       any number of processes logs the same FID. All global random states, module modes, normalisation
       statistics and ``requires_grad`` flags are restored after each evaluation, pre-flight and real pass, so
       a seeded run trains exactly as it would without the callback.
    """

    _accepts_stats_file = True

    def __init__(
        self,
        *,
        real: str | os.PathLike[str] | DataLoader | None = None,
        extrapolate: bool = False,
        extrapolation_points: int = 5,
        log_images: int = 64,
        name: str = "fid",
        **kwargs: Unpack[RealMetricArguments],
    ) -> None:
        self.real = real
        self.extrapolate = check_bool("extrapolate", extrapolate)
        self.extrapolation_points = check_int("extrapolation_points", extrapolation_points, 2)
        super().__init__(name=name, log_images=log_images, **kwargs)

    def _check_arguments(self) -> None:
        if self.extrapolate:
            # The generic check of num_samples would name only num_samples; the bound comes from the points.
            check_extrapolation_samples(self.num_samples, 2 * self.extrapolation_points, self.extrapolation_points, 2)

    def _build_metric(self) -> FID:
        return FID(
            name=self.name,
            feature_extractor=self.feature_extractor,
            extrapolate=self.extrapolate,
            extrapolation_points=self.extrapolation_points,
        )

    def _on_real_data(self, trainer: pl.Trainer) -> None:
        super()._on_real_data(trainer)
        stats = self._metric.real.stats if self._metric.real is not None else None
        dims = stats.num_features if stats is not None else 2048
        if self.num_samples < dims:  # `_on_real_data` runs once per fit, so this warns once per fit
            rank_zero_warn(
                f"`{self.name}` uses num_samples={self.num_samples} < {dims} features: the covariance is singular and"
                " FID is strongly biased at small N, so the value is not comparable with published 50k-sample"
                " numbers (compare runs at equal num_samples; `extrapolate=True` logs FID∞).",
                category=UserWarning,
            )
