"""Fréchet distance of generated features to real statistics, with optional FID∞ extrapolation.

The accumulator is :class:`~lightning_ganeval.accumulators.FIDMoments` (float64 n, mean, centred M2; exact Chan merge
across ranks); the distance is :class:`~lightning_ganeval.frechet.FrechetReference`, whose square root of the real
covariance is computed once per fit.

FID∞ (Chong & Forsyth, CVPR 2020): FID is biased in the sample count N, by an amount that depends on the model,
so the score is computed on the first N_k samples of the bank for ``points`` counts N_k = k·N/points and the
least-squares line FID(N_k) = FID∞ + b/N_k is extrapolated to 1/N = 0. The bank's latents are i.i.d., so its
first N_k samples are a random subset of size N_k. Accumulating the chunks between consecutive counts (instead of
keeping per-sample features) keeps memory at ``points`` × (d² float64), independent of N.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

from lightning_ganeval.accumulators import FIDMoments
from lightning_ganeval.frechet import FrechetReference, GaussianStats
from lightning_ganeval.metrics.base import GenerativeMetric, RealData, RealRequest
from lightning_ganeval.metrics.extrapolation import extrapolate_to_infinity

__all__ = ["FID", "stats_fingerprint"]

# The square root of a 2048 x 2048 covariance takes seconds on a CPU; refits in one process reuse it.
_REFERENCES: dict[tuple[str, str], FrechetReference] = {}
_MAX_REFERENCES = 2


def stats_fingerprint(stats: GaussianStats) -> str:
    """A short digest of statistics (n, mean, covariance), to notice a change on resume."""
    digest = hashlib.sha256(str(stats.n).encode())
    for tensor in (stats.mean, stats.cov):
        digest.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _reference(stats: GaussianStats, fingerprint: str, device: torch.device) -> FrechetReference:
    key = (fingerprint, str(device))
    reference = _REFERENCES.pop(key, None)
    if reference is None:
        reference = FrechetReference(stats.mean, stats.cov, device=device)
    _REFERENCES[key] = reference  # most recently used last
    while len(_REFERENCES) > _MAX_REFERENCES:
        del _REFERENCES[next(iter(_REFERENCES))]
    return reference


class FID(GenerativeMetric):
    """Fréchet distance between the generated samples' features and the real statistics.

    Args:
        name: Key of the score; also the prefix of ``<name>_inf`` with extrapolation.
        feature_extractor: Feature network (default: the evaluator's Inception, pool3 features).
        layer: Network output to read (default ``pool`` for Inception, ``features`` otherwise).
        extrapolate: Also return ``<name>_inf`` (FID∞).
        extrapolation_points: Number of sample counts N_k = k·N/points in the fit (at least 2).

    Returns from :meth:`compute`: ``<name>``, ``<name>_num_samples`` and, with ``extrapolate``, ``<name>_inf``.
    The fit leaves out counts whose prefix holds fewer than 2 finite samples (or no more than the previous one);
    a value that cannot be scored (fewer than 2 finite samples, fewer than 2 counts left) is NaN, as KID and IS.
    """

    def __init__(
        self,
        *,
        name: str = "fid",
        feature_extractor: torch.nn.Module | None = None,
        layer: str | None = None,
        extrapolate: bool = False,
        extrapolation_points: int = 5,
    ) -> None:
        super().__init__(name=name, feature_extractor=feature_extractor, layer=layer)
        self.extrapolate = extrapolate
        self.extrapolation_points = extrapolation_points
        self.real: RealData | None = None
        self.real_fingerprint: str | None = None
        self._reference: FrechetReference | None = None
        self._chunks: list[FIDMoments] = []
        self._bounds: list[int] = []
        self._cov_buffer: Tensor | None = None

    def keys(self) -> list[str]:
        keys = [self.name, f"{self.name}_num_samples"]
        return [*keys, f"{self.name}_inf"] if self.extrapolate else keys

    def real_request(self) -> RealRequest:
        return RealRequest(moments=True)

    def min_samples(self) -> int:
        # Every extrapolation point needs 2 samples for a covariance.
        return 2 * self.extrapolation_points if self.extrapolate else 2

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "extrapolate": self.extrapolate, "points": self.extrapolation_points}

    def set_real(self, real: RealData) -> None:
        if real.stats is None:
            raise ValueError(f"`{self.name}` needs real statistics (mean and covariance), got none.")
        self.real = real
        self.real_fingerprint = stats_fingerprint(real.stats)
        self._reference = None

    def reset(self, num_samples: int, device: torch.device) -> None:
        if self.real is None or self.real.stats is None:
            raise RuntimeError(f"`{self.name}`: set_real() must run before the first evaluation.")
        if self._reference is None or self._reference.device != device:
            self._reference = _reference(self.real.stats, self.real_fingerprint or "", device)
        points = self.extrapolation_points if self.extrapolate else 1
        self._bounds = [k * num_samples // points for k in range(points + 1)]
        self.num_samples = num_samples
        d = self.real.stats.num_features
        if len(self._chunks) != points or self._chunks[0].num_features != d or self._chunks[0].device != device:
            self._chunks = [FIDMoments(num_features=d).to(device) for _ in range(points)]
        for chunk in self._chunks:
            chunk.reset()

    def update(self, features: Tensor, indices: Tensor) -> None:
        if len(self._chunks) == 1:
            self._chunks[0].update(features)
            return
        # Chunk k holds the bank indices [bounds[k], bounds[k+1]). The evaluator passes the indices sorted and on
        # the CPU, so the rows of each chunk are one slice found without a device synchronisation.
        rows = torch.searchsorted(indices.cpu(), torch.tensor(self._bounds)).tolist()
        for k, chunk in enumerate(self._chunks):
            if rows[k + 1] > rows[k]:
                chunk.update(features[rows[k] : rows[k + 1]])

    def compute(self) -> dict[str, float]:
        assert self._reference is not None
        # Each chunk merged over ranks: one collective per chunk, in the same order on every rank. The prefixes are
        # read directly rather than through FIDMoments.compute(), which refuses fewer than 2 samples: with
        # non-finite samples excluded, a chunk may hold 0 or 1 and still belong to the prefixes.
        parts = [chunk.synced() for chunk in self._chunks]
        prefix = FIDMoments(num_features=parts[0].num_features, device=parts[0].device)
        counts: list[int] = []
        scores: list[float] = []
        for k, part in enumerate(parts):
            prefix.merge(part)
            n = int(prefix.n.item())
            if k == len(parts) - 1:
                full, total = self._distance(prefix), n
            # A prefix without 2 samples has no covariance; one without new samples would repeat a point.
            if self.extrapolate and n >= 2 and (not counts or n > counts[-1]):
                counts.append(n)
                # The last prefix is every sample: its distance is the one above (an eigenvalue problem less).
                scores.append(full if k == len(parts) - 1 else self._distance(prefix))
        values = {self.name: full, f"{self.name}_num_samples": float(total)}
        finite = f"only {total} of the {self.num_samples} generated samples were finite (the others held NaN or Inf)"
        self._nan_reasons = {self.name: f"{finite}; a covariance needs at least 2"} if total < 2 else {}
        if self.extrapolate:
            values[f"{self.name}_inf"] = extrapolate_to_infinity(counts, scores) if len(counts) >= 2 else math.nan
            if len(counts) < 2:
                self._nan_reasons[f"{self.name}_inf"] = (
                    f"{finite}, and fewer than 2 of the {self.extrapolation_points} prefixes of the extrapolation"
                    " hold 2 or more of them"
                )
        return {k: float(v) for k, v in values.items()}

    def score(self, stats: GaussianStats) -> dict[str, float]:
        """:meth:`compute`'s ``<name>`` and ``<name>_num_samples`` for generated moments given as statistics.

        For a generated set known only by its statistics (a ``.npz``, as the command line's ``fid A.npz B``): the
        same cached real reference and distance as :meth:`compute`. Not a collective.
        """
        if self.real is None or self.real.stats is None:
            raise RuntimeError(f"`{self.name}`: set_real() must run before score().")
        device = self.real.stats.mean.device
        if self._reference is None or self._reference.device != device:
            self._reference = _reference(self.real.stats, self.real_fingerprint or "", device)
        count = float(stats.n) if stats.n is not None else math.nan
        return {self.name: self._reference.distance(stats.mean, stats.cov), f"{self.name}_num_samples": count}

    def _distance(self, moments: FIDMoments) -> float:
        """FID of the moments (n, mean, M2) to the real statistics; NaN below 2 samples (all excluded as non-finite).

        The covariance M2 / (n − 1) is written into a buffer kept between evaluations: a new d x d matrix costs
        a page fault per 4 KiB, more than the division. It is not symmetrised: M2 is a sum of XᵀX products and
        outer products, symmetric up to rounding, and the distance reads it through a congruence whose lower
        triangle is all the eigenvalue problem reads (the difference is rounding, ~1e-16 relative). Finiteness
        is checked only when the distance fails, which non-finite statistics make it do: a scan of d² values
        per evaluation saved.
        """
        assert self._reference is not None
        n, mean, m2 = int(moments.n.item()), moments.mean, moments.m2
        if n < 2:
            return math.nan
        buffer = self._cov_buffer
        if buffer is None or buffer.shape != m2.shape or buffer.dtype != m2.dtype or buffer.device != m2.device:
            buffer = self._cov_buffer = torch.empty_like(m2)
        cov = torch.div(m2, n - 1, out=buffer)
        try:
            return self._reference.distance(mean, cov)
        except ValueError:
            if not bool(torch.isfinite(mean).all() and torch.isfinite(cov).all()):
                raise ValueError(
                    f"`{self.name}`: the features are not finite; the mean/covariance hold NaN or Inf."
                ) from None
            raise
