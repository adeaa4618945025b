"""FIDMoments and ISMarginals against np.cov, the stored-logits Inception Score and torch-fidelity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_fidelity.metric_isc import isc_features_to_metric

from lightning_ganeval.accumulators import FIDMoments, ISMarginals
from lightning_ganeval.frechet import FrechetReference, GaussianStats
from lightning_ganeval.inception_score_math import inception_score

RTOL = 1e-9  # streaming results must equal the one-shot float64 reference to this relative tolerance


def _rel_matrix(ours: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    """max|ours - ref| / max|ref|: a scale-aware relative error for vectors and matrices."""
    ours = ours.numpy() if isinstance(ours, torch.Tensor) else ours
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _rel(ours: float, ref: float) -> float:
    return abs(ours - ref) / abs(ref)


@pytest.fixture
def features() -> torch.Tensor:
    """97 correlated 16-d float64 feature vectors (97: not a multiple of any batch size used below)."""
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(16, 16, generator=g, dtype=torch.float64) + torch.eye(16, dtype=torch.float64)
    return torch.randn(97, 16, generator=g, dtype=torch.float64) @ mixing + 3.0


def _feed(metric: FIDMoments, x: torch.Tensor, batch: int) -> FIDMoments:
    for chunk in x.split(batch):
        metric.update(chunk)
    return metric


# ------------------------------------------------------------------------------------------- FIDMoments
@pytest.mark.parametrize("batch", [97, 1, 7, 32])
def test_fid_moments_match_np_cov_for_any_batching(features: torch.Tensor, batch: int) -> None:
    stats = _feed(FIDMoments(num_features=16), features, batch).compute()
    x = features.numpy()
    assert isinstance(stats, GaussianStats)
    assert stats.n == 97
    assert stats.mean.dtype == stats.cov.dtype == torch.float64
    assert _rel_matrix(stats.mean, x.mean(axis=0)) <= RTOL
    assert _rel_matrix(stats.cov, np.cov(x, rowvar=False)) <= RTOL


def test_fid_moments_independent_of_sample_order(features: torch.Tensor) -> None:
    order = torch.randperm(97, generator=torch.Generator().manual_seed(1))
    a = _feed(FIDMoments(num_features=16), features, 10).compute()
    b = _feed(FIDMoments(num_features=16), features[order], 13).compute()
    assert _rel_matrix(b.mean, a.mean.numpy()) <= RTOL
    assert _rel_matrix(b.cov, a.cov.numpy()) <= RTOL
    reference = FrechetReference(torch.full((16,), 2.5, dtype=torch.float64), torch.eye(16, dtype=torch.float64))
    assert _rel(reference.distance(b.mean, b.cov), reference.distance(a.mean, a.cov)) <= RTOL


def _raw_sum_cov_float32(x: torch.Tensor, batch: int) -> np.ndarray:
    """The naive alternative: float32 Σx and Σxxᵀ, then (Σxxᵀ − nμμᵀ)/(n − 1) (torcheval#192's bug class)."""
    s = torch.zeros(x.shape[1], dtype=torch.float32)
    ss = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float32)
    for chunk in x.float().split(batch):
        s += chunk.sum(dim=0)
        ss += chunk.T @ chunk
    n = x.shape[0]
    mean = s / n
    return ((ss - n * torch.outer(mean, mean)) / (n - 1)).double().numpy()


def test_cancellation_stress_offset_1e3() -> None:
    # Features 1e3 away from the origin with unit spread: raw sums lose ~6 digits to cancellation; the centred
    # Chan merge must still equal a two-pass float64 np.cov.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(600, 32, generator=g, dtype=torch.float64) + 1e3
    reference = np.cov(x.numpy(), rowvar=False)
    stats = _feed(FIDMoments(num_features=32), x, 50).compute()
    assert _rel_matrix(stats.cov, reference) <= RTOL
    assert _rel_matrix(stats.mean, x.numpy().mean(axis=0)) <= RTOL
    # The test has teeth: the float32 raw-sum accumulator fails it by many orders of magnitude.
    assert _rel_matrix(_raw_sum_cov_float32(x, 50), reference) > 1e3 * RTOL


def test_merge_of_shards_equals_single_process_state(features: torch.Tensor) -> None:
    whole = _feed(FIDMoments(num_features=16), features, 16)
    shards = [_feed(FIDMoments(num_features=16), part, 5) for part in (features[:40], features[40:41], features[41:])]
    empty = FIDMoments(num_features=16)  # a rank that saw nothing must not disturb the merge
    merged = FIDMoments(num_features=16)
    for shard in [empty, *shards, empty]:
        merged.merge(shard)
    assert merged.n.item() == 97
    assert _rel_matrix(merged.moments[1:], whole.moments[1:].numpy()) <= RTOL
    assert _rel_matrix(merged.compute().cov, whole.compute().cov.numpy()) <= RTOL
    assert shards[0].n.item() == 40  # merge() leaves the merged-in accumulators as they are


