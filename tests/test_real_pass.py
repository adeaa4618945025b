"""The live real pass (`real_pass.py`) without a Trainer: the whole-dataset cache key, hit and miss, verified cache
entries, the uniform real rows of KID / precision-recall, sharding, rank 0's write and broadcast, the inferred
pixel space. Each test runs in well under a second on a fake network."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fakes import FakeExtractor
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, TensorDataset

from lightning_ganeval import real_cache
from lightning_ganeval import real_pass as real_module
from lightning_ganeval.images import to_uint8_rgb
from lightning_ganeval.metrics import FID, KID, PrecisionRecall
from lightning_ganeval.real_cache import SAMPLE_SIZE, sample_indices, sample_real_images
from lightning_ganeval.real_pass import prepare_real_data, select_real_rows
from lightning_ganeval.stats_files import load_stats


class Images(Dataset):
    """Images with a transform, like a torchvision dataset; counts the items read."""

    def __init__(self, images: torch.Tensor, transform: Any = None) -> None:
        self.images, self.transform = images, transform
        self.reads = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        self.reads += 1
        image = self.images[i]
        return image if self.transform is None else self.transform(image)


class PixelMean(nn.Module):
    """A one-layer feature network whose first feature is the image's mean pixel: it tells the classes apart."""

    identity = "pixel-mean/v1"
    num_features = 2

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        mean = images.float().mean(dim=(1, 2, 3))
        return torch.stack([mean, torch.zeros_like(mean)], dim=1)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _class_sorted(classes: int = 10, per_class: int = 100) -> TensorDataset:
    """Images of class c hold the value c / classes everywhere, sorted by class (ImageFolder order)."""
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = (labels.float() / classes).view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()
    return TensorDataset(images, labels)


def _fid(real: Any, network: nn.Module, **kwargs: Any) -> Any:
    metric = FID()
    return prepare_real_data(real, [(network, metric)], **{"space": (0, 1), **kwargs})[metric]


# ------------------------------------------------------------------------------------------- 13.1: cache key
def test_fixing_the_transform_of_the_last_part_misses_the_cache(tmp_path: Path) -> None:
    # ConcatDataset([A, B]) with a channel-order bug in B's transform only (BGR read as RGB); B starts after the
    # first batches, which were all the old key looked at.
    a, b = _images(300, seed=1), _images(300, seed=2)

    def buggy(image: torch.Tensor) -> torch.Tensor:
        return image.flip(0)

    def fixed(image: torch.Tensor) -> torch.Tensor:
        return image

    network = FakeExtractor()
    before = _fid(DataLoader(ConcatDataset([Images(a), Images(b, buggy)]), batch_size=50), network, cache_dir=tmp_path)
    calls = network.calls
    after = _fid(DataLoader(ConcatDataset([Images(a), Images(b, fixed)]), batch_size=50), network, cache_dir=tmp_path)
    assert network.calls > calls  # the fixed data were read again, not taken from the cache
    assert not torch.equal(before.stats.mean, after.stats.mean)
    again = _fid(DataLoader(ConcatDataset([Images(a), Images(b, fixed)]), batch_size=50), network, cache_dir=tmp_path)
    assert network.calls == 2 * calls  # unchanged data hit the cache
    assert torch.equal(again.stats.cov, after.stats.cov)


def test_a_changed_image_anywhere_in_the_index_range_is_sampled() -> None:
    # One stratum per 1/64 of the range: a change to a contiguous run longer than that is always seen.
    size = 50_000
    picks = sample_indices(size)
    assert len(picks) == SAMPLE_SIZE
    assert picks == sorted(set(picks))
    edges = np.linspace(0, size, SAMPLE_SIZE + 1).astype(int)
    assert all(lo <= p < hi for p, lo, hi in zip(picks, edges[:-1], edges[1:], strict=True))
    assert sample_indices(size) == picks  # seeded: the same positions in every run
    # Every part of a ConcatDataset is looked at, even one smaller than a stratum.
    with_parts = sample_indices(size, boundaries=[49_990, 50_000])
    assert {0, 49_989, 49_990, 49_999} <= set(with_parts)
    assert sample_indices(10) == list(range(10))


