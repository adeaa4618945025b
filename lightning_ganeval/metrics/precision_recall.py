"""Improved precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020).

Every sample gets a ball whose radius is the distance to its k-th nearest neighbour *within its own set*,
not counting itself (an exact duplicate does count, at distance 0). With real rows xᵢ (n of them), generated
rows yⱼ (m of them) and radii r(·):

* precision = (1/m) Σⱼ 1[∃ i: ‖yⱼ − xᵢ‖ ≤ r(xᵢ)]  — generated samples inside the real manifold;
* recall    = (1/n) Σᵢ 1[∃ j: ‖xᵢ − yⱼ‖ ≤ r(yⱼ)]  — real samples inside the generated manifold;
* density   = (1/(k·m)) Σⱼ Σᵢ 1[‖yⱼ − xᵢ‖ ≤ r(xᵢ)] — how many real balls hold each generated sample, over k;
* coverage  = (1/n) Σᵢ 1[∃ j: ‖xᵢ − yⱼ‖ ≤ r(xᵢ)]  — real balls that hold at least one generated sample.

Conventions that change the numbers:

* Balls are closed (``≤``), as in torch-fidelity's ``prc_features_to_metric``, whose radius is
  ``kthvalue(k + 1)`` of the distances to its own set including the zero self-distance: the same value. The
  reference density/coverage code (``prdc``) uses open balls (``<``); the two differ only when a distance
  equals a radius exactly (duplicated or quantised features). All four metrics here use the same closed balls,
  so that precision > 0 exactly when density > 0.
* Distances are Euclidean, computed in float64 as ‖x‖² + ‖y‖² − 2xᵀy (clamped at 0; the self-distance is set to
  exactly 0), and compared squared. torch-fidelity uses float32 ``torch.cdist``; the decisions agree except for
  distances within float32 rounding of a radius. Ties are exact for features whose squared distances are
  exactly representable (e.g. small integers).
* k = 3 by default (torch-fidelity's ``prc_neighborhood``, StyleGAN's ``pr50k3``; Naeem et al. use k = 5).

Memory is O(block_size x max(n, m)) besides the inputs: the n x n, m x m and n x m distance matrices are
never held whole, so 50,000 samples per side fit on one GPU (about 9 bytes x block_size x 50,000 = 4.5 GB at
the default block size, plus the float64 copies of the features).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_ganeval.metrics.base import PerSampleMetric

__all__ = ["PrecisionRecall", "precision_recall_density_coverage"]


def _check_args(real: Tensor, fake: Tensor, k: int, block_size: int) -> None:
    for name, x in (("real", real), ("fake", fake)):
        if not isinstance(x, Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}.")
        if x.ndim != 2:
            raise ValueError(f"`{name}` must be a 2-D (rows, features) tensor, got shape {tuple(x.shape)}.")
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"`real` and `fake` must have the same feature dimension, got {real.shape[1]} and {fake.shape[1]}."
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be an integer >= 1, got {k!r}.")
    for name, x in (("real", real), ("fake", fake)):
        if k >= x.shape[0]:
            raise ValueError(
                f"`k` must be smaller than the number of rows of each set (a k-th neighbour other than the sample "
                f"itself is needed), got k={k} with {x.shape[0]} `{name}` rows."
            )
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"`block_size` must be an integer >= 1, got {block_size!r}.")


def _squared_distances(a: Tensor, a_norms: Tensor, b: Tensor, b_norms: Tensor) -> Tensor:
    """‖aᵢ − bⱼ‖² for a block of rows ``a`` against every row of ``b``, clamped at 0 (one new allocation)."""
    out = torch.addmm(b_norms.unsqueeze(0), a, b.T, beta=1.0, alpha=-2.0)
    return out.add_(a_norms.unsqueeze(1)).clamp_min_(0.0)


def _kth_neighbour_sq_radii(x: Tensor, norms: Tensor, k: int, block_size: int) -> Tensor:
    """Squared distance from each row to its k-th nearest other row (duplicates count, self does not)."""
    radii = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], block_size):
        block = _squared_distances(x[start : start + block_size], norms[start : start + block_size], x, norms)
        # Rounding can leave ‖x‖² + ‖x‖² − 2xᵀx slightly above 0; the self-distance is exactly 0.
        block.diagonal(offset=start).zero_()
        # The (k+1)-th smallest including self: the k-th neighbour whatever the self-distance's rank among ties.
        radii[start : start + block.shape[0]] = block.topk(k + 1, dim=1, largest=False, sorted=True).values[:, k]
    return radii


def precision_recall_density_coverage(
    real: Tensor,
    fake: Tensor,
    *,
    k: int = 3,
    block_size: int = 10_000,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Precision, recall, density and coverage of generated features against real ones (k-NN balls).

    Precision and recall equal torch-fidelity's ``prc_features_to_metric(fake, real, prc_neighborhood=k)``
    (its ``input1`` is the generated set); density and coverage follow Naeem et al. 2020 with the same closed
    balls. See the module docstring for the definitions and conventions.

    Args:
        real: ``(n, d)`` real features.
        fake: ``(m, d)`` generated features.
        k: Neighbourhood size: each ball's radius is the distance to the k-th nearest neighbour in its own set,
            excluding the sample itself; 1 <= k < min(n, m).
        block_size: Rows of distances computed at once; memory is about 9 x block_size x max(n, m) bytes.
        device: Where to compute (default: ``real``'s device). The features are copied there in float64.

    Returns:
        ``{"precision", "recall", "density", "coverage"}`` as Python floats; precision, recall and coverage lie
        in [0, 1], density in [0, n/k].

    Raises:
        ValueError: non-2-D inputs, different d, ``k < 1``, ``k >= n`` or ``k >= m``, ``block_size < 1`` or
            non-finite features.

    Example:
        >>> import torch
        >>> real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> fake = torch.tensor([[0.5], [4.0], [9.0]])
        >>> precision_recall_density_coverage(real, fake, k=1)["precision"]  # 9 is in no real ball
        0.6666666666666666
    """
    _check_args(real, fake, k, block_size)
    target = torch.device(device) if device is not None else real.device
    x = real.detach().to(device=target, dtype=torch.float64)
    y = fake.detach().to(device=target, dtype=torch.float64)
    if not bool(torch.isfinite(x).all()) or not bool(torch.isfinite(y).all()):
        raise ValueError("`real` and `fake` must be finite; got NaN or Inf features.")
    n, m = x.shape[0], y.shape[0]
    x_norms = x.square().sum(dim=1)
    y_norms = y.square().sum(dim=1)
    real_radii = _kth_neighbour_sq_radii(x, x_norms, k, block_size)
    fake_radii = _kth_neighbour_sq_radii(y, y_norms, k, block_size)

    # One pass over real x fake distances serves all four metrics.
    real_balls_per_fake = torch.zeros(m, dtype=torch.long, device=target)
    real_in_fake_ball = torch.empty(n, dtype=torch.bool, device=target)
    real_ball_covered = torch.empty(n, dtype=torch.bool, device=target)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        dist = _squared_distances(x[start:stop], x_norms[start:stop], y, y_norms)
        in_real_ball = dist <= real_radii[start:stop].unsqueeze(1)
        real_balls_per_fake += in_real_ball.sum(dim=0)
        real_ball_covered[start:stop] = in_real_ball.any(dim=1)
        del in_real_ball
        real_in_fake_ball[start:stop] = (dist <= fake_radii.unsqueeze(0)).any(dim=1)
        del dist

    return {
        "precision": int((real_balls_per_fake > 0).sum()) / m,
        "recall": int(real_in_fake_ball.sum()) / n,
        "density": int(real_balls_per_fake.sum()) / (k * m),
        "coverage": int(real_ball_covered.sum()) / n,
    }


