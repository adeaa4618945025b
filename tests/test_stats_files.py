"""Statistics files (ours and pytorch-fid's) and the atomic write under every cache file."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import compute_statistics_of_path

from lightning_ganeval.frechet import PSD_RTOL, GaussianStats
from lightning_ganeval.stats_files import atomic_write, extractor_provenance, load_stats, save_stats

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


def test_atomic_write_gives_a_group_readable_file_and_cleans_up_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "entry.bin"
    with atomic_write(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"
    # mkstemp's 0600 made a cache shared by a group unreadable to the others (exact mode bits, umask-independent).
    assert target.stat().st_mode & 0o777 == 0o644

    def interrupted() -> None:
        with atomic_write(target) as handle:
            handle.write(b"half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        interrupted()
    assert target.read_bytes() == b"new"  # the old file stays whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["entry.bin"]  # no temporary file left behind


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
