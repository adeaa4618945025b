"""One multi-process launch per world size (2 and 3) for every DDP test that runs in spawned processes.

A fresh process imports torch and Lightning (4-8 s of CPU each), so these tests share their processes: for each
world size, one ``torch.multiprocessing`` launch joins a CPU gloo group and runs every job of `JOBS` in turn, the
plain-collective checks (accumulators, feature bank, Evaluator, PPL, a failing real pass) and the Lightning fits of
the metric callbacks. A fit runs with ``strategy="ddp"`` in those processes, as under torchrun (Lightning sees
``LOCAL_RANK`` and reuses the group), after a pickle round trip of its model and callbacks, as ``ddp_spawn`` would
make. Each rank's return value (or traceback) per job is saved; tests read them through the ``ddp_runs`` fixture
(tests/conftest.py), which launches once per test run whatever the number of xdist workers, with the jobs of the
selected test modules only. The single-process references stay in the tests, computed in the test process; the
recorded values are bit for bit those of the ``ddp_spawn`` runs they replace (checked for the metric callbacks' fit
at 2 and 3 processes and the FID/IS step-schedule fit at 2).

A job is a module-level function ``job(rank, world_size, workdir, inputs) -> picklable`` of a test module, named
here as ``"module:function"``; ``workdir`` is its own folder, shared by the ranks, and ``inputs`` holds the
session's weight files (``inception_weights``, ``lpips_files``) and the test process's ``torch_threads`` (the
processes run with 1 thread, see `join_gloo_group`).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fakes import join_gloo_group
from filelock import FileLock, Timeout

JOBS: dict[int, list[str]] = {
    2: [
        "test_accumulators_ddp:ddp_job",
        "test_feature_bank_ddp:ddp_job",
        "test_evaluator:ddp_job",
        "test_ppl:ddp_evaluator_job",
        "test_metrics_callbacks_ddp:ddp_job",
        "test_cmmd:ddp_job",
        "test_callbacks_ddp:ddp_job",
        "test_memorization:ddp_job",
        "test_ppl:ddp_callback_job",
        "test_distributed:ddp_job",  # last: one rank's real pass fails on purpose
    ],
    3: [
        "test_accumulators_ddp:ddp_job",
        "test_feature_bank_ddp:ddp_job",
        "test_ppl:ddp_evaluator_job",
        "test_metrics_callbacks_ddp:ddp_job",
        "test_cmmd:ddp_job",
        "test_callbacks_ddp:ddp_job",
        "test_memorization:ddp_job",
    ],
}

# The weight files some jobs read: input name -> (the session fixture that builds it, the modules whose jobs read it).
INPUTS: dict[str, tuple[str, set[str]]] = {
    "inception_weights": ("inception_weights_path", {"test_metrics_callbacks_ddp", "test_callbacks_ddp"}),
    "lpips_files": ("lpips_files", {"test_ppl"}),
}


@dataclasses.dataclass
class Failed:
    """A job that raised on this rank (or did not run: an earlier job failed on some rank)."""

    traceback: str


def job_name(job: Callable[..., Any]) -> str:
    return f"{job.__module__}:{job.__name__}"


def roundtrip_pickle(obj: Any) -> Any:
    """``obj`` pickled and unpickled, as ``ddp_spawn`` hands the model and callbacks to its processes."""
    return pickle.loads(pickle.dumps(obj))


def _worker(rank: int, world_size: int, root: str, jobs: list[str], inputs: dict[str, Any]) -> None:
    # Lightning takes processes with LOCAL_RANK set as launched from outside (as by torchrun): no new processes, and
    # the process group joined here is reused by every fit.
    os.environ.update(LOCAL_RANK=str(rank), NODE_RANK="0")
    join_gloo_group(rank, world_size, root)
    results: dict[str, Any] = {}
    try:
        for name in jobs:
            module, function = name.split(":")
            workdir = Path(root, name.replace(":", "."))
            workdir.mkdir(parents=True, exist_ok=True)
            try:
                job = getattr(importlib.import_module(module), function)
                results[name] = job(rank, world_size, workdir, inputs)
            except Exception:
                results[name] = Failed(traceback.format_exc())
            # After a failure the other ranks would wait in collectives that this rank never joins: stop everywhere.
            failed = [False] * world_size
            dist.all_gather_object(failed, isinstance(results[name], Failed))
            if any(failed):
                break
    finally:
        torch.save(results, Path(root, f"rank{rank}.pt"))
    # Every rank has saved its results. Exit without the interpreter's teardown: once, after all the jobs had
    # passed, a rank aborted there ("terminate called without an active exception", SIGABRT), which the launch
    # reports as a failure of every test.
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _launch(world_size: int, jobs: list[str], root: Path, inputs: dict[str, Any]) -> None:
    """Runs ``jobs`` in ``world_size`` fresh processes; saves ``{job: [per-rank result]}``."""
    root.mkdir(parents=True, exist_ok=True)
    mp.start_processes(
        _worker, args=(world_size, str(root), jobs, inputs), nprocs=world_size, start_method="spawn", join=True
    )
    ranks = [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
    failed = [name for name in jobs if any(isinstance(rank.get(name), Failed) for rank in ranks)]
    missing = Failed(f"not run: {failed[0] if failed else 'an earlier job'} failed first, see its test")
    results = {name: [rank.get(name, missing) for rank in ranks] for name in jobs}
    torch.save(results, root / "results.tmp")
    os.replace(root / "results.tmp", root / "results.pt")  # the marker of a finished launch


@dataclasses.dataclass
class DDPRuns:
    """The recorded results of the launches under ``root`` (``w2/``, ``w3/``)."""

    root: Path

    def ranks(self, world_size: int, job: Callable[..., Any]) -> list[Any]:
        """``job``'s return value on every rank, in rank order; fails the test with a rank's traceback."""
        results = torch.load(self.root / f"w{world_size}" / "results.pt", weights_only=False)
        outcomes = results[job_name(job)]
        for rank, outcome in enumerate(outcomes):
            if isinstance(outcome, Failed):
                raise AssertionError(f"{job_name(job)} failed on rank {rank} of {world_size}:\n{outcome.traceback}")
        return outcomes

    def folder(self, world_size: int, job: Callable[..., Any]) -> Path:
        """``job``'s working folder (what its ranks wrote)."""
        return self.root / f"w{world_size}" / job_name(job).replace(":", ".")