def test_the_key_of_a_large_dataset_reads_only_the_sample() -> None:
    dataset = Images(torch.zeros(50_000, 3, 1, 1, dtype=torch.uint8).expand(-1, 3, 8, 8))
    sample = sample_real_images(DataLoader(dataset, batch_size=50))
    assert dataset.reads == SAMPLE_SIZE
    assert sample.spread
    assert sample.description == "64 real images at seeded positions spread over all 50000"


def test_unsized_data_are_digested_in_full_and_one_shot_iterators_are_not_cached(tmp_path: Path) -> None:
    network = FakeExtractor()
    batches = [_images(4, seed=i) for i in range(6)]
    _fid(batches, network, cache_dir=tmp_path)
    first = network.calls
    changed = [*batches[:-1], batches[-1].flip(-1)]  # only the last batch differs
    _fid(changed, network, cache_dir=tmp_path)
    assert network.calls == 2 * first
    _fid(changed, network, cache_dir=tmp_path)
    assert network.calls == 2 * first  # hit
    with pytest.warns(UserWarning, match="one-shot iterator .* not cached"):
        data = _fid(iter(batches), network, cache_dir=tmp_path, num_real=24)
    assert data.num_images == 24
    assert len(list(tmp_path.iterdir())) == 2  # nothing written for the iterator


# ------------------------------------------------------------------------------------------- 13.2: real rows
def test_kid_and_pr_rows_are_a_uniform_sample_of_a_class_sorted_dataset() -> None:
    network = PixelMean()
    kid, pr = (
        KID(feature_extractor=network, subset_size=50, max_real=100),
        PrecisionRecall(feature_extractor=network, max_real=60),
    )
    data = prepare_real_data(
        DataLoader(_class_sorted(), batch_size=32), [(network, kid), (network, pr)], space=(0, 1), cache=False
    )
    for metric, rows in ((kid, 100), (pr, 60)):
        features = data[metric].features
        assert features.shape == (rows, 2)
        classes = torch.round(features[:, 0] / 255 * 10).long()  # pixel means of class c: round(255 c / 10)
        # The first `max_real` rows in loader order were of class 0 only; a uniform sample of 1000 rows with 10
        # classes of 100 misses a class with probability < 10 x 0.9^60 = 0.02 (fixed seed: it never changes).
        assert set(classes.tolist()) == set(range(10))
        # Each row says which image it is (e.g. to show the nearest training images).
        assert torch.equal(classes, _class_sorted().tensors[1][data[metric].indices])
    assert data[kid].describe_rows() == "100 real rows, a seeded uniform sample of 1000 real images"
    assert data[pr].num_images == 1000
    # One selection serves both: the PR rows are the first KID rows (a prefix of a uniform sample is one too).
    assert torch.equal(data[pr].features, data[kid].features[:60])


