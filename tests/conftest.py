"""Shared fixtures: one random-weight Inception file per test session, and a CPU extractor built from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lightning_ganeval.testing import write_random_inception_weights


@pytest.fixture(scope="session")
def inception_weights_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights in the ``pt_inception-2015-12-05-6726825d.pth`` layout, built once per session (~8 s)."""
    return write_random_inception_weights(tmp_path_factory.mktemp("weights") / "random-inception.pth", seed=0)


@pytest.fixture(scope="session")
def extractor(inception_weights_path: Path):
    """The package's shared CPU extractor on the random weights (default TF1 resize)."""
    from lightning_ganeval.inception import get_extractor

    return get_extractor("cpu", weights=inception_weights_path)


@pytest.fixture(autouse=True)
def _no_inception_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's own weights variable from leaking into tests."""
    monkeypatch.delenv("LIGHTNING_GANEVAL_INCEPTION_WEIGHTS", raising=False)


@pytest.fixture(autouse=True)
def _teardown_process_group():
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="Requires: CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


os.environ.setdefault("PYTHONHASHSEED", "0")
