"""FeatureBank in one process: ordering by global index, the row cap, storage, validation."""

from __future__ import annotations

import re

import pytest
import torch

from lightning_ganeval.accumulators import FeatureBank


def _rows(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_compute_returns_rows_sorted_by_global_index_whatever_the_arrival_order() -> None:
    x = _rows(40, 5)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    bank = FeatureBank(num_features=5)
    for chunk in order.split(7):
        bank.update(x[chunk], chunk)
    out = bank.compute()
    assert out.dtype == torch.float32
    assert out.device == torch.device("cpu")
    assert torch.equal(out, x.float())  # float64 rows rounded to float32 once, then only moved


def test_indices_need_not_be_contiguous() -> None:
    bank = FeatureBank(num_features=1)
    bank.update(torch.tensor([[5.0], [1.0], [9.0]]), torch.tensor([50, 10, 90]))
    assert bank.compute().flatten().tolist() == [1.0, 5.0, 9.0]


def test_max_rows_keeps_only_the_lowest_global_indices() -> None:
    x = _rows(30, 3)
    bank = FeatureBank(num_features=3, max_rows=12)
    for chunk in torch.arange(29, -1, -1).split(8):  # descending: the first batches are dropped whole
        bank.update(x[chunk], chunk)
    assert bank.num_rows == 12
    assert torch.equal(bank.compute(), x[:12].float())
    nothing = FeatureBank(num_features=3, max_rows=0)
    nothing.update(x[:4], torch.arange(4))
    assert nothing.compute().shape == (0, 3)


def test_stored_rows_are_copies_on_the_storage_device() -> None:
    x = torch.ones(4, 2)
    idx = torch.arange(4)
    bank = FeatureBank(num_features=2)
    bank.update(x, idx)
    x.mul_(7)  # the caller reuses its buffers
    idx.add_(100)
    assert bank.compute().tolist() == [[1.0, 1.0]] * 4
    assert bank.indices[0].tolist() == [0, 1, 2, 3]
    assert bank.features[0].device == torch.device("cpu")
    assert bank.features[0].dtype == torch.float32
    assert bank.indices[0].dtype == torch.long


def test_empty_reset_and_merge() -> None:
    bank = FeatureBank(num_features=4)
    empty = bank.compute()
    assert empty.shape == (0, 4)
    assert empty.dtype == torch.float32
    bank.update(_rows(3, 4), torch.arange(3))
    bank.update(_rows(0, 4), torch.arange(0))  # an empty batch is fine
    assert bank.compute().shape == (3, 4)
    bank.reset()
    assert bank.num_rows == 0
    bank.update(_rows(2, 4, seed=3), torch.tensor([1, 0]))
    assert torch.equal(bank.compute(), _rows(2, 4, seed=3).float().flip(0))
    other = FeatureBank(num_features=4)
    other.update(_rows(2, 4, seed=4), torch.tensor([5, 2]))
    bank.merge(other)
    rows, indices = bank.ordered()
    assert indices.tolist() == [0, 1, 2, 5]
    assert torch.equal(rows[2:], _rows(2, 4, seed=4).float().flip(0))
    assert other.num_rows == 2  # merge() leaves the merged-in bank as it is


def test_repeated_global_index_is_an_error() -> None:
    bank = FeatureBank(num_features=2)
    bank.update(_rows(3, 2), torch.tensor([0, 1, 2]))
    bank.update(_rows(2, 2), torch.tensor([2, 3]))
    with pytest.raises(ValueError, match=re.escape("several rows for the global indices [2]")):
        bank.compute()


@pytest.mark.parametrize(
    ("features", "indices", "error", "message"),
    [
        (torch.zeros(3, 5), torch.arange(3), ValueError, "Expected features of shape (B, 4), got (3, 5)"),
        (torch.zeros(3), torch.arange(3), ValueError, "Expected features of shape (B, 4), got (3,)"),
        (torch.zeros(3, 4, dtype=torch.long), torch.arange(3), TypeError, "must have a floating dtype"),
        (torch.zeros(3, 4).numpy(), torch.arange(3), TypeError, "`features` must be a torch.Tensor"),
        (torch.zeros(3, 4), torch.arange(2), ValueError, "integer tensor of shape (3,) matching the features"),
        (torch.zeros(3, 4), torch.arange(3.0), ValueError, "got dtype torch.float32"),
        (torch.zeros(3, 4), torch.tensor([0, -1, 2]), ValueError, "must be non-negative global sample indices, got -1"),
    ],
)
def test_update_errors(features, indices, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        FeatureBank(num_features=4).update(features, indices)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_features": 0}, "`num_features` must be a positive integer, got 0"),
        ({"max_rows": -1}, "`max_rows` must be a non-negative integer or None, got -1"),
        ({"max_rows": 1.5}, "`max_rows` must be a non-negative integer or None, got 1.5"),
        ({"gather_chunk_bytes": 0}, "`gather_chunk_bytes` must be a positive integer, got 0"),
    ],
)
def test_constructor_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FeatureBank(**kwargs)
