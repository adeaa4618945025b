"""FeatureBank on 2 and 3 gloo processes: every rank gets exactly the single-process rows.

Each rank feeds a random, uneven share of the global indices (one configuration leaves a rank with zero rows),
in shuffled batches; the gather runs in chunks of 5 rows so that the chunk loop, its ragged last chunk and ranks
that run out of rows before the others are all exercised. Rows are only moved, never summed, so the parent
requires bit-identical results (``torch.equal``) on every rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from fakes import counted_collectives

from lightning_ganeval.accumulators import FeatureBank

pytestmark = [pytest.mark.ddp, pytest.mark.slow]  # runs in the 2 and 3 processes of tests/ddp_runs.py

N, D = 53, 7
CHUNK_BYTES = 4 * D * 5  # 5 rows of float32 per all-gather
SHARES = {  # rows per rank, summing to N
    2: {"uneven": [41, 12], "zero": [0, 53]},
    3: {"uneven": [30, 2, 21], "zero": [27, 0, 26]},
}


def _features() -> torch.Tensor:
    # float64 input: the bank rounds it to float32 once, wherever the row is added.
    return torch.randn(N, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 1


def _shard(shares: list[int], rank: int) -> torch.Tensor:
    order = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    start = sum(shares[:rank])
    return order[start : start + shares[rank]]


def _fill(bank: FeatureBank, indices: torch.Tensor, seed: int) -> None:
    x = _features()
    g = torch.Generator().manual_seed(seed)
    indices = indices[torch.randperm(len(indices), generator=g)]
    sizes = torch.randint(1, 9, (N,), generator=g).tolist()
    start = 0
    for size in sizes:
        if start >= len(indices):
            break
        chunk = indices[start : start + size]
        bank.update(x[chunk], chunk)
        start += size


def ddp_job(rank: int, world_size: int, workdir: Path, inputs: Any) -> dict[str, Any]:
    """One rank's results (tests/ddp_runs.py runs it on 2 and 3 processes)."""
    out: dict[str, Any] = {}
    for name, shares in SHARES[world_size].items():
        bank = FeatureBank(num_features=D, gather_chunk_bytes=CHUNK_BYTES)
        _fill(bank, _shard(shares, rank), seed=10 + rank)
        out[name] = bank.compute()
        out[f"{name}_local_rows_after"] = bank.num_rows  # compute() left this rank's own rows

    capped = FeatureBank(num_features=D, max_rows=20, gather_chunk_bytes=CHUNK_BYTES)
    _fill(capped, _shard(SHARES[world_size]["uneven"], rank), seed=20 + rank)
    out["capped"] = capped.compute()

    out["all_empty"] = FeatureBank(num_features=D).compute()

    one_chunk = FeatureBank(num_features=D)  # the default chunk holds every row
    _fill(one_chunk, _shard(SHARES[world_size]["uneven"], rank), seed=30 + rank)
    with counted_collectives() as calls:
        out["one_chunk"] = one_chunk.compute()
    out["one_chunk_collectives"] = list(calls)

    clash = FeatureBank(num_features=D)
    clash.update(_features()[:2], torch.tensor([7, 100 + rank]))  # index 7 on every rank
    try:
        clash.compute()
    except ValueError as err:
        out["clash_error"] = str(err)
    return out


@pytest.mark.parametrize("world_size", [2, 3])
def test_gathered_rows_equal_single_process_on_every_rank(world_size: int, ddp_runs: Any) -> None:
    results = ddp_runs.ranks(world_size, ddp_job)

    single = FeatureBank(num_features=D)
    _fill(single, torch.arange(N), seed=0)
    expected = single.compute()
    assert torch.equal(expected, _features().float())
    for rank, r in enumerate(results):
        for name, shares in SHARES[world_size].items():
            assert torch.equal(r[name], expected), (rank, name)
            assert r[f"{name}_local_rows_after"] == shares[rank]
        assert torch.equal(r["capped"], expected[:20])
        assert r["all_empty"].shape == (0, D)
        assert torch.equal(r["one_chunk"], expected)
        # The row counts, then the rows with their indices packed in: two all-gathers (a third, for the indices
        # alone, before).
        assert r["one_chunk_collectives"] == ["all_gather", "all_gather"]
        assert "several rows for the global indices [7]" in r["clash_error"]
