"""The few ``torch.distributed`` operations the evaluation needs, in one place, each a no-op in one process.

Rank and world size, a broadcast of a Python object from rank 0, a barrier, and :func:`agree`: every rank learns
whether any rank failed, and every rank raises if one did. A rank that failed alone (an unreadable image in its
share, a generator error on its batch) would otherwise leave the others waiting forever in the next collective
(a metric's merge); after :func:`agree` the failing rank raises its own error and the others
:class:`OtherRankFailed`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = [
    "OtherRankFailed",
    "agree",
    "barrier",
    "broadcast_object",
    "collective_device",
    "group_size",
    "rank_and_world_size",
]


class OtherRankFailed(RuntimeError):
    """Another process of the group failed (its own error says why); this one stops too."""


def rank_and_world_size(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, else ``(0, 1)``; a value given wins over it."""
    found = (0, 1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        found = (torch.distributed.get_rank(), torch.distributed.get_world_size())
    return (found[0] if rank is None else rank, found[1] if world_size is None else world_size)


def group_size(group: Any = None) -> int:
    """Processes in ``group`` (the default group for None); 1 without an initialised process group."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 1
    return torch.distributed.get_world_size(group)


def _world(world_size: int | None) -> int:
    return rank_and_world_size()[1] if world_size is None else world_size


def collective_device(fallback: torch.device | str | None = None, group: Any = None) -> torch.device:
    """Where a tensor must be for a collective of ``group``'s backend.

    Gloo and MPI (alone or in a mixed ``"cpu:gloo,cuda:nccl"`` group) take CPU tensors; NCCL takes only tensors of
    the current CUDA device; other accelerator backends take ``fallback`` (the state's device). The CPU without a
    process group.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return torch.device("cpu")
    name = str(torch.distributed.get_backend(group)).lower()
    if "gloo" in name or "mpi" in name:
        return torch.device("cpu")
    if "nccl" in name:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(fallback) if fallback is not None else torch.device("cpu")


def broadcast_object(value: Any, *, world_size: int | None = None, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank (picklable objects); ``value`` itself in one process."""
    if _world(world_size) < 2:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def barrier(*, world_size: int | None = None) -> None:
    """Wait for every rank (nothing in one process)."""
    if _world(world_size) > 1:
        torch.distributed.barrier()


def agree(
    error: BaseException | None,
    *,
    totals: Tensor | None = None,
    world_size: int | None = None,
    message: str = "Another process failed; see its error.",
) -> Tensor | None:
    """Tell every rank whether any rank failed, and raise on every rank if one did.

    One all-reduce on every rank, also on a rank that failed, so that no rank waits forever. ``totals`` rides in
    the same collective (summed over ranks), for counts the caller would all-reduce anyway.

    Args:
        error: This rank's error, or ``None``.
        totals: A 1-D float64 tensor summed over ranks in the same collective (on the collective's device).
        world_size: Processes taking part; default: the process group's (1 without one).
        message: The message of :class:`OtherRankFailed` on the ranks that did not fail.

    Returns:
        ``totals`` summed over ranks (``None`` if not given), when no rank failed.

    Raises:
        BaseException: ``error`` on the rank that failed.
        OtherRankFailed: On every other rank, when any rank failed.
    """
    failed = torch.tensor([float(error is not None)], dtype=torch.float64)
    if totals is not None:
        failed = torch.cat([failed.to(totals.device), totals.to(torch.float64).reshape(-1)])
    if _world(world_size) > 1:
        if totals is None:
            failed = failed.to(collective_device())
        torch.distributed.all_reduce(failed)
    if error is not None:
        raise error
    if failed[0] > 0:
        raise OtherRankFailed(message)
    return failed[1:] if totals is not None else None
