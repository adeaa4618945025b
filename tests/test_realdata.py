"""The real-data pass on the loaders of real training code: batch layouts, sharding, unsized data, the cache key,
global random states and the worker cap."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fakes import FakeExtractor
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    Subset,
    TensorDataset,
    default_collate,
    random_split,
)

from lightning_ganeval import real_images as reference
from lightning_ganeval.images import to_uint8_rgb
from lightning_ganeval.metrics import FID
from lightning_ganeval.pixel_space import PixelSpace
from lightning_ganeval.real_cache import real_cache_key, sample_real_images
from lightning_ganeval.real_images import default_max_workers, iter_real_images
from lightning_ganeval.real_pass import prepare_real_data

# Tests build loaders with more workers than this machine's cores to check the cap; torch warns about them.
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

RTOL = 1e-6  # float32 features of the same images computed in different batch groupings; float64 moments


def _images(n: int = 13, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _reference_stats(images: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> tuple[Any, Any]:
    """Mean and covariance of the fake features computed on all images at once (np.mean / np.cov, float64)."""
    features = FakeExtractor()(to_uint8_rgb(images, value_range).images).pool.double().numpy()
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _assert_matches(stats: Any, images: torch.Tensor) -> None:
    mean, cov = _reference_stats(images)
    assert stats.n == len(images)
    assert np.abs(stats.mean.numpy() - mean).max() <= RTOL * np.abs(mean).max()
    assert np.abs(stats.cov.numpy() - cov).max() <= RTOL * np.abs(cov).max()


def compute_real_stats(real: Any, extractor: Any, value_range: Any = (0, 1), **kwargs: Any) -> Any:
    """The real moments of ``extractor``'s pool layer through the live pass, without the cache."""
    metric = FID()
    return prepare_real_data(real, [(extractor, metric)], space=value_range, cache=False, **kwargs)[metric].stats


def _collect(stream: Any) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = list(stream)
    return torch.cat([images for images, _ in pairs]), torch.cat([indices for _, indices in pairs])


def _rng_states() -> tuple[Any, ...]:
    return random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state()


def _assert_rng_equal(before: tuple[Any, ...], after: tuple[Any, ...]) -> None:
    assert before[0] == after[0], "Python random state changed"
    assert before[1] == after[1], "NumPy global state changed"
    assert torch.equal(before[2], after[2]), "torch global state changed"


class DictDataset(Dataset):
    """Items as dicts, like Hugging Face image datasets after a processor."""

    def __init__(self, images: torch.Tensor, key: str) -> None:
        self.images, self.key = images, key

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {self.key: self.images[i], "label": i, "input_ids": torch.arange(5)}


