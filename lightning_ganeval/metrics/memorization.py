"""Training-set memorisation: AuthPct, the C_T data-copying statistic and the memorised fraction.

Three numbers from nearest-neighbour distances in feature space between the generated rows g, the training rows
x (the real data the generator learned from) and, for C_T, held-out real rows p (a test set):

* ``authpct`` — the authenticity percentage of Alaa et al. 2022, as dgm-eval's ``metrics/authpct.py`` computes
  it: g is authentic when its distance to its nearest training row x_j is *larger* than x_j's distance to its own
  nearest other training row (strict ``<``: an exact copy is never authentic). 100 × the authentic fraction. A
  generator that returns training images scores near 0; fresh samples of the same distribution score far higher
  (dgm-eval's CIFAR-10 test set: 72.2).
* ``ct`` — the C_T statistic of Meehan, Chaudhuri & Dasgupta (AISTATS 2020), with dgm-eval's ``metrics/ct.py``
  constants: features wider than 64 are projected on the 64 leading principal components of the training rows;
  k-means with 3 cells (10 initialisations) on the projected training rows; in each cell, the distances of the
  generated and of the test rows to their nearest *same-cell* training row are compared with the Mann–Whitney U
  of the generated ones ("less"), Z = (U − (nm/2 − 0.5)) / √(nm(n + m + 1)/12); C_T is the mean of the cells' Z
  weighted by their share of test rows, over the cells holding more than τ = 20/m of the m generated rows.
  Negative: the generated rows lie closer to the training rows than fresh data do (copying); positive:
  farther (underfitting); about 0 for a generator that samples the data distribution.
* ``memorized_fraction`` — ours: the share of generated rows whose nearest-training distance is at or below the
  1 % quantile (``quantile``) of the training rows' own nearest-neighbour distances. A fresh sample's nearest
  training distance is distributed like a training row's own, so a generator of the data distribution scores
  about ``quantile`` (0.01); a copying one scores up to 1. It is the number to act on: "this share of what the
  generator makes sits on top of a training image".

Conventions that can change the numbers:

* Distances are Euclidean in float64. Neighbours are searched with ‖a‖² + ‖b‖² − 2aᵀb in blocks of rows (never
  an N × N matrix), then the distance to the neighbour found is recomputed directly as ‖a − b‖, so an exact copy
  is at distance exactly 0. dgm-eval uses float32 ``torch.cdist`` and scikit-learn; decisions differ only for
  distances within float32 rounding of each other.
* PCA is exact (eigenvectors of the float64 training covariance); scikit-learn's default solver may be
  randomised for large inputs. Distances do not depend on the sign of the components.
* k-means is ours (k-means++ seeding from a seeded CPU generator, Lloyd iterations until the centres move less
  than ``1e-4`` × the mean feature variance, best of 10 by inertia, as scikit-learn's stopping rule), so the cells
  are the same in every run and on every rank; dgm-eval's ``KMeans`` is unseeded, so its C_T varies from run to
  run. With well-separated clusters both find the same cells and agree exactly.
* A cell without training or test rows makes C_T undefined (dgm-eval raises): ``ct`` is NaN, with a warning.
  So is a ``ct`` whose cells all hold at most 20 generated rows (m ≤ 20 or everything in tiny cells).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_ganeval.accumulators import FeatureBank
from lightning_ganeval.metrics.base import PerSampleMetric, RealData, check_int
from lightning_ganeval.metrics.memorization_stats import (
    CT_CELLS,
    CT_KMEANS_INIT,
    CT_PCA_DIMS,
    CT_TAU_COUNT,
    assign_to_centres,
    authpct_from_neighbours,
    check_rows,
    ct_statistic,
    fit_kmeans,
    fit_pca,
    mann_whitney_u,
    nearest_neighbours,
)

__all__ = [
    "Memorization",
    "MemorizationReference",
    "NearestTraining",
    "authpct_from_neighbours",
    "ct_statistic",
    "fit_kmeans",
    "fit_pca",
    "mann_whitney_u",
    "memorization_scores",
    "nearest_neighbours",
    "prepare_reference",
    "seeded_split",
]


@dataclass
class MemorizationReference:
    """What the training and test rows give once per fit (small: O(n) numbers, plus the PCA and the centres).

    Attributes:
        self_distance: ``(n,)`` each training row's distance to its nearest other training row.
        threshold: The ``quantile`` of ``self_distance``: generated rows at or below it count as memorised.
        pca_mean: ``(d,)`` mean of the PCA (``None`` when d <= 64: no projection).
        pca_components: ``(d, 64)`` leading principal directions (or ``None``).
        centres: ``(cells, d')`` k-means centres in the projected space (``None`` without a test set).
        train_cells: ``(n,)`` cell of each training row.
        test_distance: ``(n_test,)`` each test row's distance to its nearest same-cell training row.
        test_cells: ``(n_test,)`` cell of each test row.
        ct_problem: Why C_T is undefined for these rows (``None`` when it is defined).
    """

    self_distance: Tensor
    threshold: float
    pca_mean: Tensor | None = None
    pca_components: Tensor | None = None
    centres: Tensor | None = None
    train_cells: Tensor | None = None
    test_distance: Tensor | None = None
    test_cells: Tensor | None = None
    ct_problem: str | None = None

    def project(self, x: Tensor) -> Tensor:
        """Rows in the C_T space (the PCA projection, or ``x`` itself when d <= 64)."""
        if self.pca_components is None or self.pca_mean is None:
            return x
        return (x - self.pca_mean.to(x.device)) @ self.pca_components.to(x.device)


def prepare_reference(
    train: Tensor,
    test: Tensor | None,
    *,
    quantile: float = 0.01,
    pca_dims: int = CT_PCA_DIMS,
    cells: int = CT_CELLS,
    kmeans_init: int = CT_KMEANS_INIT,
    kmeans_seed: int = 0,
    block_size: int = 4096,
) -> MemorizationReference:
    """The per-fit part of :func:`memorization_scores`: training self-distances, PCA, cells and test distances.

    Args:
        train: ``(n, d)`` float64 training rows on the evaluation device.
        test: ``(n_test, d)`` float64 held-out rows, or ``None`` (then no C_T).
        Other arguments: as :func:`memorization_scores`.
    """
    self_distance, _ = nearest_neighbours(train, train, block_size=block_size, exclude_self=True)
    threshold = float(torch.quantile(self_distance.cpu(), quantile))
    ref = MemorizationReference(self_distance=self_distance, threshold=threshold)
    if test is None:
        ref.ct_problem = "no test rows"
        return ref
    if train.shape[1] > pca_dims:
        ref.pca_mean, ref.pca_components = fit_pca(train, pca_dims)
    t = ref.project(train)
    ref.centres = fit_kmeans(t, cells, n_init=kmeans_init, seed=kmeans_seed)
    ref.train_cells, _ = assign_to_centres(t, ref.centres)
    p = ref.project(test)
    ref.test_cells, _ = assign_to_centres(p, ref.centres)
    ref.test_distance, _ = nearest_neighbours(
        p, t, block_size=block_size, query_cells=ref.test_cells, reference_cells=ref.train_cells
    )
    for name, labels in (("training", ref.train_cells), ("test", ref.test_cells)):
        empty = [c for c in range(cells) if not bool((labels == c).any())]
        if empty:
            ref.ct_problem = f"k-means cell(s) {empty} hold no {name} rows"
    return ref


@dataclass
class NearestTraining:
    """The generated rows closest to the training rows, for the evidence grid.

    Attributes:
        generated: ``(k,)`` positions of those generated rows (global sample indices in a callback).
        distance: ``(k,)`` their distance to the nearest training row, ascending.
        training: ``(k, neighbours)`` positions of their nearest training rows in the training rows given.
    """

    generated: Tensor
    distance: Tensor
    training: Tensor


def memorization_scores(
    train: Tensor,
    generated: Tensor,
    test: Tensor | None = None,
    *,
    quantile: float = 0.01,
    pca_dims: int = CT_PCA_DIMS,
    cells: int = CT_CELLS,
    kmeans_init: int = CT_KMEANS_INIT,
    kmeans_seed: int = 0,
    block_size: int = 4096,
    device: torch.device | str | None = None,
    reference: MemorizationReference | None = None,
    nearest: int = 0,
    neighbours: int = 3,
) -> tuple[dict[str, float], NearestTraining | None]:
    """AuthPct, C_T and the memorised fraction of generated feature rows against training (and test) rows.

    See the module docstring for the definitions and conventions.

    Args:
        train: ``(n, d)`` training features, n >= 2.
        generated: ``(m, d)`` generated features.
        test: ``(n_test, d)`` held-out real features for C_T; ``None``: ``ct`` is NaN.
        quantile: Quantile of the training rows' own nearest-neighbour distances below which (inclusive) a
            generated row counts as memorised.
        pca_dims: C_T's PCA width (dgm-eval: 64; features at most this wide are not projected).
        cells: C_T's k-means cells (dgm-eval: 3).
        kmeans_init: k-means initialisations (dgm-eval: 10).
        kmeans_seed: Seed of the k-means++ draws.
        block_size: Rows per block of the nearest-neighbour searches: memory about 8 × block_size × n bytes.
        device: Where to compute (default ``train``'s device); the rows are copied there in float64.
        reference: A :func:`prepare_reference` result for these ``train``/``test`` rows, to skip that work.
        nearest: Also return the ``nearest`` generated rows closest to the training rows.
        neighbours: Training neighbours returned for each of those.

    Returns:
        ``({"authpct", "ct", "memorized_fraction"}, NearestTraining or None)``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> train = torch.randn(200, 8, generator=g)
        >>> scores, _ = memorization_scores(train, train[:50].clone())
        >>> scores["authpct"], scores["memorized_fraction"]
        (0.0, 1.0)
    """
    check_rows("train", train)
    if len(train) < 2:
        raise ValueError(f"`train` needs at least 2 rows (a nearest other training row), got {len(train)}.")
    check_rows("generated", generated, train.shape[1])
    if test is not None:
        check_rows("test", test, train.shape[1])
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"`quantile` must lie in [0, 1], got {quantile!r}.")
    target = torch.device(device) if device is not None else train.device
    x = train.detach().to(device=target, dtype=torch.float64)
    if reference is None:
        p = None if test is None else test.detach().to(device=target, dtype=torch.float64)
        reference = prepare_reference(
            x,
            p,
            quantile=quantile,
            pca_dims=pca_dims,
            cells=cells,
            kmeans_init=kmeans_init,
            kmeans_seed=kmeans_seed,
            block_size=block_size,
        )
    if len(generated) == 0:
        return dict.fromkeys(("authpct", "ct", "memorized_fraction"), math.nan), None
    g = generated.detach().to(device=target, dtype=torch.float64)
    distance, neighbour = nearest_neighbours(g, x, block_size=block_size)
    self_distance = reference.self_distance.to(target)
    scores = {
        "authpct": authpct_from_neighbours(distance, neighbour, self_distance),
        "ct": math.nan,
        "memorized_fraction": int((distance <= reference.threshold).sum()) / len(distance),
    }
    if reference.ct_problem is not None and reference.ct_problem != "no test rows":
        warnings.warn(f"C_T is undefined: {reference.ct_problem}; `ct` is NaN.", UserWarning, stacklevel=2)
    elif reference.centres is not None:
        assert reference.train_cells is not None
        assert reference.test_cells is not None
        assert reference.test_distance is not None
        t = reference.project(x)
        q = reference.project(g)
        q_cells, _ = assign_to_centres(q, reference.centres.to(target))
        q_distance, _ = nearest_neighbours(
            q, t, block_size=block_size, query_cells=q_cells, reference_cells=reference.train_cells.to(target)
        )
        scores["ct"] = ct_statistic(
            reference.test_distance.to(target),
            reference.test_cells.to(target),
            q_distance,
            q_cells,
            len(reference.centres),
        )
    found = None
    if nearest > 0:
        order = torch.argsort(distance, stable=True)[:nearest]
        block = torch.cdist(g[order], x)
        kept = min(neighbours, len(x))
        top = block.topk(kept, dim=1, largest=False, sorted=True).indices
        found = NearestTraining(generated=order.cpu(), distance=distance[order].cpu(), training=top.cpu())
    return scores, found


def seeded_split(n: int, fraction: float, seed: int, *, what: str = "memorization") -> tuple[Tensor, Tensor]:
    """Positions of the training rows and of the held-out test rows when ``fraction`` of ``n`` rows are split off.

    The test rows are the first ``round(fraction * n)`` of ``torch.randperm(n)`` drawn from a CPU generator seeded
    with ``seed`` (the same on every rank and machine); both position lists are returned sorted.

    Raises:
        ValueError: no test row, or fewer than 2 training rows, would be left.
    """
    count = round(fraction * n)
    if count < 1 or n - count < 2:
        raise ValueError(
            f"{what}: test_fraction={fraction} of {n} real samples leaves no test or too few training samples; use"
            " more real data or pass held-out data."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[count:].sort().values, order[:count].sort().values


class Memorization(PerSampleMetric):
    """AuthPct, C_T and the memorised fraction of the generated samples against the training data.

    The real data of the shared real pass are the *training* rows (the first ``max_real`` real samples; shared
    with KID and precision/recall when they read the same network). C_T needs held-out rows: call
    :meth:`set_test` (the callback's ``real_test=``), or the metric splits the real rows itself, seeded:
    ``test_fraction`` of them (drawn with ``split_seed``) become the test rows and the rest the training rows.
    The training side (self-distances, PCA, k-means cells, test distances) is computed once per fit on the
    evaluation device; each evaluation gathers the generated rows in global sample order and searches their
    neighbours in blocks, so the values are the same on every rank and for any number of processes.

    Args:
        name: ``"memorization"`` (default) returns ``authpct``, ``ct``, ``memorized_fraction`` and
            ``memorization_num_samples``; another name prefixes them all (``<name>_authpct``, ...).
        feature_extractor: Feature network (default: the evaluator's Inception pool3; dgm-eval recommends DINOv2,
            :class:`~lightning_ganeval.dinov2.DINOv2Extractor`).
        layer: Network output to read.
        max_real: Real rows kept (training plus split-off test rows).
        test_fraction: Share of the real rows split off as test rows when no test set is given; 0 disables C_T
            then.
        split_seed: Seed of that split.
        quantile: See :func:`memorization_scores`.
        block_size: Rows per block of the neighbour searches.
        kmeans_seed: Seed of the k-means++ draws.
        nearest: Generated samples kept in :attr:`nearest` after each evaluation (the evidence grid).
        neighbours: Training neighbours kept for each.

    Attributes:
        nearest: After :meth:`compute`, a :class:`NearestTraining` whose ``generated`` are global sample indices
            and whose ``training`` are positions in the real data (dataset indices for map-style data).
    """

    def __init__(
        self,
        *,
        name: str = "memorization",
        feature_extractor: torch.nn.Module | None = None,
        layer: str | None = None,
        max_real: int = 50_000,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        quantile: float = 0.01,
        block_size: int = 4096,
        kmeans_seed: int = 0,
        nearest: int = 8,
        neighbours: int = 3,
    ) -> None:
        super().__init__(name=name, feature_extractor=feature_extractor, layer=layer, max_real=max_real)
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 <= test_fraction < 1:
            raise ValueError(f"`test_fraction` must be a number in [0, 1), got {test_fraction!r}.")
        if not isinstance(quantile, (int, float)) or isinstance(quantile, bool) or not 0 <= quantile <= 1:
            raise ValueError(f"`quantile` must be a number in [0, 1], got {quantile!r}.")
        self.test_fraction = float(test_fraction)
        self.split_seed = check_int("split_seed", split_seed, 0)
        self.quantile = float(quantile)
        self.block_size = check_int("block_size", block_size, 1)
        self.kmeans_seed = check_int("kmeans_seed", kmeans_seed, 0)
        self.num_nearest = check_int("nearest", nearest, 0)
        self.neighbours = check_int("neighbours", neighbours, 1)
        self.test: Tensor | None = None
        self.train_positions: Tensor | None = None
        self.nearest: NearestTraining | None = None
        self._reference: MemorizationReference | None = None
        self._index_bank: FeatureBank | None = None

    def key(self, what: str) -> str:
        """The returned key of ``what`` (``authpct``, ``ct``, ``memorized_fraction``, ``num_samples``)."""
        if self.name == "memorization" and what != "num_samples":
            return what
        return f"{self.name}_{what}"

    def keys(self) -> list[str]:
        return [self.key(w) for w in ("authpct", "ct", "memorized_fraction", "num_samples")]

    def primary_key(self) -> str:
        return self.key("authpct")

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "test_fraction": self.test_fraction,
            "split_seed": self.split_seed,
            "quantile": self.quantile,
            "kmeans_seed": self.kmeans_seed,
        }

    def check_real(self, count: int) -> None:
        if count < 2:
            raise ValueError(f"`{self.name}` needs at least 2 real (training) samples, got {count}.")

    def set_real(self, real: RealData) -> None:
        super().set_real(real)
        self._reference = None

    def set_test(self, test: RealData | Tensor) -> None:
        """Give held-out real rows for C_T (instead of the seeded split of the real rows)."""
        features = test.features if isinstance(test, RealData) else test
        if features is None or len(features) < 1:
            raise ValueError(f"`{self.name}`: the test data gave no feature rows.")
        self.test = features
        self._reference = None

    def split(self) -> tuple[Tensor, Tensor | None]:
        """Positions (in the real rows) of the training rows and of the split-off test rows (``None``: given)."""
        n = len(self.real_features())
        if self.test is not None or self.test_fraction == 0:
            return torch.arange(n), None
        return seeded_split(n, self.test_fraction, self.split_seed, what=f"`{self.name}`")

    def reset(self, num_samples: int, device: torch.device) -> None:
        super().reset(num_samples, device)
        if self._index_bank is None:
            self._index_bank = FeatureBank(num_features=1)
        self._index_bank.reset()

    def update(self, features: Tensor, indices: Tensor) -> None:
        super().update(features, indices)
        assert self._index_bank is not None
        # float32 holds sample indices exactly up to 2**24.
        self._index_bank.update(torch.as_tensor(indices).to(torch.float32).unsqueeze(1), indices)

    def _prepared(self) -> tuple[Tensor, MemorizationReference]:
        real = self.real_features()
        train_pos, test_pos = self.split()
        train = real[train_pos].to(device=self._device, dtype=torch.float64)
        if self._reference is None:
            test = self.test if test_pos is None else real[test_pos]
            self._reference = prepare_reference(
                train,
                None if test is None else test.to(device=self._device, dtype=torch.float64),
                quantile=self.quantile,
                kmeans_seed=self.kmeans_seed,
                block_size=self.block_size,
            )
            self.train_positions = train_pos
        return train, self._reference

    def compute(self) -> dict[str, float]:
        fake = self.generated_features()
        assert self._index_bank is not None
        sample_index = self._index_bank.compute()[:, 0].long()
        train, reference = self._prepared()
        values, found = memorization_scores(
            train,
            fake,
            device=self._device,
            reference=reference,
            block_size=self.block_size,
            nearest=self.num_nearest,
            neighbours=self.neighbours,
        )
        if found is not None and self.train_positions is not None:
            found.generated = sample_index[found.generated]
            found.training = self.train_positions[found.training]
            if self.real is not None and self.real.indices is not None:
                # Real rows are a seeded sample in priority order: map positions back to dataset indices.
                found.training = self.real.indices[found.training]
        self.nearest = found
        values["num_samples"] = float(len(fake))
        self._explain_nan(values, reference, len(fake))
        return {self.key(w): float(v) for w, v in values.items()}

    def _explain_nan(self, values: dict[str, float], reference: MemorizationReference, count: int) -> None:
        """Why a value is NaN (for the evaluator's warning); C_T without test rows is the user's choice, not news."""
        self._nan_reasons, self._expected_nan = {}, set()
        if count == 0:
            reason = f"none of the {self.num_samples} generated samples was finite (all held NaN or Inf)"
            self._nan_reasons = {self.key(w): reason for w in ("authpct", "ct", "memorized_fraction")}
        elif math.isnan(values["ct"]):
            if reference.ct_problem == "no test rows":
                reason = "C_T needs held-out test rows and there are none (`test_fraction=0` and no test set)"
                self._expected_nan = {self.key("ct")}
            elif reference.ct_problem is not None:
                reason = f"C_T is undefined: {reference.ct_problem}"
            else:
                reason = (
                    f"no k-means cell holds more than {CT_TAU_COUNT} of the {count} finite generated samples, which C_T"
                    " needs in a cell to compare it"
                )
            self._nan_reasons = {self.key("ct"): reason}
