"""The random-weight helpers that tests, benchmarks and the example share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_ganeval import testing


def test_cached_random_weights_are_written_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[Path] = []

    def fake_write(path: Path, seed: int = 0) -> Path:
        writes.append(Path(path))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"seed": torch.tensor(seed)}, path)
        return Path(path)

    monkeypatch.setattr(testing, "write_random_inception_weights", fake_write)
    first = testing.cached_random_inception_weights(seed=3, directory=tmp_path)
    second = testing.cached_random_inception_weights(seed=3, directory=tmp_path)
    other = testing.cached_random_inception_weights(seed=4, directory=tmp_path)
    assert first == second == tmp_path / "random-inception-seed3.pth"
    assert other == tmp_path / "random-inception-seed4.pth"
    assert writes == [first, other]  # the second call reused the file


def test_session_weights_load_strictly_into_torch_fidelity(inception_weights_path: Path) -> None:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    state = torch.load(inception_weights_path, weights_only=True)
    assert "fc.weight" in state
    assert not any(key.endswith("num_batches_tracked") for key in state)
    FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(inception_weights_path)
    )
