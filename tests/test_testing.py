"""The random-weight helpers that tests, benchmarks and the example share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def test_torch_fidelity_inception_score_on_random_weights_is_finite_and_ours(inception_weights_path: Path) -> None:
    # Uniform noise at the scales tests feed (16 px to full 299 px), one split per scale. The previous weights
    # gave logits with a std of ~2900 here (75-5000 on such inputs): softmax entries underflowed to exactly 0 in
    # every sample of a split, and torch-fidelity's IS was NaN.
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_isc import isc_features_to_metric

    from lightning_ganeval.inception_score_math import inception_score

    model = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=str(inception_weights_path)
    ).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        logits = torch.cat(
            [
                model(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=generator))[0]
                for size in (16, 64, 299)
            ]
        )
    assert 0.5 <= float(logits.double().std()) <= 10.0  # O(1-10), as documented (LOGIT_STD = 3 on calibration)
    theirs = isc_features_to_metric(logits, splits=3, shuffle=False)
    ours = inception_score(logits, splits=3)
    assert np.isfinite(theirs["inception_score_mean"])
    assert np.isfinite(theirs["inception_score_std"])
    assert theirs["inception_score_mean"] > 1.0  # the predictions vary with the input
    assert ours[0] == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    assert ours[1] == pytest.approx(theirs["inception_score_std"], rel=1e-6)