def launch_once(root: Path, modules: set[str], inputs: Mapping[str, Any], worker_index: int = 0) -> DDPRuns:
    """Each world size's launch runs once per test run, whatever the number of xdist workers.

    Only the jobs of ``modules`` (the test modules of this run that need them: every xdist worker collects the same
    tests) run. A worker takes a launch that no other worker holds (worker 0 starts with 2 processes, worker 1 with
    3, so two workers that arrive together run both at once), then waits for the launches held by others.
    """
    root.mkdir(parents=True, exist_ok=True)
    jobs = {size: [name for name in names if name.split(":")[0] in modules] for size, names in JOBS.items()}
    pending = sorted((size for size in jobs if jobs[size]), reverse=worker_index % 2 == 1)
    while pending:
        for world_size in pending:
            lock = FileLock(str(root / f"w{world_size}.lock"))
            try:
                lock.acquire(timeout=0)
                break
            except Timeout:
                continue
        else:  # every remaining launch is under way elsewhere: wait for the first
            world_size = pending[0]
            lock = FileLock(str(root / f"w{world_size}.lock"))
            lock.acquire()
        try:
            if not (root / f"w{world_size}" / "results.pt").exists():  # else done by another worker
                _launch(world_size, jobs[world_size], root / f"w{world_size}", dict(inputs))
        finally:
            lock.release()
        pending.remove(world_size)
    return DDPRuns(root)