def test_merging_into_an_empty_accumulator_copies_exactly(features: torch.Tensor) -> None:
    # The first rank's state merged into an empty one must keep every bit (the rank-order merge starts so).
    shard = _feed(FIDMoments(num_features=16), features, 7)
    merged = FIDMoments(num_features=16)
    merged.merge(shard)
    assert torch.equal(merged.moments, shard.moments)
    assert torch.equal(shard.synced().moments, shard.moments)  # one process: synced() is a copy
    assert shard.synced().moments is not shard.moments


def test_compute_does_not_disturb_accumulation(features: torch.Tensor) -> None:
    metric = FIDMoments(num_features=16)
    metric.update(features[:50])
    first = metric.compute()
    metric.update(features[50:])
    assert first.n == 50
    assert _rel_matrix(metric.compute().cov, np.cov(features.numpy(), rowvar=False)) <= RTOL
    metric.reset()
    assert metric.n.item() == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_features_accumulate_in_float64(dtype: torch.dtype) -> None:
    x = (torch.randn(40, 8, generator=torch.Generator().manual_seed(3)) * 2).to(dtype)
    metric = FIDMoments(num_features=8).to("cpu")  # moving the state keeps it float64
    _feed(metric, x, 9)
    assert metric.moments.dtype == torch.float64
    stats = metric.compute()
    exact = x.double().numpy()
    assert _rel_matrix(stats.cov, np.cov(exact, rowvar=False)) <= RTOL


def test_features_that_require_grad_build_no_graph() -> None:
    x = torch.randn(10, 4, requires_grad=True)
    metric = FIDMoments(num_features=4)
    metric.update(x * 2)
    assert not metric.moments.requires_grad
    marginals = ISMarginals(num_samples=10, splits=2, num_classes=4)
    marginals.update(x * 2)
    assert not marginals.prob_sum.requires_grad


@pytest.mark.parametrize(
    ("shape", "match"),
    [((5, 15), r"got \(5, 15\)"), ((16,), r"got \(16,\)"), ((2, 5, 16), r"got \(2, 5, 16\)")],
)
def test_fid_moments_rejects_wrong_shapes(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=r"Expected features of shape \(N, 16\), " + match):
        FIDMoments(num_features=16).update(torch.zeros(shape))


def test_fid_moments_rejects_integer_features_and_bad_num_features() -> None:
    with pytest.raises(TypeError, match="floating dtype"):
        FIDMoments(num_features=4).update(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="`num_features` must be a positive integer, got 0"):
        FIDMoments(num_features=0)


def test_fid_moments_needs_two_samples_and_finite_features() -> None:
    metric = FIDMoments(num_features=4)
    metric.update(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"at least 2 samples.*got 1"):
        metric.compute()
    metric.update(torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match="NaN or Inf"):
        metric.compute()


def test_single_feature_dimension_is_not_squeezed() -> None:
    metric = FIDMoments(num_features=1)
    metric.update(torch.tensor([[1.0], [2.0], [4.0]]))
    stats = metric.compute()
    assert stats.mean.shape == (1,)
    assert stats.cov.shape == (1, 1)
    assert stats.cov.item() == pytest.approx(np.var([1.0, 2.0, 4.0], ddof=1), rel=RTOL)


# ------------------------------------------------------------------------------------------- ISMarginals
@pytest.fixture
def logits() -> torch.Tensor:
    """103 samples of 1008 logits (103: not divisible by 10 splits nor by the batch sizes)."""
    return torch.randn(103, 1008, generator=torch.Generator().manual_seed(5)) * 4


@pytest.mark.parametrize("batch", [103, 1, 8, 25])
def test_is_marginals_match_stored_logits_in_order(logits: torch.Tensor, batch: int) -> None:
    metric = ISMarginals(num_samples=103, splits=10)
    for chunk in logits.split(batch):
        metric.update(chunk)
    mean, std = metric.compute()
    ref = isc_features_to_metric(logits, splits=10, shuffle=False)
    assert _rel(mean, ref["inception_score_mean"]) <= RTOL
    assert _rel(std, ref["inception_score_std"]) <= RTOL
    ours_stored = inception_score(logits, splits=10)
    assert _rel(mean, ours_stored[0]) <= RTOL
    assert _rel(std, ours_stored[1]) <= RTOL


