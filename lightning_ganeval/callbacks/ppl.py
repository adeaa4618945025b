"""PPLCallback: the Lightning layer of :class:`lightning_ganeval.metrics.ppl.PerceptualPathLength`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

import lightning.pytorch as pl
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from typing_extensions import Unpack, override

from lightning_ganeval.callbacks._arguments import ScheduleArguments, resolve_callable
from lightning_ganeval.callbacks._checks import check_bool, check_choice, check_int, check_path
from lightning_ganeval.callbacks._scheduled import _ScheduledCallback, rank_zero_first
from lightning_ganeval.callbacks._shared_pass import _is_loader, agreed_real_space
from lightning_ganeval.lpips import LPIPSVGG16, resolve_lpips_weights
from lightning_ganeval.metrics.ppl import (
    DEFAULT_EPSILON,
    INTERPOLATIONS,
    SAMPLINGS,
    PerceptualPathLength,
    _check_discard,
)
from lightning_ganeval.networks import network_device
from lightning_ganeval.pixel_space import PixelSpace
from lightning_ganeval.sampling import isolated_rng

__all__ = ["MappingFn", "PPLCallback"]

MappingFn = Callable[["pl.LightningModule", Tensor], Tensor]


class PPLCallback(_ScheduledCallback):
    r"""Perceptual path length of the generator (Karras et al. 2019), at the end of training epochs or steps.

    Logs ``ppl`` (``name`` replaces it), ``ppl_std``, ``ppl_nonfinite`` and ``ppl_clamped``: the mean over the
    pairs of a fixed seeded bank of ``LPIPS(G(I(t)), G(I(t + ε))) / ε²``, after discarding the values outside the
    1st-99th percentiles (StyleGAN, torch-fidelity). Defaults: ``ε = 1e-4``, ``t = 0`` (``sampling="end"``), slerp
    in z; with ``mapping_fn`` the path runs in W (``mapping_fn(pl_module, z) -> w``, then ``sample_fn(pl_module,
    w) -> images``) and is linear by default, StyleGAN's ``ppl_wend``. LPIPS is VGG16 with the v0.1 linear heads on
    images resized to ``resize`` (64 as torch-fidelity; StyleGAN uses 256), in float (``quantize=True`` rounds to
    uint8 first, torch-fidelity's default input). With the same weights, latents, generator and settings the
    per-pair distances equal torch-fidelity's bit for bit; the value is identical at any world size.

    Its own generator pass: PPL needs pairs of images ε apart, which no other metric uses, so one evaluation costs
    ``2 × num_pairs`` generated images and ``2 × num_pairs`` VGG16 passes at ``resize`` px, on top of the pass the
    other metric callbacks share. A generator that draws noise itself must make it deterministic (e.g. StyleGAN's
    ``noise_mode="const"`` in ``sample_fn``): otherwise the two images of a pair differ by their noise.

    Memory: 8 bytes per pair on every rank (the distances), this rank's latents, one batch of images, and VGG16's
    convolutions (59 MB of float32 weights) on the training device.

    Args:
        num_pairs: Pairs per evaluation (torch-fidelity 10 000, StyleGAN 50 000).
        batch_size: Pairs per generator call (the generator gets ``2 × batch_size`` latents at once).
        every_n_epochs: Evaluate every this many epochs (default 1); exclusive with ``every_n_train_steps``.
        every_n_train_steps: Evaluate when the optimizer step count crosses a multiple of this.
        model_weights: With a ``WeightAveraging`` callback: ``"averaged"`` (default), ``"current"`` or ``"both"``
            (the current weights logged as ``<key>_current``).
        latent_shape: Shape of ``z``; default ``pl_module.hparams.latent_dim``.
        sample_fn: ``sample_fn(pl_module, x) -> images`` (``x`` is z, or w with ``mapping_fn``); default
            ``pl_module(x)``; a callable or an import path.
        mapping_fn: ``mapping_fn(pl_module, z) -> w``: interpolate in W (needs ``sample_fn`` to render w).
        interpolation: ``"slerp"`` or ``"lerp"``; default slerp in z, lerp in W.
        sampling: ``"end"`` (``t = 0``) or ``"full"`` (``t ~ U[0, 1)`` per pair, StyleGAN's ``*full``).
        epsilon: The step ``ε``.
        discard: ``(lower, upper)`` percentiles kept between, ``None`` on a side to keep that side.
        value_range: Pixel space of the generated images, ``(low, high)``; default: inferred from the training data
            as the other callbacks do (``(-1, 1)`` without a training DataLoader).
        normalize: Or a torchvision-style ``(mean, std)``.
        resize: LPIPS input side, or ``None`` for the images' own size.
        quantize: Round to uint8 before LPIPS.
        lpips_weights: Local ``weights-vgg16-lpips.pth``; else ``$LIGHTNING_GANEVAL_LPIPS_WEIGHTS``, the torch hub
            cache, a verified download.
        vgg16_weights: Local ``vgg16-397923af.pth``; else ``$LIGHTNING_GANEVAL_VGG16_WEIGHTS``, the cache (shared
            with torchvision), a verified download.
        lpips: Another distance network, ``forward(images0, images1) -> (N,)`` on RGB in [0, 255]; replaces LPIPS.
        seed: Seed of the pair bank.
        name: Logged key; each callback of a Trainer needs its own.
        nonfinite: ``"exclude"`` (leave pairs with NaN/Inf images out, count them) or ``"raise"``.
        progress: Show a progress bar for long evaluations.

    Raises:
        TypeError, ValueError: On invalid arguments, naming the argument.
    """

    _RUNTIME_ATTRIBUTES: ClassVar[tuple[str, ...]] = ("_network", "_monitors", "_averaging")

    def __init__(
        self,
        *,
        num_pairs: int = 10_000,
        mapping_fn: MappingFn | str | None = None,
        interpolation: str | None = None,
        sampling: str = "end",
        epsilon: float = DEFAULT_EPSILON,
        discard: tuple[float | None, float | None] = (1.0, 99.0),
        resize: int | None = 64,
        quantize: bool = False,
        lpips_weights: str | os.PathLike[str] | None = None,
        vgg16_weights: str | os.PathLike[str] | None = None,
        lpips: nn.Module | None = None,
        name: str = "ppl",
        **kwargs: Unpack[ScheduleArguments],
    ) -> None:
        self.num_pairs = check_int("num_pairs", num_pairs, 1)
        self._init_arguments({"name": name, **kwargs})
        self.mapping_fn = resolve_callable("mapping_fn", mapping_fn)
        if self.mapping_fn is not None and self.sample_fn is None:
            raise ValueError(
                "`mapping_fn` needs `sample_fn`: with `mapping_fn(pl_module, z) -> w` the path runs in W, and"
                " `sample_fn(pl_module, w)` must render w (e.g. `lambda m, w: m.G.synthesis(w, noise_mode='const')`)."
            )
        if interpolation is not None:
            check_choice("interpolation", interpolation, INTERPOLATIONS)
        self.interpolation = interpolation
        self.sampling = check_choice("sampling", sampling, SAMPLINGS)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon < 1:
            raise ValueError(f"`epsilon` must be a number in (0, 1), got {epsilon!r}.")
        self.epsilon = float(epsilon)
        self.discard = _check_discard(discard)
        if resize is not None:
            check_int("resize", resize, 1)
        self.resize = resize
        self.quantize = check_bool("quantize", quantize)
        self.lpips_weights = check_path("lpips_weights", lpips_weights)
        self.vgg16_weights = check_path("vgg16_weights", vgg16_weights)
        if lpips is not None and not isinstance(lpips, nn.Module):
            raise TypeError(
                "`lpips` must be a torch.nn.Module mapping two batches of RGB images in [0, 255] to N distances, or"
                f" None for LPIPS-VGG16; got {type(lpips).__name__}."
            )
        self.lpips = lpips

        self._metric: PerceptualPathLength | None = None
        self._network: nn.Module | None = None
        self._resolved_latent_shape: tuple[int, ...] | None = None

    # ----------------------------------------------------------------------------------------- keys, state

    def _logged_keys(self) -> list[str]:
        keys = [self.name, f"{self.name}_std", f"{self.name}_nonfinite", f"{self.name}_clamped"]
        if self.model_weights == "both":
            keys += [f"{self.name}_current", f"{self.name}_std_current"]
        return keys

    def _settings(self) -> dict[str, Any]:
        # An undeclared space is inferred from the training data in on_train_start: not a setting to compare.
        space = self._space.describe() if self._space is not None else None
        return {
            "num_pairs": self.num_pairs,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epsilon": self.epsilon,
            "interpolation": self._interpolation(),
            "sampling": self.sampling,
            "discard": list(self.discard),
            "pixel_space": space,
            "resize": self.resize,
            "quantize": self.quantize,
            "latent_shape": list(self._resolved_latent_shape or self.latent_shape or []) or None,
        }

    def _interpolation(self) -> str:
        if self.interpolation is not None:
            return self.interpolation
        return "lerp" if self.mapping_fn is not None else "slerp"

    # ----------------------------------------------------------------------------------------- hooks

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._check_unique_keys(trainer)
        self._resolved_latent_shape = self._resolve_latent_shape(pl_module)
        device = trainer.strategy.root_device
        # Building a network draws from the global RNG (parameter initialisation before the weights are loaded):
        # training's random stream must not notice.
        with isolated_rng():
            network = self.lpips
            if network is None:
                self._resolve_weights_rank_zero_first(trainer)
                network = LPIPSVGG16(self.lpips_weights, self.vgg16_weights, resize=self.resize, progress=False)
            self._network = network.to(device)
        self._metric = PerceptualPathLength(
            self._resolved_latent_shape,
            num_pairs=self.num_pairs,
            batch_size=self.batch_size,
            seed=self.seed,
            epsilon=self.epsilon,
            interpolation=self._interpolation(),
            sampling=self.sampling,
            space=self._space or PixelSpace.from_value_range(-1.0, 1.0),
            resize=self.resize,
            quantize=self.quantize,
            discard=self.discard,
            mapping=self.mapping_fn is not None,
            lpips=self._network,
            name=self.name,
        )
        self._evaluated_epoch = None
        self._evaluated_step = None

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_schedule(trainer)
        if self._space is None and self._metric is not None and not trainer.fast_dev_run:
            self._metric.space = self._infer_space(trainer)

    def _infer_space(self, trainer: pl.Trainer) -> PixelSpace:
        """The training data's pixel space, as the other callbacks infer it (the generator imitates the data)."""
        loader = trainer.train_dataloader
        if not _is_loader(loader):
            space = PixelSpace.from_value_range(-1.0, 1.0)
            rank_zero_info(
                f"lightning_ganeval: `{self.name}` has no training DataLoader to look at; generated images are read"
                f" as {space.describe()} (the default). Pass `value_range=` or `normalize=` to declare it."
            )
            return space
        space, reason = agreed_real_space(trainer, loader, dataset_name="train data")
        rank_zero_info(
            f"lightning_ganeval: `{self.name}` inferred the pixel space {space.describe()} from {reason}; generated"
            " images are read in the same space. Pass `value_range=` or `normalize=` to declare it."
        )
        return space

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._release()

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._release()

    def _release(self) -> None:
        self._undo_monitors()
        self._network = None
        self._metric = None

    # ------------------------------------------------------------------------------------- evaluation

    def _evaluate_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        first = self._first_weights()
        values = self._evaluate(trainer, pl_module, first)
        if first == "averaged" and self.model_weights == "both":
            current = self._evaluate(trainer, pl_module, "current")
            values[f"{self.name}_current"] = current[self.name]
            values[f"{self.name}_std_current"] = current[f"{self.name}_std"]
        self._publish(trainer, pl_module, values, self.name)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, weights: str) -> dict[str, float]:
        assert self._metric is not None, "setup(stage='fit') must run before an evaluation"
        module = self._scored_module(pl_module, weights)
        sample_fn, mapping_fn = self.sample_fn, self.mapping_fn
        render = module if sample_fn is None else (lambda x: sample_fn(module, x))
        mapping = None if mapping_fn is None else (lambda z: mapping_fn(module, z))
        source = (
            "pl_module(z)"
            if sample_fn is None
            else ("sample_fn(pl_module, w)" if mapping else "sample_fn(pl_module, z)")
        )
        precision = trainer.precision_plugin

        def call(fn: Callable[[Tensor], Any], x: Tensor) -> Any:
            # Autocast for "*-mixed", the low default dtype for "*-true": the generator runs as in training.
            with precision.predict_step_context():
                return fn(precision.convert_input(x))

        enabled = self.progress and trainer.is_global_zero and trainer.progress_bar_callback is not None
        total = sum(len(b.indices) for b in self._metric.bank.shard(trainer.global_rank, trainer.world_size))
        bar = Tqdm(
            total=total, desc=f"Evaluating {self.name}", unit="pair", leave=False, delay=2.0, disable=not enabled
        )
        with bar:
            result = self._metric.evaluate(
                render,
                mapping_fn=mapping,
                module=module,
                rank=trainer.global_rank,
                world_size=trainer.world_size,
                generator_device=network_device(module),
                network_device=trainer.strategy.root_device,
                call=call,
                progress=lambda done: bar.update(done - bar.n),
                source=source if weights == "current" else f"{source} on the averaged weights",
            )
        if result.num_nonfinite and self.nonfinite == "raise":
            raise ValueError(
                f"The generator produced non-finite (NaN or Inf) images for {result.num_nonfinite} of"
                f" {self.num_pairs} pairs at epoch {trainer.current_epoch}, and `nonfinite='raise'`. Pass"
                " `nonfinite='exclude'` to leave them out and log their count instead."
            )
        if result.num_nonfinite:
            rank_zero_warn(
                f"{result.num_nonfinite} of {self.num_pairs} pairs held NaN or Inf images at epoch"
                f" {trainer.current_epoch}; they are left out of `{self.name}` (logged as `{self.name}_nonfinite`).",
                category=UserWarning,
            )
        values = dict(result.values)
        values[f"{self.name}_nonfinite"] = float(result.num_nonfinite)
        values[f"{self.name}_clamped"] = result.clamped_fraction
        # Identical on every rank already; broadcasting rank 0's makes EarlyStopping decide alike everywhere.
        return trainer.strategy.broadcast(values, src=0)

    # ----------------------------------------------------------------------------------------- helpers

    def _resolve_weights_rank_zero_first(self, trainer: pl.Trainer) -> None:
        # Rank 0 finds (and if needed downloads) the files first; the others then find them in the cache.
        rank_zero_first(
            trainer, lambda: resolve_lpips_weights(self.lpips_weights, self.vgg16_weights, progress=self.progress)
        )