class Augmented(Dataset):
    """Images plus noise from all three global generators, like random augmentations in a transform."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        noise = torch.rand(1).item() + np.random.rand() + random.random()
        return (self.images[i] + noise / 30).clamp(0, 1)


class Endless(IterableDataset):
    """An infinite stream that counts what it produced."""

    def __init__(self) -> None:
        self.produced = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        while True:
            self.produced += 1
            yield torch.rand(3, 8, 8, generator=g)


# ------------------------------------------------------------------------------------------- batch layouts
def test_tensor_dataset_with_labels_is_read() -> None:
    images, labels = _images(), torch.arange(13)
    loader = DataLoader(TensorDataset(images, labels), batch_size=4, shuffle=True)
    _assert_matches(compute_real_stats(loader, FakeExtractor(), value_range=(0, 1)), images)


def test_torchvision_image_label_tuples() -> None:
    torchvision = pytest.importorskip("torchvision")
    from torchvision.transforms import ToTensor

    dataset = torchvision.datasets.FakeData(size=9, image_size=(3, 8, 8), num_classes=3, transform=ToTensor())
    images = torch.stack([dataset[i][0] for i in range(9)])
    loader = DataLoader(dataset, batch_size=4)
    _assert_matches(compute_real_stats(loader, FakeExtractor(), value_range=(0, 1)), images)


@pytest.mark.parametrize("key", ["image", "pixel_values", "img", "images", "rgb"])
def test_dict_batches_pick_the_image_entry(key: str) -> None:
    images = _images()
    loader = DataLoader(DictDataset(images, key), batch_size=5)
    picked, indices = _collect(iter_real_images(loader))
    assert torch.equal(picked, images)
    assert torch.equal(indices, torch.arange(13))


def test_named_image_key_wins_over_other_tensors_and_non_tensors() -> None:
    images = _images(4)
    masks = torch.ones(4, 1, 8, 8)  # another 4-D float tensor, but not under an image key
    batch = {"image": [f"file{i}.png" for i in range(4)], "pixel_values": images, "mask": masks}
    assert reference._default_image(batch) is images
    assert reference._default_image((images, torch.arange(4), ["a", "b", "c", "d"])) is images
    assert reference._default_image([torch.arange(4), images.to(torch.uint8)]).dtype == torch.uint8


@pytest.mark.parametrize(
    ("batch", "listing"),
    [
        ((_images(2), _images(2)), r"tuple\[Tensor float32 \(2, 3, 8, 8\), Tensor float32 \(2, 3, 8, 8\)\]"),
        ({"image": _images(2), "pixel_values": _images(2)}, r"'image': Tensor float32 \(2, 3, 8, 8\)"),
        ({"rgb": _images(2), "depth": _images(2)}, r"the keys \['rgb', 'depth'\]"),
        ((torch.rand(2, 8, 8), torch.arange(2)), r"no element is.*Tensor float32 \(2, 8, 8\), Tensor int64 \(2,\)"),
        ({"image": ["a.png", "b.png"]}, r"'image': list\[str, str\]"),
        ("not a batch", r"a str is neither"),
    ],
)
def test_ambiguous_or_imageless_batches_are_refused_listing_their_content(batch: Any, listing: str) -> None:
    with pytest.raises(ValueError, match=rf"(?s)Cannot pick the real images.*{listing}.*`real_image_fn=`"):
        reference._default_image(batch)


def test_image_fn_must_return_a_tensor() -> None:
    with pytest.raises(TypeError, match=r"`image_fn` must return .* got list"):
        list(iter_real_images([_images(3)], image_fn=lambda batch: [batch]))


def test_collate_fn_that_drops_items_is_refused() -> None:
    loader = DataLoader(TensorDataset(_images()), batch_size=4, collate_fn=lambda items: default_collate(items[1:]))
    with pytest.raises(ValueError, match=r"expected a batch of 4 images .* but got 3"):
        compute_real_stats(loader, FakeExtractor(), value_range=(0, 1))


def test_datasets_without_auto_batching_are_read_batch_by_batch() -> None:
    images = _images(12)
    batches = TensorDataset(images.view(3, 4, 3, 8, 8))  # each item is a batch of 4
    loader = DataLoader(batches, batch_size=None)
    picked, indices = _collect(iter_real_images(loader, image_fn=lambda item: item[0]))
    assert torch.equal(picked, images)
    assert torch.equal(indices, torch.arange(12))


# ------------------------------------------------------------------------------------------- subsets and sharding
def test_subset_and_random_split_yield_their_items_in_order() -> None:
    images = _images()
    subset = Subset(TensorDataset(images), [7, 2, 11, 0])
    picked, indices = _collect(iter_real_images(DataLoader(subset, batch_size=3, shuffle=True)))
    assert torch.equal(picked, images[[7, 2, 11, 0]])
    assert torch.equal(indices, torch.arange(4))
    train, _ = random_split(TensorDataset(images), [9, 4], generator=torch.Generator().manual_seed(0))
    picked, _ = _collect(iter_real_images(DataLoader(train, batch_size=4)))
    assert torch.equal(picked, images[train.indices])
    _assert_matches(compute_real_stats(DataLoader(train, batch_size=2), FakeExtractor(), value_range=(0, 1)), picked)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("num_real", [None, 10])
def test_simulated_ranks_cover_every_index_exactly_once(world_size: int, num_real: int | None) -> None:
    images = _images()
    dataset = TensorDataset(images)
    # The training sampler (shuffling, padding to a multiple of world_size) must be ignored.
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=0, shuffle=True)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler)
    total = 13 if num_real is None else num_real
    seen = []
    for rank in range(world_size):
        stream = iter_real_images(loader, num_real=num_real, rank=rank, world_size=world_size)
        picked, indices = _collect(stream)
        assert stream.shard_size == len(indices) == len(range(rank, total, world_size))
        assert stream.total == total
        assert torch.equal(picked, images[indices])
        seen.append(indices)
    assert sorted(torch.cat(seen).tolist()) == list(range(total))


@pytest.mark.parametrize("world_size", [2, 3])
def test_simulated_ranks_split_an_iterable_by_batch_position(world_size: int) -> None:
    images = _images()
    batches = [{"image": chunk} for chunk in images.split(3)]  # 3, 3, 3, 3, 1
    seen = []
    for rank in range(world_size):
        stream = iter_real_images(batches, rank=rank, world_size=world_size, num_real=11)
        picked, indices = _collect(stream)
        assert stream.total == 11
        assert torch.equal(picked, images[indices])
        seen.append(indices)
    assert sorted(torch.cat(seen).tolist()) == list(range(11))


# ------------------------------------------------------------------------------------------- unsized data
def test_endless_iterable_without_num_real_is_refused_up_front() -> None:
    endless = Endless()
    start = time.perf_counter()
    for loader in (DataLoader(endless, batch_size=4), endless, (x for x in iter(endless))):
        with pytest.raises(ValueError, match=r"no length and may never end: pass `num_real`"):
            iter_real_images(loader)
        with pytest.raises(ValueError, match=r"pass `num_real`"):
            compute_real_stats(loader, FakeExtractor(), value_range=(0, 1))
    assert time.perf_counter() - start < 5
    assert endless.produced == 0


def test_endless_iterable_with_num_real_stops_reading() -> None:
    endless = Endless()
    stats = compute_real_stats(DataLoader(endless, batch_size=4), FakeExtractor(), value_range=(0, 1), num_real=10)
    assert stats.n == 10
    assert endless.produced == 12  # three batches of 4; no batch is fetched after the 10th sample
    # An IterableDataset given directly is batched like a map-style one.
    stream = iter_real_images(Endless(), num_real=60)
    assert [len(images) for images, _ in stream] == [50, 10]


# ------------------------------------------------------------------------------------------- cache key
def _key(loader: Any, value_range: tuple[float, float] = (0.0, 1.0), image_fn: Any = None) -> str:
    return real_cache_key(loader, space=PixelSpace.from_value_range(*value_range), image_fn=image_fn)


def test_every_change_to_the_images_misses_the_cache() -> None:
    images = _images()
    dataset = TensorDataset(images, torch.arange(13))
    base = _key(DataLoader(dataset, batch_size=4))
    assert base == _key(DataLoader(TensorDataset(images.clone(), torch.arange(13)), batch_size=4, shuffle=True))

    def flipped(items: list[Any]) -> Any:
        batch = default_collate(items)
        return [batch[0].flip(-1), batch[1]]

    class Transformed(TensorDataset):
        def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
            image, label = super().__getitem__(i)
            return image.sqrt(), label

    changed = {
        "collate_fn": _key(DataLoader(dataset, batch_size=4, collate_fn=flipped)),
        "image_fn": _key(DataLoader(dataset, batch_size=4), image_fn=lambda batch: batch[0].flip(-2)),
        "transform": _key(DataLoader(Transformed(images, torch.arange(13)), batch_size=4)),
        "value_range": _key(DataLoader(dataset, batch_size=4), value_range=(-1.0, 1.0)),
        "late image": _key(DataLoader(TensorDataset(torch.cat([images[:1], images[1:].flip(-1)])), batch_size=4)),
    }
    assert base not in changed.values()
    assert len(set(changed.values())) == len(changed)


def test_cache_key_is_stable_with_random_augmentation_and_leaves_global_rng_alone() -> None:
    loader = DataLoader(Augmented(_images()), batch_size=4, num_workers=2)
    before = _rng_states()
    first = _key(loader)
    _assert_rng_equal(before, _rng_states())
    torch.rand(5), np.random.rand(5), random.random()  # a different global state must not matter
    assert _key(loader) == first


def test_sample_refuses_one_shot_iterators() -> None:
    with pytest.raises(TypeError, match="one-shot iterator"):
        sample_real_images(iter([_images()]))
    assert _key([_images()]) == _key([_images()])


# ------------------------------------------------------------------------------------------- random states
def test_real_pass_leaves_global_rng_alone_between_and_after_batches() -> None:
    loader = DataLoader(Augmented(_images()), batch_size=4)
    before = _rng_states()
    batches = []
    for images, _ in iter_real_images(loader):
        _assert_rng_equal(before, _rng_states())  # the caller's code between batches sees the training streams
        batches.append(images)
    _assert_rng_equal(before, _rng_states())
    compute_real_stats(loader, FakeExtractor(), value_range=(0, 1))
    _assert_rng_equal(before, _rng_states())
    # The private streams advance from batch to batch (augmentations differ) and restart with every pass.
    noise = [(b - _images()[i * 4 : i * 4 + len(b)]).flatten()[0].item() for i, b in enumerate(batches)]
    assert len(set(noise)) == len(noise)
    again = [images for images, _ in iter_real_images(loader)]
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


# ------------------------------------------------------------------------------------------- workers
def test_worker_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "_available_cpus", lambda: 4)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    loader = DataLoader(TensorDataset(_images()), batch_size=4, num_workers=16, multiprocessing_context="spawn")
    assert [default_max_workers(), default_max_workers(3), default_max_workers(8)] == [4, 1, 0]
    assert iter_real_images(loader).num_workers == 4
    assert iter_real_images(loader, rank=1, world_size=2).num_workers == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # two machines with one process each
    assert iter_real_images(loader, rank=1, world_size=2).num_workers == 4
    stream = iter_real_images(loader, max_workers=3)
    assert stream.num_workers == 3
    assert stream._source.multiprocessing_context.get_start_method() == "spawn"  # the user's context is reused
    assert iter_real_images(DataLoader(TensorDataset(_images()), num_workers=1)).num_workers == 1  # never raised
    # Capped to the main process: the loader's context, timeout and prefetch settings must not get in the way.
    loader = DataLoader(TensorDataset(_images()), batch_size=4, num_workers=2, timeout=5, prefetch_factor=4)
    picked, _ = _collect(iter_real_images(loader, max_workers=0))
    assert torch.equal(picked, _images())
    with pytest.raises(ValueError, match="`max_workers` must be an integer >= 0"):
        iter_real_images(loader, max_workers=-1)
    with pytest.raises(ValueError, match="`local_world_size` must be a positive integer"):
        default_max_workers(0)


def test_iterable_dataset_loader_is_capped_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "_available_cpus", lambda: 1)
    stream = iter_real_images(DataLoader(Endless(), batch_size=4, num_workers=8), num_real=8)
    assert stream.num_workers == 1
    assert sum(len(images) for images, _ in stream) == 8


def test_workers_give_the_same_images_as_the_main_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "_POOL_START_SECONDS", dict.fromkeys(("fork", "spawn", "forkserver"), 0.0))
    loader = DataLoader(Augmented(_images()), batch_size=4, num_workers=2, multiprocessing_context="fork")
    stream = iter_real_images(loader, max_workers=2)
    picked, indices = _collect(stream)
    assert stream.num_workers == 2
    assert torch.equal(indices, torch.arange(13))
    # Worker seeds derive from the private stream too: the same augmented images in every pass.
    assert torch.equal(picked, _collect(iter_real_images(loader, max_workers=2))[0])
    assert (picked - _images()).abs().max() <= 3 / 30  # the images plus their augmentation noise (< 3/30)


def test_a_shard_cheaper_to_read_than_a_pool_is_read_in_the_main_process() -> None:
    # 16 spawned workers per rank made a real pass take longer than a training epoch; 13 tiny images need none.
    loader = DataLoader(TensorDataset(_images()), batch_size=4, num_workers=16, multiprocessing_context="spawn")
    start = time.perf_counter()
    stream = iter_real_images(loader, max_workers=2)
    assert stream.num_workers == 2
    picked, indices = _collect(stream)
    assert stream.num_workers == 0
    assert time.perf_counter() - start < 2  # starting spawned workers takes seconds
    assert torch.equal(picked, _images())
    assert torch.equal(indices, torch.arange(13))


def test_cache_key_is_rank_independent_under_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    loader = DataLoader(TensorDataset(_images()), batch_size=4)
    alone = _key(loader)
    # Rank 1 of 2: the key reads the same sample as rank 0 (the pass itself checks the ranks).
    with monkeypatch.context() as patch:  # undone before conftest's process-group teardown looks
        patch.setattr(torch.distributed, "is_initialized", lambda: True)
        patch.setattr(torch.distributed, "get_rank", lambda: 1)
        patch.setattr(torch.distributed, "get_world_size", lambda: 2)
        assert _key(loader) == alone
        with pytest.raises(ValueError, match="disagree with the process group"):
            iter_real_images(loader)
