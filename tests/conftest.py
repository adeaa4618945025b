"""Shared fixtures, and what lets the suite run on every core (pytest-xdist).

* One random-weight Inception file per test run, built by the first worker that needs it (`build_once`), and a CPU
  extractor built from it.
* ``python -m pytest`` with no paths runs on one xdist worker per CPU (``--dist worksteal``); naming files or tests
  runs them in this process, which starts faster. ``-n N`` / ``-n 0`` / ``-p no:xdist`` choose for themselves.
* Each worker gets its share of the cores as torch threads (its spawned processes inherit it), its own
  ``TORCH_HOME`` (the default real-statistics cache), and a free ``MASTER_PORT`` from its own range for every
  ``ddp`` test; every test gets the environment variables and torch thread count it started with back.
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from filelock import FileLock  # a dependency of torch

from lightning_ganeval.testing import write_random_inception_weights

T = TypeVar("T")

_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... inside an xdist worker, else None


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers, taskset)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ------------------------------------------------------------------------------------ running on every core


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns `numprocesses` into workers
def pytest_cmdline_main(config: pytest.Config) -> None:
    """The whole suite (no paths named) runs on one worker per CPU, stealing work from each other at the end."""
    if hasattr(config, "workerinput") or _WORKER is not None:
        return  # a worker: xdist runs this hook there too, with `numprocesses` reset (workers must not start more)
    if not config.pluginmanager.has_plugin("xdist") or config.option.numprocesses is not None:
        return  # -p no:xdist, or -n given
    testpaths = getattr(pytest.Config, "ArgsSource", None)  # pytest >= 7.3
    if testpaths is None or config.args_source != testpaths.TESTPATHS or config.option.collectonly:
        return  # named files or tests: one process (no worker start-up); add -n to spread them
    if config.getoption("usepdb", False):
        return
    workers = int(os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or _cpu_count())
    if workers > 1:
        config.option.numprocesses = workers
        if config.option.dist == "no":
            config.option.dist = "worksteal"


if _WORKER is not None:
    # Workers share the cores: more torch threads than cores slows every process down (OpenMP threads spin).
    # Set as a variable too, so that spawned DDP processes and subprocesses use the same count (float32 sums,
    # and so some results, depend on it).
    _threads = max(1, _cpu_count() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="Requires: CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    if _WORKER is not None:
        # Longest first, so that no worker starts a long test while the other has nothing left: the slow tests
        # (stable within each class, so a module's tests stay together and its fixtures are built once or twice).
        items.sort(key=lambda item: "slow" not in item.keywords)


# ------------------------------------------------------------------------------------------------ isolation

# Worker gw<k> draws from 20000 + 1000 k (plus a per-process offset, for two runs at once); no worker: 29000.
_next_port = 20_000 + 1_000 * (int((_WORKER or "gw9")[2:]) % 12) + os.getpid() % 200


def free_port() -> int:
    """A TCP port free now, from this worker's range below Linux's ephemeral ports (32768+).

    Two workers never draw the same port, and the ports the OS hands out for ``bind(0)`` (Lightning's own
    choice, torchrun's) never collide with these.
    """
    global _next_port
    for _ in range(1000):
        port, _next_port = _next_port, _next_port + 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found")


@pytest.fixture(scope="session", autouse=True)
def _torch_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The default caches (``$TORCH_HOME/lightning_ganeval/real_stats``, torch hub) of this worker, not the user's."""
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch-home"))


@pytest.fixture(autouse=True)
def _restore_environment(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give every test the environment and thread count it started with, and ``ddp`` tests a port of their own.

    Lightning's launchers leave ``MASTER_PORT``, ``MASTER_ADDR``, ``OMP_NUM_THREADS`` (and
    ``torch.set_num_threads``) behind in the test process; a later test would reuse the port while another
    worker may have drawn it.
    """
    environment, threads = dict(os.environ), torch.get_num_threads()
    if request.node.get_closest_marker("ddp") is not None:
        os.environ["MASTER_PORT"] = str(free_port())
    yield
    if dict(os.environ) != environment:
        os.environ.clear()
        os.environ.update(environment)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_inception_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's own weights variable from leaking into tests."""
    monkeypatch.delenv("LIGHTNING_GANEVAL_INCEPTION_WEIGHTS", raising=False)


@pytest.fixture(autouse=True)
def _teardown_process_group() -> Iterator[None]:
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------------- expensive shared files


def _run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp()
    if _WORKER is not None:
        root = root.parent  # the run's folder, above the workers' own `popen-gw<N>`
    return root


@pytest.fixture(scope="session")
def build_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Callable[[Path], T]], T]:
    """``build_once(name, build)``: ``build(folder)`` runs once per test run, whatever the number of workers.

    The first worker to ask builds into ``<run's temp dir>/<name>`` under a file lock; the others wait for it and
    get the same (pickled) result, so the random weights are written once, not once per worker.
    """
    root = _run_folder(tmp_path_factory)

    def run(name: str, build: Callable[[Path], T]) -> T:
        folder = root / name
        with FileLock(str(folder) + ".lock"):
            done = folder / ".result.pickle"
            if not done.exists():
                folder.mkdir(parents=True, exist_ok=True)
                result: Any = build(folder)
                done.write_bytes(pickle.dumps(result))
            return pickle.loads(done.read_bytes())

    return run


@pytest.fixture(scope="session")
def inception_weights_path(build_once: Callable[..., Path]) -> Path:
    """Random weights in the ``pt_inception-2015-12-05-6726825d.pth`` layout, built once per run (~8 s)."""
    return build_once("weights", lambda folder: write_random_inception_weights(folder / "random-inception.pth", seed=0))


@pytest.fixture(scope="session")
def extractor(inception_weights_path: Path):
    """The package's shared CPU extractor on the random weights (default TF1 resize)."""
    from lightning_ganeval.inception import get_extractor

    return get_extractor("cpu", weights=inception_weights_path)


@pytest.fixture(scope="session")
def lpips_files(build_once: Callable[..., tuple[Path, Path]]) -> tuple[Path, Path]:
    """Random LPIPS-VGG16 weights in the two official layouts, built once per run."""
    from lightning_ganeval.testing import write_random_lpips_weights

    return build_once("lpips", lambda folder: write_random_lpips_weights(folder, seed=0))


@pytest.fixture(scope="session")
def ddp_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The recorded results of every multi-process test, from one launch per world size (2, 3) per test run.

    See tests/ddp_runs.py; a worker that finds a launch under way in another worker waits for it. The launches run
    the jobs of the selected tests' modules only (one file named: that file's jobs).
    """
    from ddp_runs import INPUTS, launch_once

    modules = {
        item.module.__name__ for item in request.session.items if "ddp_runs" in getattr(item, "fixturenames", ())
    }
    inputs: dict[str, Any] = {"torch_threads": torch.get_num_threads()}  # for the jobs whose exact sums depend on it
    for name, (fixture, users) in INPUTS.items():
        if modules & users:  # built only when a selected job needs it (~30 s of CPU for Inception's)
            inputs[name] = request.getfixturevalue(fixture)
    return launch_once(_run_folder(tmp_path_factory) / "ddp-runs", modules, inputs, int((_WORKER or "gw0")[2:]))


os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """`fresh_python.FreshPython`: scripts run as ``python script.py`` would, the imports paid once per worker."""
    from fresh_python import FreshPython

    server = FreshPython(tmp_path_factory.mktemp("fresh-python"))
    yield server
    server.close()
