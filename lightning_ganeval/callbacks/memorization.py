"""MemorizationCallback: the Lightning layer of :class:`lightning_ganeval.metrics.Memorization`, plus its grid."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, Subset
from typing_extensions import Unpack, override

from lightning_ganeval.callbacks._arguments import RealMetricArguments
from lightning_ganeval.callbacks._checks import check_int
from lightning_ganeval.callbacks.base import _GenerativeMetricCallback
from lightning_ganeval.callbacks.fid import RealDataCallbackMixin
from lightning_ganeval.callbacks.grids import log_grid
from lightning_ganeval.images import to_uint8_rgb
from lightning_ganeval.metrics.memorization import Memorization
from lightning_ganeval.real_images import iter_real_images
from lightning_ganeval.real_pass import prepare_real_data
from lightning_ganeval.sampling import check_generated, preserved_module_state, seed_batch_noise

__all__ = ["MemorizationCallback"]


class MemorizationCallback(RealDataCallbackMixin, _GenerativeMetricCallback):
    r"""Does the generator copy its training images? Three numbers and a picture of the evidence, each evaluation.

    Logs ``authpct`` (Alaa et al. 2022 as dgm-eval computes it: the percentage of generated samples farther from
    their nearest training sample than that sample is from its own nearest training neighbour; near 0 for a
    copying generator), ``ct`` (Meehan et al. 2020's C_T with dgm-eval's constants: negative means the samples lie
    closer to the training data than held-out real data do), ``memorized_fraction`` (the share of generated
    samples whose nearest-training distance is at or below the ``quantile`` (1 %) of the training samples' own
    nearest-neighbour distances: about ``quantile`` for a generator of the data distribution, up to 1 for one that
    copies), ``memorization_num_samples``, ``_nonfinite`` and ``_clamped``. Another ``name`` prefixes every key.
    Definitions and conventions: :mod:`lightning_ganeval.metrics.memorization`.

    The real data (``real``, default the training dataloader) are the *training* images. C_T needs held-out real
    images: ``real_test=`` a DataLoader of them, or else the callback splits ``test_fraction`` of the real samples
    off with ``split_seed`` (and says so once); those then no longer count as training images for any of the three
    numbers.

    Each evaluation also logs the image grid ``<name>_nearest_training`` to every logger that shows images
    (TensorBoard, W&B, MLflow, a PNG under ``CSVLogger``'s ``log_dir/images``): one row per generated sample among
    the ``log_nearest`` closest to the training set (closest first), the generated image in the first column and
    its ``neighbours`` nearest training images beside it, nearest first. Neighbours are found in feature space; the
    pixels shown are read back by index: from a map-style dataset directly (``dataset[i]``, through the loader's
    ``collate_fn`` and ``real_image_fn``), from iterable data by reading the stream again up to the largest index
    needed (so the stream must give the same images in the same order each time, as a real pass over it assumes).
    The generated images are made again from the same latents and noise seeds on rank 0.

    Features are Inception pool3 by default; dgm-eval recommends DINOv2 (``feature_extractor=DINOv2Extractor()``).
    Cost: see the README ("Memorisation").

    Args:
        real: The training images: a DataLoader, or ``None`` for the training dataloader.
        real_test: Held-out real images for C_T (a DataLoader), read once per fit in the same pixel space.
        num_samples: Generated samples per evaluation.
        max_real: Real (training, plus split-off test) samples kept: the first ``max_real`` of the real data.
        test_fraction: Share of the real samples split off as test images when ``real_test`` is None; 0 turns
            C_T off (``ct`` is NaN).
        split_seed: Seed of that split.
        quantile: The threshold of ``memorized_fraction``, as a quantile of the training self-distances.
        block_size: Rows per block of the nearest-neighbour searches (memory about 8 × block_size × max_real bytes
            on the evaluation device).
        log_nearest: Generated samples in the grid; 0 disables it.
        neighbours: Training images beside each.
        Other arguments: as :class:`~lightning_ganeval.FIDCallback`.

    Raises:
        ValueError: bad arguments (at construction); too few real samples for the split (in ``on_train_start``);
            and the errors of :class:`~lightning_ganeval.FIDCallback`.
    """

    def __init__(
        self,
        *,
        real: DataLoader | None = None,
        real_test: DataLoader | None = None,
        max_real: int = 50_000,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        quantile: float = 0.01,
        block_size: int = 4096,
        log_nearest: int = 8,
        neighbours: int = 3,
        name: str = "memorization",
        **kwargs: Unpack[RealMetricArguments],
    ) -> None:
        if real_test is not None and not isinstance(real_test, DataLoader):
            raise TypeError(
                f"`real_test` must be a torch DataLoader of held-out real images or None, got {real_test!r:.80}."
            )
        self.real = real
        self.real_test = real_test
        self.max_real = check_int("max_real", max_real, 2)
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.quantile = quantile
        self.block_size = block_size
        self.log_nearest = check_int("log_nearest", log_nearest, 0)
        self.neighbours = check_int("neighbours", neighbours, 1)
        super().__init__(name=name, **kwargs)

    def _build_metric(self) -> Memorization:
        # The metric checks test_fraction, split_seed, quantile and block_size with messages naming them.
        return Memorization(
            name=self.name,
            feature_extractor=self.feature_extractor,
            max_real=self.max_real,
            test_fraction=self.test_fraction,
            split_seed=self.split_seed,
            quantile=self.quantile,
            block_size=self.block_size,
            nearest=self.log_nearest,
            neighbours=self.neighbours,
        )

    def _logged_keys(self) -> list[str]:
        return [*self._metric.keys(), f"{self.name}_nonfinite", f"{self.name}_clamped"]

    # ------------------------------------------------------------------------------------------ real data

    def _on_real_data(self, trainer: pl.Trainer) -> None:
        super()._on_real_data(trainer)
        metric: Memorization = self._metric
        if self.real_test is not None:
            assert self._group is not None
            # A second real pass (collective: every rank is here), cached on disk like the first.
            results = prepare_real_data(
                self.real_test,
                [(self._network(), metric)],
                space=self._real_space or self._group.space,
                image_fn=self.real_image_fn,
                cache_dir=self.cache_dir,
                argument="real_test",
            )
            metric.set_test(results[metric])
            return
        train, test = metric.split()  # raises here, before training, when the real data are too few
        if test is None:
            rank_zero_info(
                f"lightning_ganeval: `{self.name}` has no held-out real data (`real_test=`) and test_fraction=0: `ct`"
                " is not computed."
            )
        else:
            rank_zero_info(
                f"lightning_ganeval: `{self.name}` splits {len(test)} of the {len(train) + len(test)} real samples off"
                f" as held-out data for C_T (test_fraction={metric.test_fraction}, split_seed={metric.split_seed});"
                f" the other {len(train)} are the training samples it compares with. Pass `real_test=` to use your"
                " own held-out data instead."
            )

    # ------------------------------------------------------------------------------------------ the grid

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        evaluated = self._should_evaluate(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        if not evaluated or not self.log_nearest or not trainer.is_global_zero or not trainer.loggers:
            return
        nearest = self._metric.nearest
        if nearest is None or len(nearest.generated) == 0:
            return
        try:
            grid = self._nearest_training_grid(trainer, pl_module, nearest.generated, nearest.training)
        except Exception as err:  # the numbers are logged; a grid that cannot be drawn must not stop training
            rank_zero_warn(f"`{self.name}`: could not draw the nearest-training grid: {err}", category=UserWarning)
            return
        step = max(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step) - 1, 0)
        log_grid(trainer.loggers, f"{self.name}_nearest_training", grid, step, nrow=1 + nearest.training.shape[1])

    def _nearest_training_grid(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, generated: Tensor, training: Tensor
    ) -> Tensor:
        """uint8 images in grid order: each generated sample followed by its nearest training images."""
        fake = self._generated_images(trainer, pl_module, generated.tolist())
        real = self._training_images(trainer, training.flatten().tolist())
        if real.shape[-2:] != fake.shape[-2:]:
            # Shown side by side at the generated size; the comparison itself was in feature space.
            real = (
                torch.nn.functional.interpolate(real.float(), size=fake.shape[-2:], mode="bilinear", antialias=True)
                .round()
                .clamp(0, 255)
                .to(torch.uint8)
            )
        real = real.view(len(generated), training.shape[1], *real.shape[1:])
        return torch.cat([fake.unsqueeze(1), real], dim=1).flatten(0, 1)

    def _generated_images(self, trainer: pl.Trainer, pl_module: pl.LightningModule, indices: list[int]) -> Tensor:
        """The generated samples of these global indices, made again exactly as in the evaluation."""
        group = self._group
        assert group is not None
        assert group.evaluator is not None
        assert group.space is not None
        bank = group.evaluator.bank
        batches = bank.shard(0, 1)
        sample, source = self._sampler(pl_module)
        precision = trainer.precision_plugin
        device = pl_module.device
        rows: dict[int, Tensor] = {}
        with preserved_module_state(pl_module):
            for batch_id in sorted({i // bank.batch_size for i in indices}):
                batch = batches[batch_id]
                # The evaluation's per-batch noise seed: a generator that draws noise gives the same samples.
                seed_batch_noise(bank.seed, batch_id, device)
                with precision.predict_step_context():
                    output = sample(precision.convert_input(batch.latents.to(device)))
                images = check_generated(output, len(batch.latents), source=source)
                converted = to_uint8_rgb(images, group.space, side="generated", check_range=False).images.cpu()
                for position, index in enumerate(batch.indices.tolist()):
                    rows[index] = converted[position]
        return torch.stack([rows[i] for i in indices])

    def _training_images(self, trainer: pl.Trainer, indices: list[int]) -> Tensor:
        """The real samples at these global indices (positions in the real data), as uint8 RGB."""
        assert self._group is not None
        source = self._real_loader(trainer)
        space = self._real_space or self._group.space
        assert space is not None
        dataset = getattr(source, "dataset", source)
        wanted = sorted(set(indices))
        found: dict[int, Tensor] = {}
        if not isinstance(dataset, IterableDataset) and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            # Map-style: read exactly these items, through the loader's collate_fn and the image picker.
            collate = getattr(source, "collate_fn", None)
            subset = DataLoader(Subset(dataset, wanted), batch_size=len(wanted), collate_fn=collate)
            stream = iter_real_images(subset, image_fn=self.real_image_fn, max_workers=0)
            for images, positions in stream:
                for image, position in zip(images, positions.tolist(), strict=True):
                    found[wanted[position]] = image
        else:
            # Iterable: read the stream again, in order, up to the largest index needed.
            stream = iter_real_images(source, image_fn=self.real_image_fn, num_real=wanted[-1] + 1, max_workers=0)
            for images, positions in stream:
                for image, position in zip(images, positions.tolist(), strict=True):
                    if position in wanted:
                        found[position] = image
        missing = [i for i in wanted if i not in found]
        if missing:
            raise ValueError(f"the real data gave no sample at the indices {missing[:5]} when read again.")
        images = torch.stack([found[i] for i in indices])
        return to_uint8_rgb(images, space, side="real", check_range=False).images.cpu()