class PrecisionRecall(PerSampleMetric):
    """Precision, recall, density and coverage of the generated samples against real samples (k-NN manifolds).

    Per-sample features are kept on the CPU, gathered once per evaluation in global sample order and compared in
    blocks on the evaluation device (:func:`precision_recall_density_coverage`).

    Args:
        name: ``"pr"`` (default) returns the keys ``precision``, ``recall``, ``density``, ``coverage`` and
            ``pr_num_samples``; any other name prefixes them all (``<name>_precision``, ...), so that two instances
            can coexist.
        feature_extractor: Feature network (default: the evaluator's Inception, pool3 features; published pr50k3
            numbers use VGG16 features instead, so they are not comparable).
        layer: Network output to read.
        k: Neighbourhood size of the k-NN balls.
        max_real: Real feature rows kept (a seeded uniform sample of the whole real set).
        block_size: Rows of pairwise distances computed at once on the evaluation device.
    """

    def __init__(
        self,
        *,
        name: str = "pr",
        feature_extractor: torch.nn.Module | None = None,
        layer: str | None = None,
        k: int = 3,
        max_real: int = 10_000,
        block_size: int = 10_000,
    ) -> None:
        super().__init__(name=name, feature_extractor=feature_extractor, layer=layer, max_real=max_real)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"`k` must be an integer >= 1, got {k!r}.")
        self.k = k
        self.block_size = block_size

    def key(self, what: str) -> str:
        """The returned key of ``what`` (``precision``, ``recall``, ``density``, ``coverage``, ``num_samples``)."""
        return what if self.name == "pr" and what != "num_samples" else f"{self.name}_{what}"

    def keys(self) -> list[str]:
        return [self.key(w) for w in ("precision", "recall", "density", "coverage", "num_samples")]

    def primary_key(self) -> str:
        return self.key("precision")

    def min_samples(self) -> int:
        return self.k + 1

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "k": self.k}

    def check_real(self, count: int) -> None:
        if count <= self.k:
            raise ValueError(
                f"`{self.name}`: k={self.k} needs more than k real samples, got {count}; lower `k` or use more real"
                " data."
            )

    def compute(self) -> dict[str, float]:
        fake = self.generated_features()
        self._nan_reasons = {}
        if len(fake) <= self.k:
            values = dict.fromkeys(("precision", "recall", "density", "coverage"), float("nan"))
            reason = (
                f"only {len(fake)} of the {self.num_samples} generated samples were finite (the others held NaN or"
                f" Inf and were left out); k={self.k} nearest neighbours need more than {self.k}"
            )
            self._nan_reasons = {self.key(w): reason for w in values}
        else:
            values = precision_recall_density_coverage(
                self.real_features(), fake, k=self.k, block_size=self.block_size, device=self._device
            )
        values["num_samples"] = float(len(fake))
        return {self.key(w): float(v) for w, v in values.items()}
