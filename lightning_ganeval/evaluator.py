"""The shared evaluation pass, without Lightning: sample, convert, extract once per network, feed every metric.

An :class:`Evaluator` holds a fixed latent bank and a list of metrics (:mod:`lightning_ganeval.metrics`). One
:meth:`Evaluator.evaluate` call runs the generator once per batch of this process's share of the bank, converts
the images to uint8 RGB in the declared pixel space, runs each distinct feature network once on them and hands
each metric the layer it reads. Under ``torch.distributed`` rank r of W takes the global batches r, r+W, …, the
metrics merge their accumulators, and every rank returns the same values: the callbacks in
:mod:`lightning_ganeval.callbacks` are a thin Lightning layer over this class, and a Fabric or plain PyTorch loop
can use it directly::

    evaluator = Evaluator([FID(), InceptionScore()], num_samples=10_000, latent_shape=128,
                          inception=get_extractor("cuda"))
    evaluator.prepare_real(real_loader)          # one pass over the real images for every metric that needs them
    scores = evaluator.evaluate(generator)       # {"fid": ..., "is": ..., "is_std": ..., ...}

The warning policy lives here, so that a plain loop, Fabric and the callbacks warn alike: more than
:data:`CLAMPED_WARNING_FRACTION` of the generated pixel values clamped, samples left out for NaN/Inf, and every
value that is NaN with the reason (e.g. fewer finite samples left than KID's ``subset_size``). They are in
:attr:`EvaluationResult.warnings`, and ``evaluate(..., warn=True)`` emits each once as an :class:`EvaluationWarning`;
the callbacks pass ``warn=False`` and forward them once per evaluation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lightning_ganeval.distributed import agree, rank_and_world_size
from lightning_ganeval.images import ConvertedImages, RangeCheck, to_uint8_rgb
from lightning_ganeval.metrics.base import GenerativeMetric
from lightning_ganeval.metrics.registry import build_metric
from lightning_ganeval.networks import network_device, run_network
from lightning_ganeval.pixel_space import PixelSpace, coerce_pixel_space
from lightning_ganeval.real_images import iter_real_images
from lightning_ganeval.real_pass import prepare_real_data
from lightning_ganeval.sampling import (
    LatentBank,
    check_generated,
    modules_of,
    norm_buffers,
    preserved_module_state,
    seed_batch_noise,
    unwrap_generator,
)

__all__ = ["CLAMPED_WARNING_FRACTION", "EvaluationResult", "EvaluationWarning", "Evaluator"]

NONFINITE_POLICIES = ("exclude", "raise")

#: Fraction of clamped generated pixel values above which an evaluation warns that the pixel space may be wrong.
CLAMPED_WARNING_FRACTION = 0.05


class EvaluationWarning(UserWarning):
    """Something about an evaluation's numbers the user should know: clamped pixels, NaN samples, a NaN value."""


