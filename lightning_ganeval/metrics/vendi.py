"""The Vendi score (Friedman & Dieng, TMLR 2023): the effective number of distinct samples in the generated set.

With the rows of X L2-normalised and K = X Xᵀ (the cosine kernel of ``vendi_score.score_X`` and of dgm-eval's
``compute_vendi_score``), VS = exp(−Σ λᵢ log λᵢ) over the eigenvalues λ > 0 of K / n: the exponential of the
Shannon entropy of the spectrum, between 1 (every sample the same, e.g. mode collapse) and min(n, d).

The n × n matrix K / n and the d × d matrix S / n with S = XᵀX = Σᵢ xᵢxᵢᵀ have the same non-zero eigenvalues
(``vendi_score.score_dual``). S is a sum over samples: it is accumulated batch by batch in float64, summed across
DDP ranks like FID's moments (exact up to float64 rounding, whatever the number of processes), and its memory is
d² float64 (32 MiB at d = 2048), flat in N. Only the order q = 1 is implemented (the published
score); dgm-eval's per-class average needs labels, which generated samples do not have.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_ganeval.distributed import collective_device, group_size
from lightning_ganeval.metrics.base import GenerativeMetric

__all__ = ["GramSums", "VendiScore", "vendi_from_gram", "vendi_score"]


def _normalized_rows(features: Tensor) -> Tensor:
    x = features.detach().to(torch.float64)
    # A zero row stays zero (scikit-learn's `normalize`, which the reference uses) instead of becoming NaN.
    return x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)


def vendi_from_gram(gram: Tensor, count: int) -> float:
    """The Vendi score from S = Σᵢ x̂ᵢx̂ᵢᵀ (d × d, rows normalised) over ``count`` samples.

    Args:
        gram: The float64 ``(d, d)`` sum of outer products of the normalised rows.
        count: The number of rows summed (n >= 1).

    Returns:
        exp(−Σ λ log λ) over the eigenvalues λ > 0 of S / n, as a Python float.
    """
    if count < 1:
        raise ValueError(f"The Vendi score needs at least 1 sample, got {count}.")
    matrix = gram.to(torch.float64) / count
    eigenvalues = torch.linalg.eigvalsh((matrix + matrix.T) / 2)
    positive = eigenvalues[eigenvalues > 0]
    return float(torch.exp(-(positive * positive.log()).sum()))


def vendi_score(features: Tensor) -> float:
    """The Vendi score of ``(n, d)`` feature rows with the cosine kernel, computed through the d × d dual.

    Args:
        features: ``(n, d)`` rows, any scale (normalised here), on any device.

    Returns:
        The score, between 1 and min(n, d).

    Example:
        >>> import torch
        >>> round(vendi_score(torch.eye(4)), 6)  # four orthogonal samples: four distinct ones
        4.0
        >>> round(vendi_score(torch.ones(5, 3)), 6)  # five copies of one sample
        1.0
    """
    if not isinstance(features, Tensor) or features.ndim != 2 or features.shape[1] == 0:
        raise ValueError(f"`features` must be a 2-D (rows, features) tensor, got {features!r:.80}.")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("`features` must be finite; got NaN or Inf.")
    x = _normalized_rows(features)
    return vendi_from_gram(x.T @ x, x.shape[0])


class GramSums:
    """Σ x̂x̂ᵀ of L2-normalised feature rows and their count, float64; :meth:`compute` sums them across processes.

    A plain accumulator like those of :mod:`lightning_ganeval.accumulators`: ``update``, ``synced`` (one
    all-reduce of the packed state) and ``compute(sync=)``.

    Args:
        num_features: Width d of the rows.
        device: Where the state lives (default: the CPU).
    """

    def __init__(self, num_features: int, *, device: torch.device | str | None = None) -> None:
        self.num_features = num_features
        # One packed tensor, [count, S (d*d)]: the cross-rank sum is one collective.
        self.state = torch.zeros(1 + num_features * num_features, dtype=torch.float64, device=device)

    @property
    def count(self) -> int:
        """Rows summed (this rank's, unless synced)."""
        return int(self.state[0].item())

    @property
    def gram(self) -> Tensor:
        """S = Σ x̂x̂ᵀ, ``(d, d)`` float64 (a view of the state)."""
        return self.state[1:].view(self.num_features, self.num_features)

    def update(self, features: Tensor) -> None:
        """Add a batch of ``(N, num_features)`` rows (normalised here)."""
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"Expected features of shape (N, {self.num_features}), got {tuple(features.shape)}.")
        x = _normalized_rows(features.to(self.state.device))
        self.gram.add_(x.T @ x)
        self.state[0] += x.shape[0]

    def synced(self) -> GramSums:
        """A new :class:`GramSums` holding every rank's rows (a copy in one process); a collective under DDP."""
        merged = GramSums(self.num_features, device=self.state.device)
        merged.state = self.state.clone()
        if group_size() > 1:
            packed = merged.state.to(collective_device(merged.state.device))
            dist.all_reduce(packed)
            merged.state = packed.to(self.state.device)
        return merged

    def compute(self, sync: bool = True) -> float:
        """The Vendi score of every row seen (on every rank, unless ``sync=False``)."""
        sums = self.synced() if sync else self
        return vendi_from_gram(sums.gram, sums.count)


class VendiScore(GenerativeMetric):
    """Vendi score of the generated samples' features (Inception pool3 by default); needs no real data.

    Args:
        name: Key of the score (``vendi``).
        feature_extractor: Feature network (default: the evaluator's Inception, pool3 features).
        layer: Network output to read.
    """

    def __init__(
        self, *, name: str = "vendi", feature_extractor: torch.nn.Module | None = None, layer: str | None = None
    ) -> None:
        super().__init__(name=name, feature_extractor=feature_extractor, layer=layer)
        self._sums: GramSums | None = None
        self._device = torch.device("cpu")

    def keys(self) -> list[str]:
        return [self.name, f"{self.name}_num_samples"]

    def min_samples(self) -> int:
        return 1

    def reset(self, num_samples: int, device: torch.device) -> None:
        self.num_samples = num_samples
        self._device = device
        self._sums = None

    def update(self, features: Tensor, indices: Tensor) -> None:
        if self._sums is None or self._sums.num_features != features.shape[1]:
            # The width is known once a batch arrives; a rank that gets none builds its sums in compute().
            self._sums = GramSums(features.shape[1], device=self._device)
        self._sums.update(features)

    def _agreed_width(self) -> int:
        width = 0 if self._sums is None else self._sums.num_features
        if group_size() > 1:
            agreed = torch.tensor([width], dtype=torch.long, device=collective_device(self._device))
            dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
            width = int(agreed.item())
        return width

    def compute(self) -> dict[str, float]:
        width = self._agreed_width()  # a collective: every rank calls it, in the same order
        none_finite = f"none of the {self.num_samples} generated samples was finite (all held NaN or Inf)"
        self._nan_reasons = {}
        if width == 0:
            self._nan_reasons = {self.name: none_finite}
            return {self.name: math.nan, f"{self.name}_num_samples": 0.0}
        if self._sums is None:
            self._sums = GramSums(width, device=self._device)
        merged = self._sums.synced()  # a collective: every rank calls it
        count = merged.count
        value = vendi_from_gram(merged.gram, count) if count else math.nan
        if not count:
            self._nan_reasons = {self.name: none_finite}
        return {self.name: value, f"{self.name}_num_samples": float(count)}
