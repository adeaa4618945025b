"""lightning_ganeval.distributed: one process (no collective), and a real pass that fails on one of 2 ranks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_ganeval.distributed import (
    OtherRankFailed,
    agree,
    barrier,
    broadcast_object,
    collective_device,
    rank_and_world_size,
)


def test_one_process_needs_no_process_group() -> None:
    assert rank_and_world_size() == (0, 1)
    assert broadcast_object({"a": 1}) == {"a": 1}
    barrier()
    totals = agree(None, totals=torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert totals is not None
    assert totals.tolist() == [1.0, 2.0]
    assert agree(None) is None
    with pytest.raises(KeyError, match="mine"):
        agree(KeyError("mine"))


class _Images(torch.utils.data.Dataset):
    """8 images; item 3 (in rank 1's shard of 2) cannot be read."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 3:
            raise OSError("item 3 is unreadable")
        return torch.full((3, 8, 8), index / 8)


def ddp_job(rank: int, world_size: int, workdir: Path, inputs: Any) -> str:
    """One rank's outcome (tests/ddp_runs.py runs it last on 2 processes: it leaves a failed real pass behind)."""
    from fakes import FakeExtractor

    from lightning_ganeval.metrics import FID
    from lightning_ganeval.real_pass import prepare_real_data

    try:
        metric = FID()
        loader = torch.utils.data.DataLoader(_Images(), batch_size=2)
        prepare_real_data(loader, [(FakeExtractor(), metric)], space=(0, 1), cache=False)
        outcome = "finished"
    except OtherRankFailed as err:
        outcome = f"OtherRankFailed: {err}"
    except Exception as err:  # the failing rank's own error, or (before the fix) a timed-out collective
        outcome = f"{type(err).__name__}: {err}"
    return outcome


@pytest.mark.slow
@pytest.mark.ddp
def test_a_real_pass_failing_on_one_rank_stops_every_rank(ddp_runs: Any) -> None:
    # Before distributed.agree in the real pass, rank 0 waited in the moments' merge until gloo's timeout (120 s,
    # tests/fakes.join_gloo_group).
    outcomes = ddp_runs.ranks(2, ddp_job)
    assert outcomes[1] == "OSError: item 3 is unreadable"
    assert outcomes[0] == "OtherRankFailed: The real pass failed on another process; see its error."


def test_collective_device_by_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    fallback = torch.device("xpu", 1)
    assert collective_device(fallback) == torch.device("cpu")  # no process group
    with monkeypatch.context() as patch:  # undone before the fixtures' teardown looks at the process group
        patch.setattr(torch.distributed, "is_initialized", lambda: True)
        patch.setattr(torch.cuda, "current_device", lambda: 3)
        for backend, expected in [
            ("gloo", torch.device("cpu")),
            ("cpu:gloo,cuda:nccl", torch.device("cpu")),
            ("nccl", torch.device("cuda", 3)),
            ("xccl", fallback),
        ]:
            patch.setattr(torch.distributed, "get_backend", lambda group=None, b=backend: b)
            assert collective_device(fallback) == expected, backend
