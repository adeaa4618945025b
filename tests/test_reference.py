"""Statistics files (ours and pytorch-fid's), real statistics from loaders, and the disk cache."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import compute_statistics_of_path
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lightning_ganeval.images import to_uint8_rgb
from lightning_ganeval.math import PSD_RTOL, GaussianStats
from lightning_ganeval.moments import chan_merge
from lightning_ganeval.reference import (
    cached_real_stats,
    compute_real_stats,
    dataset_fingerprint,
    extractor_provenance,
    load_stats,
    real_stats_cache_key,
    save_stats,
)

RTOL = 1e-9  # streamed real statistics vs one-shot np.cov on the same features


def _rel(ours: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    ours = ours.numpy() if isinstance(ours, torch.Tensor) else ours
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


class FakeExtractor:
    """A cheap stand-in for Inception: a fixed random projection of the pixels; records what it saw."""

    num_features = 6
    device = torch.device("cpu")

    def __init__(self, identity: str = "fake/v1") -> None:
        self.identity = identity
        self.weights = SimpleNamespace(sha256="ab" * 32)
        self.resize = "tf1"
        self.fast = False
        self.seen: list[torch.Tensor] = []

    def __call__(self, images: torch.Tensor) -> SimpleNamespace:
        assert images.dtype == torch.uint8
        self.seen.append(images.clone())
        flat = images.double().flatten(1)
        projection = torch.randn(flat.shape[1], self.num_features, generator=torch.Generator().manual_seed(0))
        return SimpleNamespace(pool=(flat @ projection.double()) / 255, logits=None)


@pytest.fixture
def stats() -> GaussianStats:
    x = torch.randn(40, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1.0
    return GaussianStats(n=40, mean=x.mean(0), cov=torch.cov(x.T))


@pytest.fixture
def images() -> torch.Tensor:
    """11 float images in [-1, 1], 3 x 8 x 8 (11: odd, so shards are uneven)."""
    return torch.rand(11, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _direct(images: torch.Tensor, extractor: Any) -> np.ndarray:
    return extractor(to_uint8_rgb(images, (-1.0, 1.0)).images).pool.double().numpy()


# ------------------------------------------------------------------------------------------- files
def test_save_load_round_trip(tmp_path: Path, stats: GaussianStats) -> None:
    provenance = {"weights_sha256": "6726825d" + "0" * 56, "resize": "tf1", "layer": "pool3"}
    path = save_stats(tmp_path / "real.npz", stats, provenance)
    loaded, found = load_stats(path)
    assert torch.equal(loaded.mean, stats.mean)
    assert torch.equal(loaded.cov, stats.cov)
    assert loaded.n == 40
    assert found["resize"] == "tf1"
    assert found["num_samples"] == 40
    assert found["num_features"] == 12
    assert "library_version" in found
    assert [p.name for p in tmp_path.iterdir()] == ["real.npz"]  # no temporary file left behind


def test_our_file_loads_like_pytorch_fid_loads_stats(tmp_path: Path, stats: GaussianStats) -> None:
    path = save_stats(tmp_path / "ours", stats, {})  # ".npz" appended, as np.savez does
    assert path.name == "ours.npz"
    mu, sigma = compute_statistics_of_path(str(path), None, 50, 12, "cpu")  # model unused for .npz
    np.testing.assert_array_equal(mu, stats.mean.numpy())
    np.testing.assert_array_equal(sigma, stats.cov.numpy())
    with np.load(path) as plain:  # a plain np.load, pickle disabled by default, reads everything
        assert json.loads(str(plain["provenance"]))["num_samples"] == 40


def test_pytorch_fid_file_loads_with_unknown_n(tmp_path: Path, stats: GaussianStats) -> None:
    path = tmp_path / "pytorch_fid.npz"
    np.savez_compressed(path, mu=stats.mean.numpy().astype(np.float32), sigma=stats.cov.numpy())
    loaded, provenance = load_stats(path)
    assert loaded.n is None
    assert provenance == {}
    assert loaded.mean.dtype == torch.float64
    with pytest.warns(UserWarning, match="no provenance"):
        load_stats(path, expect={"resize": "tf1"})


def test_our_file_saved_without_provenance_warns_when_checks_are_asked_for(
    tmp_path: Path, stats: GaussianStats
) -> None:
    # Only the automatic entries (format_version, library_version, num_samples, num_features) are stored, so none
    # of the expected keys can be checked. Before: loaded silently.
    path = save_stats(tmp_path / "bare.npz", stats, {})
    with pytest.warns(UserWarning, match=r"bare\.npz.*no provenance entry for any of \['resize', 'weights_sha256'\]"):
        loaded, _ = load_stats(path, expect={"weights_sha256": "ab" * 32, "resize": "tf1"})
    assert torch.equal(loaded.cov, stats.cov)


def _spectrum(d: int, eigenvalues: np.ndarray, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    sigma = (q * eigenvalues) @ q.T
    return (sigma + sigma.T) / 2


@pytest.mark.parametrize("smallest", [-1.0, -1e-3, -PSD_RTOL * 10])
def test_sigma_that_is_not_psd_is_refused(tmp_path: Path, smallest: float) -> None:
    # Symmetric, finite, right shape, but an eigenvalue below -PSD_RTOL x the largest (here 2.0). Before: loaded.
    eigenvalues = np.linspace(0.5, 2.0, 8)
    eigenvalues[0] = smallest * 2.0
    path = _write(tmp_path / "indefinite.npz", mu=np.zeros(8), sigma=_spectrum(8, eigenvalues))
    with pytest.raises(ValueError, match=r"indefinite\.npz.*'sigma' is not positive semi-definite"):
        load_stats(path)


def test_rounding_size_negative_eigenvalues_load(tmp_path: Path) -> None:
    # A singular covariance (50 samples, d = 256) stored in float32: its zero eigenvalues become about -1e-8 x the
    # largest, far inside PSD_RTOL; and an eigenvalue at -PSD_RTOL / 10 x the largest is accepted too.
    rng = np.random.default_rng(1)
    features = np.abs(rng.standard_normal((50, 256)) @ rng.standard_normal((256, 256)))
    sigma32 = np.cov(features, rowvar=False).astype(np.float32)
    assert np.linalg.eigvalsh(sigma32.astype(np.float64)).min() < 0  # the case worth testing
    load_stats(_write(tmp_path / "float32.npz", mu=features.mean(0).astype(np.float32), sigma=sigma32))
    eigenvalues = np.linspace(0.5, 2.0, 8)
    eigenvalues[0] = -PSD_RTOL / 10 * 2.0
    loaded, _ = load_stats(_write(tmp_path / "rounding.npz", mu=np.zeros(8), sigma=_spectrum(8, eigenvalues)))
    assert loaded.num_features == 8


def test_overwrite_is_atomic_replacement(tmp_path: Path, stats: GaussianStats) -> None:
    path = save_stats(tmp_path / "s.npz", stats, {"tag": 1})
    save_stats(path, stats, {"tag": 2})
    assert load_stats(path)[1]["tag"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def _write(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"mu": np.zeros((3, 1)), "sigma": np.eye(3)}, r"'mu' must have shape \(d,\)"),
        ({"mu": np.zeros(3), "sigma": np.eye(4)}, r"'sigma' must have shape \(3, 3\)"),
        ({"mu": np.zeros(2), "sigma": np.array([[1.0, 0.5], [0.0, 1.0]])}, "not symmetric"),
        ({"mu": np.array([0.0, np.nan]), "sigma": np.eye(2)}, "'mu' contains NaN"),
        ({"mu": np.zeros(2), "sigma": np.full((2, 2), np.inf)}, "'sigma' contains NaN or Inf"),
        ({"mu": np.zeros(2)}, r"missing key\(s\) \['sigma'\]"),
        ({"m": np.zeros(2), "s": np.eye(2)}, r"missing key\(s\) \['mu', 'sigma'\]"),
        ({"mu": np.zeros(2, dtype=np.int64), "sigma": np.eye(2)}, "'mu' has dtype int64"),
        ({"mu": np.zeros(2), "sigma": np.eye(2), "provenance": np.asarray("{not json")}, "not a JSON object"),
    ],
)
def test_malformed_files_are_refused_naming_the_file(tmp_path: Path, arrays: dict[str, Any], match: str) -> None:
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match) as info:
        load_stats(path)
    assert "bad.npz" in str(info.value)


def test_non_npz_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match=r"garbage\.npz.*cannot be read"):
        load_stats(garbage)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match=r"single \.npy array"):
        load_stats(single)
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        load_stats(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    ("key", "stored", "expected"),
    [("weights_sha256", "ab" * 32, "cd" * 32), ("resize", "antialias", "tf1"), ("extractor", "x/1", "x/2")],
)
def test_wrong_provenance_is_refused_naming_both_values(
    tmp_path: Path, stats: GaussianStats, key: str, stored: str, expected: str
) -> None:
    path = save_stats(tmp_path / "s.npz", stats, {key: stored})
    with pytest.raises(ValueError, match=rf"{key}='{stored}'.*{key}='{expected}'"):
        load_stats(path, expect={key: expected})


def test_matching_provenance_and_digest_prefix_are_accepted(tmp_path: Path, stats: GaussianStats) -> None:
    full = "6726825d" + "1" * 56
    path = save_stats(tmp_path / "s.npz", stats, {"weights_sha256": full, "resize": "tf1"})
    loaded, _ = load_stats(path, expect={"weights_sha256": "6726825D", "resize": "tf1", "value_range": (-1, 1)})
    assert loaded.n == 40


def test_pool3_expectation_requires_2048_features(tmp_path: Path, stats: GaussianStats) -> None:
    path = save_stats(tmp_path / "s.npz", stats, {"layer": "pool3"})
    with pytest.raises(ValueError, match="d=12 features, but pool3"):
        load_stats(path, expect={"layer": "pool3"})


def test_extractor_provenance_lists_what_changes_features() -> None:
    provenance = extractor_provenance(FakeExtractor("fake/v9"))
    assert provenance == {
        "extractor": "fake/v9",
        "weights_sha256": "ab" * 32,
        "resize": "tf1",
        "fast": False,
        "layer": "pool3",
    }


# ------------------------------------------------------------------------------------------- compute_real_stats
@pytest.mark.slow
def test_real_stats_with_inception_match_direct_extraction(extractor: Any) -> None:
    images = torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    loader = DataLoader(TensorDataset(images, torch.zeros(10)), batch_size=4)
    stats = compute_real_stats(loader, extractor)
    # Same batches as the loader, so the float32 features are bit-identical.
    features = np.concatenate([_direct(chunk, extractor) for chunk in images.split(4)])
    assert stats.n == 10
    assert _rel(stats.mean, features.mean(axis=0)) <= RTOL
    assert _rel(stats.cov, np.cov(features, rowvar=False)) <= RTOL


@pytest.mark.parametrize("batch_size", [3, 11])
def test_real_stats_match_np_cov(images: torch.Tensor, batch_size: int) -> None:
    extractor = FakeExtractor()
    loader = DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=True)
    stats = compute_real_stats(loader, extractor)
    features = _direct(images, FakeExtractor())
    assert stats.n == 11
    assert _rel(stats.cov, np.cov(features, rowvar=False)) <= RTOL


def test_simulated_two_rank_split_counts_every_sample_once(images: torch.Tensor) -> None:
    # A DistributedSampler would pad 11 samples to 12 (a duplicate); the reshard must ignore it.
    dataset = TensorDataset(images)
    loader = DataLoader(dataset, batch_size=2, sampler=DistributedSampler(dataset, num_replicas=2, rank=0))
    shards = []
    extractors = []
    for rank in (0, 1):
        extractor = FakeExtractor()
        with pytest.warns(UserWarning, match="without an initialised process group"):
            shards.append(compute_real_stats(loader, extractor, rank=rank, world_size=2))
        extractors.append(extractor)
    assert [s.n for s in shards] == [6, 5]
    seen = torch.cat([torch.cat(e.seen) for e in extractors])
    expected = to_uint8_rgb(images).images
    assert len(seen) == 11
    assert len({bytes(img.numpy()) for img in seen}) == 11  # no duplicates
    assert {bytes(img.numpy()) for img in seen} == {bytes(img.numpy()) for img in expected}
    # Merging the two shards' moments gives the single-process statistics.
    packed = [torch.cat([torch.tensor([float(s.n)]), s.mean, (s.cov * (s.n - 1)).flatten()]) for s in shards]
    merged = chan_merge(torch.stack(packed))
    whole = compute_real_stats(loader, FakeExtractor())
    assert merged[0].item() == 11
    assert _rel(merged[7:].view(6, 6) / 10, whole.cov.numpy()) <= RTOL


def test_num_real_limits_the_map_style_dataset(images: torch.Tensor) -> None:
    extractor = FakeExtractor()
    stats = compute_real_stats(DataLoader(TensorDataset(images), batch_size=4), extractor, num_real=7)
    assert stats.n == 7
    features = _direct(images[:7], FakeExtractor())
    assert _rel(stats.cov, np.cov(features, rowvar=False)) <= RTOL
    with pytest.warns(UserWarning, match="exceeds the dataset size 11"):
        assert compute_real_stats(TensorDataset(images), FakeExtractor(), num_real=50).n == 11


def test_iterable_of_batches_sharded_by_batch_position(images: torch.Tensor) -> None:
    batches = [{"image": chunk} for chunk in images.split(3)]  # sizes 3, 3, 3, 2
    counts = []
    for rank in (0, 1):
        with pytest.warns(UserWarning, match="this rank's shard only"):
            counts.append(compute_real_stats(iter(batches), FakeExtractor(), rank=rank, world_size=2, num_real=8).n)
    assert counts == [3 + 2, 3]  # batches 0 and 2 (the latter cut to 2 by num_real), and batch 1
    whole = compute_real_stats(batches, FakeExtractor(), num_real=8)
    assert whole.n == 8
    assert _rel(whole.cov, np.cov(_direct(images[:8], FakeExtractor()), rowvar=False)) <= RTOL


def test_image_fn_and_default_batch_layouts(images: torch.Tensor) -> None:
    reference = compute_real_stats([images], FakeExtractor())
    as_tuples = compute_real_stats([(images, torch.zeros(11))], FakeExtractor())
    custom = compute_real_stats([{"pixels": images}], FakeExtractor(), image_fn=lambda batch: batch["pixels"])
    assert torch.equal(as_tuples.cov, reference.cov)
    assert torch.equal(custom.cov, reference.cov)
    with pytest.raises(ValueError, match=r"Cannot pick the real images.*real_image_fn"):
        compute_real_stats([{"pixels": images, "target": images}], FakeExtractor())


def test_progress_reports_this_ranks_counts(images: torch.Tensor) -> None:
    calls: list[tuple[int, int | None]] = []
    compute_real_stats(
        DataLoader(TensorDataset(images), batch_size=4), FakeExtractor(), progress=lambda *a: calls.append(a)
    )
    assert calls == [(4, 11), (8, 11), (11, 11)]


def test_nonfinite_real_images_and_bad_arguments_are_refused(images: torch.Tensor) -> None:
    broken = images.clone()
    broken[3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 real image"):
        compute_real_stats([broken], FakeExtractor())
    with pytest.raises(ValueError, match=r"`rank` must be an integer in \[0, 2\)"):
        compute_real_stats([images], FakeExtractor(), rank=2, world_size=2)
    with pytest.raises(ValueError, match="`num_real` must be an integer >= 2"):
        compute_real_stats([images], FakeExtractor(), num_real=1)


# ------------------------------------------------------------------------------------------- cache
def test_cache_key_changes_with_every_input(images: torch.Tensor) -> None:
    dataset = TensorDataset(images)
    base = real_stats_cache_key(dataset, 11, (-1, 1), FakeExtractor("fake/v1"))
    assert base.startswith("real-")
    assert base == real_stats_cache_key(TensorDataset(images.clone()), 11, (-1.0, 1.0), "fake/v1")
    changed = [
        real_stats_cache_key(dataset, 11, (0, 1), "fake/v1"),
        real_stats_cache_key(dataset, 10, (-1, 1), "fake/v1"),
        real_stats_cache_key(dataset, 11, (-1, 1), "fake/v2"),
        real_stats_cache_key(TensorDataset(images + 1e-3), 11, (-1, 1), "fake/v1"),
        real_stats_cache_key("cifar10-train", 11, (-1, 1), "fake/v1"),
        real_stats_cache_key(dataset, 11, (-1, 1), "fake/v1", image_fn="first"),
    ]
    assert len({base, *changed}) == 1 + len(changed)


def test_dataset_fingerprint_needs_a_map_style_dataset(images: torch.Tensor) -> None:
    assert "TensorDataset/len=11/" in dataset_fingerprint(DataLoader(TensorDataset(images)))
    with pytest.raises(TypeError, match="pass a string"):
        real_stats_cache_key(iter([images]), 11, (-1, 1), "fake/v1")


def test_second_call_loads_the_cache_instead_of_recomputing(tmp_path: Path, stats: GaussianStats) -> None:
    calls = []
    barriers = []

    def compute() -> GaussianStats:
        calls.append(1)
        return stats

    first = cached_real_stats(tmp_path, "real-abc", compute, barrier=lambda: barriers.append(1))
    second = cached_real_stats(tmp_path, "real-abc", compute, barrier=lambda: barriers.append(1))
    assert len(calls) == 1
    assert barriers == [1]  # only the computing call needs to wait for the writer
    assert torch.equal(second.cov, first.cov)
    assert second.n == 40
    assert load_stats(tmp_path / "real-abc.npz")[1]["cache_key"] == "real-abc"
    cached_real_stats(tmp_path, "real-other", compute)
    assert len(calls) == 2


def test_only_rank_zero_writes_and_a_stale_or_broken_file_is_recomputed(tmp_path: Path, stats: GaussianStats) -> None:
    calls = []

    def compute() -> GaussianStats:
        calls.append(1)
        return stats

    cached_real_stats(tmp_path, "real-k", compute, rank=1)
    assert not (tmp_path / "real-k.npz").exists()
    explicit = tmp_path / "fixed.npz"
    save_stats(explicit, stats, {"cache_key": "real-old"})
    with pytest.warns(UserWarning, match="made for key 'real-old'"):
        cached_real_stats(explicit, "real-new", compute)
    assert load_stats(explicit)[1]["cache_key"] == "real-new"
    (tmp_path / "real-broken.npz").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="Ignoring unusable cached statistics"):
        cached_real_stats(tmp_path, "real-broken", compute)
    assert len(calls) == 3


def test_broadcast_shares_rank_zeros_decision(tmp_path: Path, stats: GaussianStats) -> None:
    calls = []
    save_stats(tmp_path / "real-k.npz", stats, {"cache_key": "real-k"})
    # Rank 0 reports a miss (say, its file system lacks the file): this rank must compute too.
    result = cached_real_stats(
        tmp_path, "real-k", lambda: calls.append(1) or stats, rank=1, broadcast=lambda hit: False
    )
    assert calls == [1]
    assert result is stats
