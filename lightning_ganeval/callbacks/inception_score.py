"""InceptionScoreCallback: the Lightning layer of :class:`lightning_ganeval.metrics.InceptionScore`."""

from __future__ import annotations

from typing_extensions import Unpack

from lightning_ganeval.callbacks._arguments import InceptionMetricArguments
from lightning_ganeval.callbacks._checks import check_bool, check_extrapolation_samples, check_int
from lightning_ganeval.callbacks.base import _GenerativeMetricCallback
from lightning_ganeval.metrics.inception_score import InceptionScore

__all__ = ["InceptionScoreCallback"]


class InceptionScoreCallback(_GenerativeMetricCallback):
    r"""Inception Score of the generator's samples, at the end of training epochs.

    Every ``every_n_epochs`` epochs the callback generates ``num_samples`` images from a fixed latent bank, streams
    the softmax of their bias-free Inception logits into per-split marginals (``splits`` consecutive splits of the
    bank by global sample index, merged across DDP ranks) and logs ``is`` (mean over splits), ``is_std``
    (``ddof=0``, like the reference code and torch-fidelity), ``is_num_samples``, ``is_nonfinite``, ``is_clamped``
    and, with ``extrapolate``, ``is_inf`` (``name`` replaces ``is``).

    Args:
        num_samples: Generated samples per evaluation (at least ``splits``).
        splits: Number of splits.
        batch_size: Samples per generator call and Inception pass.
        every_n_epochs: Evaluate at the end of every ``every_n_epochs``-th training epoch (1 when neither this nor
            ``every_n_train_steps`` is given).
        every_n_train_steps: Evaluate every this many optimizer steps instead; see
            :class:`~lightning_ganeval.FIDCallback`.
        model_weights: Which weights to score next to a ``WeightAveraging`` callback; see
            :class:`~lightning_ganeval.FIDCallback`.
        latent_shape: Shape of one latent vector; default ``pl_module.hparams.latent_dim``.
        sample_fn: ``sample_fn(pl_module, z) -> images`` (or its import path) for other generators.
        value_range: ``(low, high)`` of the generated images; default: inferred from the training data.
        normalize: ``(mean, std)`` instead of ``value_range`` (torchvision ``Normalize`` convention).
        inception_weights: Path to the Inception weights (see :class:`~lightning_ganeval.FIDCallback`).
        resize: ``"tf1"`` (reference) or ``"antialias"``.
        fast: Faster, not reference-exact Inception.
        extrapolate: Also log ``<name>_inf``: IS∞ (Chong & Forsyth 2020), one split per sample count, extrapolated
            linearly in 1/N.
        extrapolation_points: Number of sample counts k·N/points in that fit (at least 2).
        seed: Seed of the latent bank.
        name: Logged key prefix; ``is`` by default.
        nonfinite: ``"exclude"`` (default) or ``"raise"``, as for :class:`~lightning_ganeval.FIDCallback`.
        progress: Show a progress bar for evaluations longer than two seconds (rank 0).

    Attributes:
        last_score: The latest IS mean, or None before the first evaluation.
        history: One dict per evaluation: ``epoch``, ``step`` and the logged values.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has an invalid value, e.g. ``num_samples < splits``.

    Scheduling, monitoring callbacks, the shared pass and determinism are as documented for
    :class:`~lightning_ganeval.FIDCallback`.

    Example::

        >>> from lightning_ganeval import InceptionScoreCallback
        >>> InceptionScoreCallback(num_samples=5_000, splits=10).state_key
        "InceptionScoreCallback{'name': 'is'}"
    """

    def __init__(
        self,
        *,
        splits: int = 10,
        extrapolate: bool = False,
        extrapolation_points: int = 5,
        name: str = "is",
        **kwargs: Unpack[InceptionMetricArguments],
    ) -> None:
        self.splits = check_int("splits", splits, 1)
        self.extrapolate = check_bool("extrapolate", extrapolate)
        self.extrapolation_points = check_int("extrapolation_points", extrapolation_points, 2)
        super().__init__(name=name, **kwargs)

    def _check_arguments(self) -> None:
        num_samples = self.num_samples
        if isinstance(num_samples, int) and not isinstance(num_samples, bool) and num_samples < self.splits:
            # The generic check would say only "must be an int >= 10", which leaves `splits` unmentioned.
            raise ValueError(
                f"`num_samples` must be an int >= {self.splits} with splits={self.splits} (each of the splits needs"
                f" at least one sample), got num_samples={num_samples}. Generate more samples, or pass"
                f" `splits={num_samples}` or fewer (IS over few samples per split is strongly biased low)."
            )
        if self.extrapolate:
            check_extrapolation_samples(num_samples, self.extrapolation_points, self.extrapolation_points, 1)

    def _build_metric(self) -> InceptionScore:
        return InceptionScore(
            name=self.name,
            splits=self.splits,
            extrapolate=self.extrapolate,
            extrapolation_points=self.extrapolation_points,
        )