def test_selected_rows_do_not_depend_on_the_order_or_the_split_they_arrive_in() -> None:
    indices = torch.arange(1000)
    chosen = indices[select_real_rows(indices, 50)]
    shuffled = indices[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    assert torch.equal(shuffled[select_real_rows(shuffled, 50)], chosen)
    # Two ranks each keeping their own best 50 and merging: the same 50 (the world-size independence of the pass).
    parts = [indices[0::2], indices[1::2]]
    kept = torch.cat([p[select_real_rows(p, 50)] for p in parts])
    assert torch.equal(kept[select_real_rows(kept, 50)], chosen)
    assert torch.equal(indices[select_real_rows(indices, 20)], chosen[:20])
    assert chosen.float().mean().item() == pytest.approx(500, abs=120)  # spread, not the first 50


# ------------------------------------------------------------------------------------------- 13.3: verified entries
def _kid_rows(tmp_path: Path, network: nn.Module) -> Any:
    kid = KID(subset_size=4, max_real=16)
    return prepare_real_data(DataLoader(TensorDataset(_images(20)), batch_size=8), [(network, kid)], space=(0, 1),
                             cache_dir=tmp_path)[kid]  # fmt: skip


def _rewrite_features(path: Path, features: np.ndarray, *, fix_record: bool) -> None:
    with np.load(path) as data:
        record = json.loads(str(data["record"]))
        indices = np.asarray(data["indices"])[: len(features)]
    if fix_record:  # a consistent record: only the expectations of the pass can tell
        record.update(shape=list(features.shape), sha256=real_cache._array_checksum(features))
        record.update(indices_sha256=real_cache._array_checksum(indices))
    np.savez(path, features=features, indices=indices, record=np.asarray(json.dumps(record)))


@pytest.mark.parametrize(
    ("change", "fix_record", "problem"),
    [
        (lambda f: f + 1.0, False, "checksum does not match"),  # another valid array
        (lambda f: f[:, :3].copy(), True, "width 3, but the network gives 16"),
        (lambda f: f[:10].copy(), True, "holds 10 rows, but 16 are expected"),
    ],
)
def test_a_changed_features_entry_is_recomputed_with_a_warning(
    tmp_path: Path, change: Any, fix_record: bool, problem: str
) -> None:
    network = FakeExtractor()
    first = _kid_rows(tmp_path, network)
    (path,) = tmp_path.glob("real-*.features.npz")
    assert path.stat().st_mode & 0o777 == 0o644  # readable to a group sharing the cache
    with np.load(path) as data:
        record = json.loads(str(data["record"]))
        assert record["shape"] == [16, 16]
        assert record["count"] == 20
        assert record["dtype"] == "float32"
        _rewrite_features(path, change(np.asarray(data["features"])), fix_record=fix_record)
    calls = network.calls
    with pytest.warns(UserWarning, match=rf"Ignoring the cached real data .*{problem}.* Recomputing it"):
        again = _kid_rows(tmp_path, network)
    assert network.calls > calls
    assert torch.equal(again.features, first.features)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten entry is good again: no warning, no pass
        _kid_rows(tmp_path, network)
    assert network.calls == 2 * calls


def test_a_changed_moments_entry_is_recomputed_with_a_warning(tmp_path: Path) -> None:
    network = FakeExtractor()
    loader = DataLoader(TensorDataset(_images(20)), batch_size=8)
    first = _fid(loader, network, cache_dir=tmp_path)
    (path,) = tmp_path.glob("real-*.npz")
    _stats, provenance = load_stats(path)
    assert provenance["count"] == 20
    assert provenance["cache_key"] == path.stem
    assert len(provenance["checksum"]) == 64
    with np.load(path) as data:
        arrays = dict(data)
    arrays["mu"] = arrays["mu"] + 1.0
    np.savez(path, **arrays)
    with pytest.warns(UserWarning, match="checksum does not match"):
        again = _fid(loader, network, cache_dir=tmp_path)
    assert torch.equal(again.stats.mean, first.stats.mean)


# ------------------------------------------------------------------------------------------- 13.10: pixel space
def test_the_pixel_space_is_inferred_from_images_spread_over_the_dataset() -> None:
    # Class-sorted: the first 500 images lie in [0, 1], the last 500 in [-1, 1]. The first batches said [0, 1].
    images = torch.cat([_images(500), _images(500, seed=1) * 2 - 1])
    network = FakeExtractor()
    data = prepare_real_data(DataLoader(TensorDataset(images), batch_size=50), [(network, FID())], cache=False)
    assert next(iter(data.values())).stats.n == 1000  # no range error: read as [-1, 1]


def test_real_images_outside_an_inferred_space_say_so_and_advise_value_range() -> None:
    # Only one image (not in the spread sample) leaves [0, 1]: the inferred space is wrong and the error must not
    # blame a declaration nobody made, nor advise `real_value_range=` (which leaves the generated side as it is).
    images = _images(1000)
    outside = next(i for i in range(1000) if i not in set(sample_indices(1000)))
    images[outside] = images[outside] * 2 - 1
    with pytest.raises(ValueError, match="outside") as caught:
        prepare_real_data(DataLoader(TensorDataset(images), batch_size=50), [(FakeExtractor(), FID())], cache=False)
    message = str(caught.value)
    assert "inferred (not declared) from observed range [0.000, 1.000] of 64 real images at seeded positions" in message
    assert "pass value_range=(-1.0, 1.0) (it declares the space of both the real and the generated images)" in message
    assert "real_value_range" not in message


# ------------------------------------------------------------------------------------------- 14.1: the live path
def test_cache_hit_miss_and_count(tmp_path: Path) -> None:
    network = FakeExtractor()
    loader = DataLoader(TensorDataset(_images(20)), batch_size=8, shuffle=True)
    first = _fid(loader, network, cache_dir=tmp_path)
    calls = network.calls
    assert calls == 3
    hit = _fid(loader, network, cache_dir=tmp_path)
    assert network.calls == calls
    assert torch.equal(hit.stats.cov, first.stats.cov)
    assert hit.num_images == 20
    _fid(loader, network, cache_dir=tmp_path, num_real=12)  # another count: another entry
    _fid(loader, network, cache_dir=tmp_path, space=(-1, 1))  # another space: another entry
    _fid(loader, network, cache_dir=tmp_path, cache=False)  # no cache: always computed, nothing written
    assert network.calls == calls + 2 + 3 + 3
    assert len(list(tmp_path.glob("real-*.npz"))) == 3


def _as_rank(monkeypatch: pytest.MonkeyPatch, rank: int, broadcasts: list[Any], rank_zero_found: Any = None) -> None:
    """Rank ``rank`` of 2 without a process group: collectives are recorded; rank 0's lookup is ``rank_zero_found``."""
    monkeypatch.setattr(real_module, "rank_and_world_size", lambda: (rank, 2))
    monkeypatch.setattr(real_module, "barrier", lambda world_size: broadcasts.append("barrier"))

    def broadcast(value: Any, world_size: int) -> Any:
        broadcasts.append(value)
        return value if rank == 0 or rank_zero_found is None else rank_zero_found

    def agree(error: BaseException | None, **kwargs: Any) -> None:
        broadcasts.append("agree")
        if error is not None:
            raise error

    monkeypatch.setattr(real_module, "broadcast_object", broadcast)
    monkeypatch.setattr(real_module, "agree", agree)


def test_rank_one_reads_its_shard_and_neither_reads_nor_writes_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = _images(11)
    _fid(DataLoader(TensorDataset(images), batch_size=4), FakeExtractor(), cache_dir=tmp_path)  # a cached entry
    (cached,) = tmp_path.iterdir()
    broadcasts: list[Any] = []
    # Rank 0 found nothing (say, its file system lacks the file): rank 1 computes too, whatever it could read.
    _as_rank(monkeypatch, 1, broadcasts, rank_zero_found=[None])
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    seen: list[torch.Tensor] = []
    network = FakeExtractor()
    original = network.forward
    network.forward = lambda x: seen.append(x) or original(x)  # type: ignore[method-assign]
    before = cached.stat().st_mtime_ns
    data = _fid(DataLoader(TensorDataset(images), batch_size=4), network, cache_dir=tmp_path)
    assert broadcasts[0] == [None]  # rank 1 did not look: its lookup result is a placeholder for rank 0's
    assert broadcasts[-1] == "barrier"  # rank 0 writes, every rank waits
    assert list(tmp_path.iterdir()) == [cached]
    assert cached.stat().st_mtime_ns == before
    # Rank 1's shard: dataset items 1, 3, 5, 7, 9 (no sampler padding); moments of its own rows before the merge.
    assert torch.equal(torch.cat(seen), to_uint8_rgb(images[1::2], (0, 1)).images)
    assert data.stats.n == 5


def test_rank_zero_writes_on_a_miss_and_broadcasts_a_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loader = DataLoader(TensorDataset(_images(11)), batch_size=4)
    network = FakeExtractor()
    whole = _fid(loader, network, cache_dir=tmp_path / "hit")  # an entry of the whole data, as a merge writes it
    broadcasts: list[Any] = []
    _as_rank(monkeypatch, 0, broadcasts)
    _fid(loader, network, cache_dir=tmp_path / "miss")
    assert broadcasts == [
        [None],
        "agree",
        "barrier",
    ]  # the miss is shared; the pass agrees; every rank waits for the write
    assert len(list((tmp_path / "miss").iterdir())) == 1
    broadcasts.clear()
    calls = network.calls
    hit = _fid(loader, network, cache_dir=tmp_path / "hit")
    assert network.calls == calls  # rank 0 found the entry and hands it to the others: no pass, no barrier
    ((stats, count, _),) = broadcasts[0]
    assert len(broadcasts) == 1
    assert count == 11
    assert torch.equal(stats.cov, whole.stats.cov)
    assert torch.equal(hit.stats.cov, whole.stats.cov)
