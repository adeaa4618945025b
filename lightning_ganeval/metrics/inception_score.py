"""Inception Score from streamed per-split label marginals, with optional IS∞ extrapolation.

The accumulator is :class:`~lightning_ganeval.accumulators.ISMarginals`: per split Σ p(y|x), Σ p log p and the count
(O(splits × classes), flat in N), split boundaries ``i·N//splits`` by global sample index, std with ``ddof=0``.

IS∞ (Chong & Forsyth, CVPR 2020) extrapolates the one-split score on the first N_k = k·N/points samples of the
bank linearly in 1/N_k to 1/N = 0. Those prefixes are unions of the ``points`` chunks of a second
:class:`ISMarginals` built with ``splits=points``, so the extrapolation costs another O(points × classes).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_ganeval.accumulators import ISMarginals
from lightning_ganeval.inception_score_math import inception_score_from_sums
from lightning_ganeval.metrics.base import GenerativeMetric
from lightning_ganeval.metrics.extrapolation import extrapolate_to_infinity

__all__ = ["InceptionScore"]


class InceptionScore(GenerativeMetric):
    """Inception Score of the generated samples (reads Inception's bias-free logits).

    Args:
        name: Key of the mean; ``<name>_std`` holds the std over splits.
        splits: Number of splits (10 in the reference).
        extrapolate: Also return ``<name>_inf`` (IS∞, one split per count).
        extrapolation_points: Number of sample counts N_k = k·N/points in the fit (at least 2).
    """

    default_layer = "logits"

    def __init__(
        self, *, name: str = "is", splits: int = 10, extrapolate: bool = False, extrapolation_points: int = 5
    ) -> None:
        super().__init__(name=name, feature_extractor=None, layer="logits")
        self.splits = splits
        self.extrapolate = extrapolate
        self.extrapolation_points = extrapolation_points
        self._marginals: ISMarginals | None = None
        self._chunks: ISMarginals | None = None

    def keys(self) -> list[str]:
        keys = [self.name, f"{self.name}_std", f"{self.name}_num_samples"]
        return [*keys, f"{self.name}_inf"] if self.extrapolate else keys

    def min_samples(self) -> int:
        return max(self.splits, self.extrapolation_points if self.extrapolate else 1)

    def describe(self) -> dict[str, object]:
        return {"splits": self.splits, "extrapolate": self.extrapolate, "points": self.extrapolation_points}

    def reset(self, num_samples: int, device: torch.device) -> None:
        self.num_samples = num_samples
        for attribute, splits, wanted in (
            ("_marginals", self.splits, True),
            ("_chunks", self.extrapolation_points, self.extrapolate),
        ):
            current = getattr(self, attribute)
            if not wanted:
                setattr(self, attribute, None)
            elif current is None or current.num_samples != num_samples or current.prob_sum.device != device:
                setattr(self, attribute, ISMarginals(num_samples, splits=splits).to(device))
            else:
                current.reset()

    def update(self, features: Tensor, indices: Tensor) -> None:
        assert self._marginals is not None
        if self._marginals.num_classes != features.shape[1]:
            # A stand-in network with another number of classes: rebuild once, before any sample was added.
            self._marginals = ISMarginals(self.num_samples, self.splits, features.shape[1]).to(features.device)
            if self._chunks is not None:
                self._chunks = ISMarginals(self.num_samples, self.extrapolation_points, features.shape[1]).to(
                    features.device
                )
        self._marginals.update(features, indices)
        if self._chunks is not None:
            self._chunks.update(features, indices)

    def compute(self) -> dict[str, float]:
        assert self._marginals is not None
        marginals = self._marginals.synced()  # the sums of every rank: a collective, every rank calls it
        self._nan_reasons = {}
        count = int(marginals.count.sum())
        try:
            mean, std = inception_score_from_sums(marginals.prob_sum, marginals.plogp_sum, marginals.count)
        except ValueError as err:
            # Every sample of a split was non-finite and excluded: no score this time (the same on every rank).
            mean, std = float("nan"), float("nan")
            reason = f"{count} of the {self.num_samples} generated samples were finite; {str(err).rstrip('.')}"
            self._nan_reasons = {self.name: reason, f"{self.name}_std": reason}
        values = {self.name: float(mean), f"{self.name}_std": float(std), f"{self.name}_num_samples": float(count)}
        if self._chunks is not None:
            chunks = self._chunks.synced()  # a collective, after the one above on every rank
            counts, scores = [], []
            for k in range(1, self.extrapolation_points + 1):
                prefix_count = chunks.count[:k].sum()
                if int(prefix_count) == 0 or (counts and int(prefix_count) == counts[-1]):
                    continue  # every sample so far excluded as non-finite, or no new one: no (new) point
                score, _ = inception_score_from_sums(
                    chunks.prob_sum[:k].sum(0, keepdim=True),
                    chunks.plogp_sum[:k].sum().reshape(1),
                    prefix_count.reshape(1),
                )
                counts.append(int(prefix_count))
                scores.append(score)
            fitted = extrapolate_to_infinity(counts, scores) if len(counts) >= 2 else math.nan
            values[f"{self.name}_inf"] = float(fitted)
            if len(counts) < 2:
                self._nan_reasons[f"{self.name}_inf"] = (
                    f"{count} of the {self.num_samples} generated samples were finite, and fewer than 2 of the"
                    f" {self.extrapolation_points} prefixes of the extrapolation got a new finite sample"
                )
        return values