@pytest.mark.parametrize("splits", [1, 3, 10])
def test_is_marginals_with_shuffled_batches_and_global_indices(logits: torch.Tensor, splits: int) -> None:
    order = torch.randperm(103, generator=torch.Generator().manual_seed(6))
    metric = ISMarginals(num_samples=103, splits=splits)
    for chunk in order.split(11):
        metric.update(logits[chunk], indices=chunk)
    mean, std = metric.compute()
    ref_mean, ref_std = inception_score(logits, splits=splits)
    assert _rel(mean, ref_mean) <= RTOL
    assert std == pytest.approx(ref_std, rel=RTOL, abs=1e-12)


def test_is_marginals_state_is_float64_for_bf16_logits(logits: torch.Tensor) -> None:
    metric = ISMarginals(num_samples=103, splits=10)
    metric.update(logits.bfloat16())
    assert metric.prob_sum.dtype == metric.plogp_sum.dtype == torch.float64
    assert metric.prob_sum.shape == (10, 1008)
    ref = inception_score(logits.bfloat16().double(), splits=10)
    assert _rel(metric.compute()[0], ref[0]) <= RTOL


def test_is_marginals_counter_and_reset(logits: torch.Tensor) -> None:
    metric = ISMarginals(num_samples=103, splits=10)
    metric.update(logits)
    with pytest.raises(ValueError, match="more than num_samples=103"):
        metric.update(logits[:1])
    first = metric.compute()
    metric.reset()
    metric.update(logits)  # counter restarted at 0
    assert metric.compute() == pytest.approx(first, rel=RTOL)


def test_is_marginals_rejects_too_few_samples_at_construction() -> None:
    with pytest.raises(ValueError, match="got 9 samples for splits=10"):
        ISMarginals(num_samples=9, splits=10)


def test_is_marginals_empty_split_is_an_error_and_partial_data_warns(logits: torch.Tensor) -> None:
    metric = ISMarginals(num_samples=103, splits=10)
    metric.update(logits[:50], indices=torch.arange(50))
    with pytest.warns(UserWarning, match="saw 50 samples"), pytest.raises(ValueError, match=r"split\(s\) \[5, 6"):
        metric.compute()


@pytest.mark.parametrize(
    ("indices", "match"),
    [
        (torch.tensor([0, 1, 103]), r"in \[0, 103\).*from 0 to 103"),
        (torch.tensor([-1, 1, 2]), r"in \[0, 103\)"),
        (torch.tensor([0, 1]), r"shape \(3,\)"),
        (torch.tensor([0.0, 1.0, 2.0]), "integer tensor"),
    ],
)
def test_is_marginals_validates_indices(logits: torch.Tensor, indices: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ISMarginals(num_samples=103).update(logits[:3], indices=indices)


def test_is_marginals_rejects_wrong_logit_shape() -> None:
    with pytest.raises(ValueError, match=r"Expected logits of shape \(N, 1008\), got \(4, 1000\)"):
        ISMarginals(num_samples=20).update(torch.zeros(4, 1000))


def test_is_marginals_merge_equals_one_pass(logits: torch.Tensor) -> None:
    order = torch.randperm(103, generator=torch.Generator().manual_seed(7))
    parts = [ISMarginals(num_samples=103, splits=10) for _ in range(3)]
    for k, chunk in enumerate(order.split(40)):
        parts[k].update(logits[chunk], indices=chunk)
    merged = ISMarginals(num_samples=103, splits=10)
    for part in parts:
        merged.merge(part)
    assert _rel(merged.compute()[0], inception_score(logits, 10)[0]) <= RTOL
    with pytest.raises(ValueError, match="Cannot merge ISMarginals"):
        merged.merge(ISMarginals(num_samples=103, splits=5))


def test_metrics_survive_pickling_and_inference_mode(features: torch.Tensor, logits: torch.Tensor) -> None:
    # ddp_spawn pickles callbacks with their metrics; a reset under inference_mode must not break later updates.
    import pickle

    fid = FIDMoments(num_features=16)
    fid.update(features[:40])
    fid = pickle.loads(pickle.dumps(fid))
    with torch.inference_mode():
        fid.update(features[40:60])
    fid.update(features[60:])
    assert _rel_matrix(fid.compute().cov, np.cov(features.numpy(), rowvar=False)) <= RTOL

    marginals = ISMarginals(num_samples=103, splits=10)
    with torch.inference_mode():
        marginals.reset()
        marginals.update(logits[:50])
    marginals = pickle.loads(pickle.dumps(marginals))
    marginals.update(logits[50:])
    assert _rel(marginals.compute()[0], inception_score(logits, 10)[0]) <= RTOL
