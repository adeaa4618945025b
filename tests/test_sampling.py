"""Latent bank, rank shards, world-size invariance of the merged statistics, and generator state restoration."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from lightning_ganeval.accumulators import FIDMoments, ISMarginals
from lightning_ganeval.frechet import FrechetReference
from lightning_ganeval.sampling import (
    LatentBank,
    check_generated,
    isolated_rng,
    normalize_latent_shape,
    preserved_module_state,
    seed_batch_noise,
)

# ------------------------------------------------------------------------------------------------ the bank


def test_bank_is_seeded_and_leaves_global_rng_alone() -> None:
    before = torch.get_rng_state()
    a = LatentBank(20, 4, seed=3).latents()
    b = LatentBank(20, 4, seed=3).latents()
    c = LatentBank(20, 4, seed=4).latents()
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == (20, 4)
    assert a.dtype == torch.float32


def test_bank_does_not_depend_on_batch_size_or_shape_form() -> None:
    reference = LatentBank(2500, (2, 3), seed=0, batch_size=64).latents()
    for batch_size in (1, 7, 2500):
        assert torch.equal(LatentBank(2500, [2, 3], seed=0, batch_size=batch_size).latents(), reference)
    # The first draw is what a plain seeded generator gives: the bank is not secretly rank- or batch-dependent.
    expected = torch.randn((1024, 2, 3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(reference[:1024], expected)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize(("num_samples", "batch_size"), [(16, 4), (17, 4), (10, 3), (5, 8), (2100, 500)])
def test_shards_partition_the_bank_into_the_same_global_batches(
    world_size: int, num_samples: int, batch_size: int
) -> None:
    full = LatentBank(num_samples, 3, seed=1, batch_size=batch_size)
    whole = full.latents()
    single = {b.batch_id: b.indices.tolist() for b in full.shard(0, 1)}
    seen: list[int] = []
    for rank in range(world_size):
        bank = LatentBank(num_samples, 3, seed=1, batch_size=batch_size)  # fresh, as in another process
        for batch in bank.shard(rank, world_size):
            assert batch.batch_id % world_size == rank
            # Exactly the batch a single process evaluates: same samples, same batch composition.
            assert batch.indices.tolist() == single[batch.batch_id]
            assert torch.equal(batch.latents, whole[batch.indices])
            seen.extend(batch.indices.tolist())
    assert sorted(seen) == list(range(num_samples))  # disjoint and complete


def test_shard_is_cached_and_not_pickled() -> None:
    import pickle

    bank = LatentBank(8, 2, batch_size=4)
    assert bank.shard(0, 2) is bank.shard(0, 2)
    clone = pickle.loads(pickle.dumps(bank))
    assert clone._shards == {}
    assert torch.equal(clone.latents(), bank.latents())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_samples": 0}, ValueError, "`num_samples` must be a positive int, got 0"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be a positive int, got 0"),
        ({"seed": -1}, ValueError, "`seed` must be a non-negative int, got -1"),
        ({"latent_shape": (4, 0)}, ValueError, r"`latent_shape` must have dimensions >= 1, got \(4, 0\)"),
        ({"latent_shape": "64"}, TypeError, "`latent_shape` must be an int or a tuple of ints, got '64'"),
        ({"latent_shape": (4.0,)}, TypeError, r"`latent_shape` must be an int or a non-empty tuple"),
        ({"latent_shape": ()}, TypeError, r"`latent_shape` must be an int or a non-empty tuple"),
    ],
)
def test_bank_argument_errors(kwargs: dict, error: type[Exception], match: str) -> None:
    arguments = {"num_samples": 4, "latent_shape": 2, **kwargs}
    with pytest.raises(error, match=match):
        LatentBank(arguments.pop("num_samples"), arguments.pop("latent_shape"), **arguments)


def test_normalize_latent_shape() -> None:
    assert normalize_latent_shape(8) == (8,)
    assert normalize_latent_shape([8, 1, 1]) == (8, 1, 1)
    with pytest.raises(TypeError, match=r"`pl_module\.hparams\.latent_dim` must be an int"):
        normalize_latent_shape(True, argument="pl_module.hparams.latent_dim")


def test_bad_rank_is_refused() -> None:
    with pytest.raises(ValueError, match=r"`rank` must be in \[0, world_size\), got rank=2, world_size=2"):
        LatentBank(4, 2).shard(2, 2)


# --------------------------------------------------------------------------- world-size invariance (simulated)


def _features(latents: torch.Tensor, num_features: int = 32, num_classes: int = 7) -> tuple[torch.Tensor, ...]:
    """A fixed, non-linear per-sample map from latents to (pool, logits), standing in for generator + Inception."""
    g = torch.Generator().manual_seed(123)
    w1 = torch.randn(latents.shape[1], num_features, generator=g)
    w2 = torch.randn(num_features, num_classes, generator=g)
    pool = torch.relu(latents @ w1 + 0.5)
    return pool, pool @ w2 / 4


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize(("num_samples", "batch_size"), [(48, 8), (53, 5)])
def test_merged_scores_equal_single_process(world_size: int, num_samples: int, batch_size: int) -> None:
    """FID and IS from W rank shards, merged as under DDP, equal the 1-process values (1e-6)."""

    def evaluate(rank: int, size: int) -> tuple[FIDMoments, ISMarginals]:
        moments, marginals = FIDMoments(num_features=32), ISMarginals(num_samples, splits=3, num_classes=7)
        for batch in LatentBank(num_samples, 6, seed=5, batch_size=batch_size).shard(rank, size):
            pool, logits = _features(batch.latents)
            moments.update(pool)
            marginals.update(logits, batch.indices)
        return moments, marginals

    single_moments, single_marginals = evaluate(0, 1)
    shards = [evaluate(rank, world_size) for rank in range(world_size)]
    # The merges FIDMoments.synced / ISMarginals.synced apply to the gathered states, in rank order.
    merged_moments = FIDMoments(num_features=32)
    merged_marginals = ISMarginals(num_samples, splits=3, num_classes=7)
    for moments, marginals in shards:
        merged_moments.merge(moments)
        merged_marginals.merge(marginals)

    reference = FrechetReference(torch.zeros(32), torch.eye(32))
    single, merged = single_moments.compute(), merged_moments.compute()
    assert merged.n == single.n == num_samples
    fid_single = reference.distance(single.mean, single.cov)
    fid_merged = reference.distance(merged.mean, merged.cov)
    assert fid_merged == pytest.approx(fid_single, rel=1e-6)
    assert merged_marginals.compute() == pytest.approx(single_marginals.compute(), rel=1e-6)


# ------------------------------------------------------------------------------------- generator state


class _Generator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3 * 4 * 4))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(z)).view(-1, 3, 4, 4)


def _snapshot(module: nn.Module) -> dict:
    return {
        "modes": [m.training for m in module.modules()],
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "state": {k: v.clone() for k, v in module.state_dict().items()},
        "grad": torch.is_grad_enabled(),
        "rng": (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()),
    }


def _assert_same(before: dict, after: dict) -> None:
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["grad"] == before["grad"]
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    assert torch.equal(after["rng"][0], before["rng"][0])
    assert np.array_equal(after["rng"][1], before["rng"][1])
    assert after["rng"][2] == before["rng"][2]


def _mischievous_sampling(module: _Generator) -> torch.Tensor:
    """Everything a careless sample_fn can do: train mode (BN stats move), draws from every RNG, flips flags."""
    assert not module.training
    assert not torch.is_grad_enabled()
    module.train()
    out = module(torch.randn(5, 4))
    module.net[0].weight.requires_grad_(False)
    np.random.rand()
    random.random()
    return out


def test_preserved_module_state_restores_everything() -> None:
    module = _Generator()
    module.train()
    module.net[1].eval()  # a mixed configuration must come back exactly, not as a blanket train()
    before = _snapshot(module)
    with preserved_module_state(module):
        _mischievous_sampling(module)
    _assert_same(before, _snapshot(module))


def test_preserved_module_state_restores_on_error() -> None:
    module = _Generator().train()
    before = _snapshot(module)

    def failing_pass() -> None:
        with preserved_module_state(module):
            _mischievous_sampling(module)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_pass()
    _assert_same(before, _snapshot(module))


def test_preserved_module_state_keeps_grad_mode_off() -> None:
    module = _Generator()
    with torch.no_grad():
        with preserved_module_state(module):
            pass
        assert not torch.is_grad_enabled()


def test_isolated_rng_restores_all_generators() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    with isolated_rng():
        torch.manual_seed(99)
        torch.rand(10)
        np.random.rand(10)
        random.random()
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])
    assert got[2] == expected[2]


def test_seed_batch_noise_is_a_function_of_seed_and_batch() -> None:
    with isolated_rng():
        seed_batch_noise(0, 3)
        a = torch.randn(4)
        seed_batch_noise(0, 3)
        b = torch.randn(4)
        seed_batch_noise(0, 4)
        c = torch.randn(4)
        seed_batch_noise(1, 3)
        d = torch.randn(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, d)


# ------------------------------------------------------------------------------------ generated images


def test_check_generated_casts_to_float32() -> None:
    out = check_generated(torch.zeros(2, 3, 4, 4, dtype=torch.bfloat16), 2, source="pl_module(z)")
    assert out.dtype == torch.float32


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        ((torch.zeros(2, 3, 4, 4),), TypeError, r"`pl_module\(z\)` must return a tensor of images .* got tuple"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), TypeError, "must return floating point images.*uint8"),
        (torch.zeros(2, 48), ValueError, r"shape \(N, C, H, W\) with N=2 \(one per latent\), got shape \(2, 48\)"),
        (torch.zeros(3, 3, 4, 4), ValueError, r"with N=2 .* got shape \(3, 3, 4, 4\)"),
    ],
)
def test_check_generated_errors(images: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        check_generated(images, 2, source="pl_module(z)")