@dataclass
class EvaluationResult:
    """What one evaluation gave.

    Attributes:
        values: Every metric's values by key (identical on every rank), plus ``clamped`` (the fraction of generated
            pixel values clamped into the pixel space) and ``nonfinite`` (samples left out for NaN/Inf).
        num_nonfinite: Samples with NaN/Inf, over all ranks.
        clamped_fraction: Fraction of generated pixel values outside the pixel space, over all ranks.
        images: The first ``keep_images`` converted samples of this rank (uint8, CPU), for image grids.
        by_metric: Each metric's values, by metric name.
        warnings: What the user should know about these numbers, one message per concern (clamped pixels above
            :data:`CLAMPED_WARNING_FRACTION`, non-finite samples, NaN values with their reason); identical on every
            rank. ``evaluate(..., warn=True)`` emits each as an :class:`EvaluationWarning`.
        nan_reasons: Why each NaN value is NaN, by key.
    """

    values: dict[str, float]
    num_nonfinite: int = 0
    clamped_fraction: float = 0.0
    images: Tensor | None = None
    by_metric: dict[str, dict[str, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    nan_reasons: dict[str, str] = field(default_factory=dict)


class Evaluator:
    """The shared evaluation pass over a fixed latent bank for a list of metrics.

    Args:
        metrics: The metrics to feed (:class:`~lightning_ganeval.metrics.FID`, ``InceptionScore``, ``KID``,
            ``PrecisionRecall``, or your own :class:`~lightning_ganeval.metrics.base.GenerativeMetric`), or their
            registered names (``"fid"``, ``"is"``, ...: :func:`~lightning_ganeval.metrics.metric_names`), built with
            their defaults. Their keys must not clash.
        num_samples: Generated samples per evaluation.
        latent_shape: Shape of one latent vector.
        batch_size: Samples per generator call and network forward.
        seed: Seed of the latent bank (a private generator: global random states are left untouched).
        space: Pixel space of the generated images (a :class:`~lightning_ganeval.pixel_space.PixelSpace` or a
            ``(low, high)`` pair); values outside it are clamped and counted.
        inception: The Inception network for metrics without their own ``feature_extractor``
            (:func:`~lightning_ganeval.inception.get_extractor`).
        nonfinite: ``"exclude"`` samples with NaN/Inf from the statistics (counted), or ``"raise"``.
        wording: How the warnings name the reported counts and the argument that declares the pixel space, for a
            caller that reports them under its own names: any of the keys ``"clamped"``, ``"nonfinite"`` and
            ``"space"``, e.g. ``{"clamped": "`fid_clamped`", "space": "`value_range=`"}`` (the Lightning callbacks
            name their logged keys and their arguments so). Default: ``clamped``, ``nonfinite`` and ``space=``.

    Raises:
        ValueError: Clashing keys, too few samples for a metric, a metric that needs Inception without one, a
            ``wording`` key other than those three.
    """

    def __init__(
        self,
        metrics: Sequence[GenerativeMetric | str],
        *,
        num_samples: int,
        latent_shape: int | Sequence[int],
        batch_size: int = 64,
        seed: int = 0,
        space: PixelSpace | Sequence[float] | None = (-1.0, 1.0),
        inception: nn.Module | None = None,
        nonfinite: str = "exclude",
        wording: Mapping[str, str] | None = None,
    ) -> None:
        if not metrics:
            raise ValueError("`metrics` must hold at least one metric, got none.")
        # A name builds the registered metric with its defaults (lightning_ganeval.metrics.registry).
        metrics = [build_metric(m) if isinstance(m, str) else m for m in metrics]
        seen: dict[str, str] = {}
        for metric in metrics:
            for key in metric.keys():  # noqa: SIM118 (a metric is not a mapping)
                if key in seen:
                    raise ValueError(f"Metrics `{seen[key]}` and `{metric.name}` both return `{key}`; rename one.")
                seen[key] = metric.name
            if num_samples < metric.min_samples():
                raise ValueError(
                    f"`num_samples` must be at least {metric.min_samples()} for `{metric.name}`, got {num_samples}."
                )
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"`nonfinite` must be one of {NONFINITE_POLICIES}, got {nonfinite!r}.")
        self.metrics = list(metrics)
        self.bank = LatentBank(num_samples, latent_shape, seed=seed, batch_size=batch_size)
        self.space = coerce_pixel_space(space)
        self.inception = inception
        self.nonfinite = nonfinite
        self.num_samples = num_samples
        self.seed = seed
        self._networks = self._group_networks()
        self._wording = {"clamped": "`clamped`", "nonfinite": "`nonfinite`", "space": "`space=`"}
        unknown = sorted(set(wording or {}) - set(self._wording))
        if unknown:
            raise ValueError(f"`wording` takes the keys {sorted(self._wording)}, got {unknown}.")
        self._wording.update(wording or {})

    # -------------------------------------------------------------------------------------------- networks

    def _group_networks(self) -> list[tuple[nn.Module, list[GenerativeMetric]]]:
        groups: list[tuple[nn.Module, list[GenerativeMetric]]] = []
        for metric in self.metrics:
            network = metric.feature_extractor if metric.feature_extractor is not None else self.inception
            if network is None:
                raise ValueError(
                    f"`{metric.name}` reads Inception features but the evaluator has no `inception` network; pass"
                    " `inception=get_extractor(device)` or give the metric a `feature_extractor`."
                )
            for net, members in groups:
                if net is network:
                    members.append(metric)
                    break
            else:
                groups.append((network, [metric]))
        return groups

    @property
    def networks(self) -> list[nn.Module]:
        """The distinct feature networks, in the order they run on each batch."""
        return [network for network, _ in self._networks]

    def features(self, images: Tensor) -> Iterator[tuple[nn.Module, dict[str, Tensor]]]:
        """Run each distinct network once on uint8 ``images``; yields ``(network, outputs by layer)``."""
        for network, _ in self._networks:
            device = network_device(network)
            if getattr(network, "identity", None) is None:
                # A user's network: eval mode, no grad, restored afterwards, like the generator.
                with preserved_module_state(network):
                    yield network, run_network(network, images.to(device))
            else:
                yield network, run_network(network, images.to(device))

    # ------------------------------------------------------------------------------------------- real data

    def prepare_real(self, real: Any, **kwargs: Any) -> None:
        """Give every metric that needs real data its statistics / features, from one pass over ``real``.

        ``real`` is a ``DataLoader`` (or dataset, or iterable of batches), a ``.npz`` statistics file, or
        :class:`~lightning_ganeval.frechet.GaussianStats`. Keyword arguments are those of
        :func:`lightning_ganeval.real_pass.prepare_real_data` (``space``, ``image_fn``, ``num_real``, ``cache_dir``,
        ``progress``). Every rank must call it.
        """
        wanting = [(network, m) for network, members in self._networks for m in members if m.real_request()]
        if not wanting:
            return
        kwargs.setdefault("space", self.space)
        for metric, data in prepare_real_data(real, wanting, **kwargs).items():
            metric.set_real(data)

    # ------------------------------------------------------------------------------------------- evaluation

    def evaluate(
        self,
        generate: Callable[[Tensor], Any],
        *,
        module: nn.Module | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        keep_images: int = 0,
        progress: Callable[[int], None] | None = None,
        source: str = "generate(z)",
        generator_device: torch.device | str | None = None,
        call: Callable[[Callable[[Tensor], Any], Tensor], Any] | None = None,
        warn: bool = True,
    ) -> EvaluationResult:
        """Sample this rank's share of the bank, feed every metric and return the merged values.

        The generator runs in eval mode: ``module`` and every module :func:`~lightning_ganeval.sampling.modules_of`
        finds in ``generate`` (a closure's ``G``, a bound method's ``self``, an EMA copy kept as a plain attribute) are
        put in eval mode and their state is restored afterwards, and any other module called in training mode runs
        in eval mode for the call (:func:`~lightning_ganeval.sampling.eval_mode_guard`): an evaluation never changes
        BatchNorm statistics.

        Args:
            generate: ``generate(z) -> images`` in the pixel space, ``(B, C, H, W)`` float.
            module: Module whose training state is preserved (eval mode, ``no_grad``, BatchNorm statistics,
                ``requires_grad`` flags and global random states restored), besides those found in ``generate``;
                default ``generate`` if it is one.
            rank: This process's rank; default from ``torch.distributed`` (0 without a process group).
            world_size: Number of processes; likewise.
            keep_images: Keep this many converted samples of this rank in the result (image grids).
            progress: Called with the number of samples done after each batch.
            source: How the generator is called, for error messages.
            generator_device: Where latents go; default: ``module``'s device.
            call: ``call(generate, z)`` runs the generator (e.g. under a precision context); default ``generate(z)``.
            warn: Emit each of the result's :attr:`~EvaluationResult.warnings` as an :class:`EvaluationWarning`
                (on rank 0 only).

        Returns:
            The values (identical on every rank), counts of non-finite and clamped values, kept images, warnings.
        """
        if self.space is None:
            raise RuntimeError("The pixel space is unknown: pass `space=` or set `evaluator.space` first.")
        rank, world_size = rank_and_world_size(rank, world_size)
        generate, module = unwrap_generator(generate, module)
        # A plain callable hides its modules (`lambda z: G(z)`, an EMA copy held as a plain attribute): find them,
        # so that they run in eval mode and keep their state, as `module` does.
        roots = [m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m for m in modules_of(generate)]
        roots = list({id(m): m for m in ([module] if module is not None else []) + roots}.values())
        device = torch.device(generator_device) if generator_device is not None else _module_device(module)
        tally = self._start()
        error: Exception | None = None
        kept: list[Tensor] = []
        done = 0
        try:
            with preserved_module_state(roots), torch.no_grad():
                if world_size > 1:
                    for root in roots:
                        # A module found in a callable, on a device the collectives may not take, keeps its own.
                        if root is module or _module_device(root) == tally.device:
                            _use_rank_zero_norm_stats(root)
                for batch in self.bank.shard(rank, world_size):
                    seed_batch_noise(self.seed, batch.batch_id, device)
                    latents = batch.latents.to(device, non_blocking=True)
                    output = call(generate, latents) if call is not None else generate(latents)
                    images = check_generated(output, len(latents), source=source)
                    converted = self._feed(images, batch.indices, tally)
                    missing = keep_images - sum(len(part) for part in kept)
                    if missing > 0:
                        kept.append(converted.images[:missing].cpu())
                    done += len(latents)
                    if progress is not None:
                        progress(done)
                tally.check_range()
        except Exception as err:  # re-raised below, after the other ranks have been told
            error = err
        return self._finish(error, tally, rank, world_size, warn, kept)

    def evaluate_images(
        self,
        images: Any,
        *,
        image_fn: Callable[[Any], Tensor] | None = None,
        max_workers: int | None = None,
        progress: Callable[[int], None] | None = None,
        warn: bool = True,
    ) -> EvaluationResult:
        """Score a set of images in place of the generator's samples (the command line's evaluated folder).

        The images are read as the real pass reads real data (:func:`~lightning_ganeval.real_images.iter_real_images`:
        map-style data sharded over ranks by index, the batch's image tensor picked out, a list of differently sized
        images split by size) and then go through the same conversion, networks and metrics as :meth:`evaluate`'s
        samples, the global index of each image standing for its sample index.

        Args:
            images: A ``DataLoader``, a dataset or an iterable of image batches, in the evaluator's pixel space
                (uint8 images are used as they are); its first ``num_samples`` images are scored, and it must hold
                that many.
            image_fn: Picks the images out of a batch (default: as the real pass).
            max_workers: At most this many loader workers (default: as the real pass).
            progress: Called with the number of images done by this rank after each batch.
            warn: As in :meth:`evaluate`.

        Returns:
            As :meth:`evaluate` (no kept images). Every rank must call it.
        """
        if self.space is None:
            raise RuntimeError("The pixel space is unknown: pass `space=` or set `evaluator.space` first.")
        rank, world_size = rank_and_world_size()
        tally = self._start()
        error: Exception | None = None
        done = 0
        stream = iter_real_images(
            images,
            image_fn=image_fn,
            num_real=self.num_samples,
            rank=rank,
            world_size=world_size,
            max_workers=max_workers,
        )
        try:
            with torch.no_grad():
                for batch, indices in stream:
                    self._feed(batch, indices, tally)
                    done += len(batch)
                    if progress is not None:
                        progress(done)
                tally.check_range()
                if stream.total != self.num_samples:
                    raise ValueError(f"Expected {self.num_samples} images (`num_samples`), got {stream.total}.")
        except Exception as err:  # re-raised below, after the other ranks have been told
            error = err
            stream.close()
        return self._finish(error, tally, rank, world_size, warn, [])

    def _start(self) -> _Tally:
        """Reset every metric on its network's device; the counts of the new evaluation, on the collectives' device."""
        for network, members in self._networks:
            for metric in members:
                metric.reset(self.num_samples, network_device(network))
        return _Tally(network_device(self._networks[0][0]))

    def _feed(self, images: Tensor, indices: Tensor, tally: _Tally) -> ConvertedImages:
        """Convert one batch, run each network once on it and hand every metric its layer (finite samples only)."""
        assert self.space is not None
        # The range is checked once after the loop (merged), so the conversion never waits for the device.
        converted = to_uint8_rgb(images, self.space, side="generated", check_range=False)
        tally.add(converted)
        finite = converted.finite
        all_finite = bool(finite.all())  # one host synchronisation per batch, for the row selection
        if not all_finite:
            tally.nonfinite += (~finite).sum().to(tally.device, torch.float64)
            if self.nonfinite == "raise":
                raise ValueError(
                    "The generator produced non-finite (NaN or Inf) samples and `nonfinite='raise'`."
                    " Pass `nonfinite='exclude'` to leave them out of the statistics and log their count."
                )
            indices = indices[finite.cpu()]
        for network, outputs in self.features(converted.images):
            rows = outputs if all_finite else {k: v[finite.to(v.device)] for k, v in outputs.items()}
            for metric in self._members(network):
                metric.update(rows[metric.resolved_layer()], indices)
        return converted

    def _finish(
        self, error: Exception | None, tally: _Tally, rank: int, world_size: int, warn: bool, kept: list[Tensor]
    ) -> EvaluationResult:
        """Agree on failure over ranks, merge every metric (collectives), explain NaN values and warn."""
        # One collective on every rank, also when this rank failed: the others learn about it instead of waiting
        # forever in the metrics' synchronisation; the counts ride along.
        flags = agree(
            error,
            totals=torch.stack(
                [
                    tally.nonfinite,
                    tally.clamped,
                    torch.tensor(float(tally.values_seen), dtype=torch.float64, device=tally.device),
                ]
            ),
            world_size=world_size,
            message="The evaluation failed on another process; see its traceback.",
        )
        assert flags is not None
        num_nonfinite = int(flags[0])
        clamped_fraction = float(flags[1] / flags[2]) if flags[2] > 0 else 0.0
        values: dict[str, float] = {}
        by_metric: dict[str, dict[str, float]] = {}
        for metric in self.metrics:
            by_metric[metric.name] = metric.compute()
            values.update(by_metric[metric.name])
        values["nonfinite"] = float(num_nonfinite)
        values["clamped"] = clamped_fraction
        nan_reasons, messages = self._explain(by_metric, num_nonfinite, clamped_fraction, tally.extent, world_size)
        if warn and rank == 0:
            for message in messages:
                warnings.warn(message, EvaluationWarning, stacklevel=3)
        return EvaluationResult(
            values=values,
            num_nonfinite=num_nonfinite,
            clamped_fraction=clamped_fraction,
            images=torch.cat(kept) if kept else None,
            by_metric=by_metric,
            warnings=messages,
            nan_reasons=nan_reasons,
        )

    def _explain(
        self,
        by_metric: dict[str, dict[str, float]],
        num_nonfinite: int,
        clamped_fraction: float,
        extent: tuple[float, float],
        world_size: int,
    ) -> tuple[dict[str, str], list[str]]:
        """The reason of every NaN value, and the warnings of one evaluation (the same on every rank)."""
        words = self._wording
        messages: list[str] = []
        if clamped_fraction > CLAMPED_WARNING_FRACTION:
            assert self.space is not None
            seen = ""
            if math.isfinite(extent[0]):
                where = " on rank 0" if world_size > 1 else ""
                seen = f" (generated values{where} from {extent[0]:.3g} to {extent[1]:.3g})"
            messages.append(
                f"{100 * clamped_fraction:.1f}% of the generated pixel values lay outside the pixel space"
                f" {self.space.describe()}{seen} and were clamped into it (reported as {words['clamped']}). Either the"
                f" generator's output space is not {self.space.describe()}: declare the right one with"
                f" {words['space']}, the scores are wrong until then. Or the space is right and the generator is early"
                " in training (e.g. a tanh generator learning [0, 1] data overshoots at first): then this share falls"
                " as it trains."
            )
        if num_nonfinite:
            messages.append(
                f"{num_nonfinite} of {self.num_samples} generated samples held NaN or Inf; they are left out of every"
                f" metric (counted as {words['nonfinite']})."
            )
        nan_reasons: dict[str, str] = {}
        for metric in self.metrics:
            explained = metric.nan_reasons()
            expected = metric.expected_nan()
            grouped: dict[str, list[str]] = {}
            for key, value in by_metric[metric.name].items():
                if not math.isnan(value):
                    continue
                reason = explained.get(key) or (
                    f"{type(metric).__name__} returned NaN without a reason ({self.num_samples - num_nonfinite} of"
                    f" {self.num_samples} generated samples were finite)"
                )
                nan_reasons[key] = reason
                if key not in expected:
                    grouped.setdefault(reason, []).append(key)
            for reason, keys in grouped.items():
                names = ", ".join(f"`{key}`" for key in keys)
                messages.append(f"{names} {'is' if len(keys) == 1 else 'are'} NaN: {reason}.")
        return nan_reasons, messages

    def _members(self, network: nn.Module) -> list[GenerativeMetric]:
        for net, members in self._networks:
            if net is network:
                return members
        return []


class _Tally:
    """This rank's counts of one evaluation: non-finite samples, clamped and seen values, the merged range check."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.nonfinite = torch.zeros((), dtype=torch.float64, device=device)
        self.clamped = torch.zeros((), dtype=torch.float64, device=device)
        self.values_seen = 0
        self.range_check: RangeCheck | None = None
        self.extent = (math.inf, -math.inf)  # of this rank's finite generated values, for the clamp warning

    def add(self, converted: ConvertedImages) -> None:
        check = converted.range_check
        self.range_check = check if self.range_check is None else self.range_check.merge(check)
        self.clamped += converted.num_clamped.to(self.device, torch.float64)
        self.values_seen += converted.num_values

    def check_range(self) -> None:
        if self.range_check is not None:
            self.range_check.check()
            self.extent = (float(self.range_check.minimum.min()), float(self.range_check.maximum.max()))


def _use_rank_zero_norm_stats(module: nn.Module) -> None:
    """Give every rank rank 0's BatchNorm running statistics for the evaluation (restored afterwards).

    After the last training step of an epoch every rank holds statistics updated by its own batch (DDP syncs
    buffers only at the next forward): without this, each rank would sample from a slightly different generator.
    """
    for buffer in norm_buffers(module):
        torch.distributed.broadcast(buffer, src=0)


def _module_device(module: nn.Module | None) -> torch.device:
    if module is None:
        return torch.device("cpu")
    return network_device(module)
