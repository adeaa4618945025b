"""The command line and the Evaluator (the callbacks' engine) give the same numbers through the same code.

8 random 32 x 32 images are the "generated" set and 8 others the real set (two batches each: enough for the call
counts, and every Inception forward at 299 x 299 costs ~0.1 s of CPU). The command line reads them as PNG
folders; the Evaluator gets a generate function returning the same images and the real images as a TensorDataset.
Both paths are spied on: the one real pass (``real_pass._real_pass``) and the per-batch step of an evaluation
(``Evaluator._feed``: conversion, one forward per network, each metric's ``update``) must run as often in the
command line as in the Evaluator, so that no other extraction code can have produced the command line's numbers.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from lightning_ganeval import cli, real_pass
from lightning_ganeval.evaluator import Evaluator
from lightning_ganeval.metrics import build_metric

N, SIZE, BATCH = 8, 32, 4
# Both sides feed the network the same uint8 batches of 4 in the same order, so the features are bit for bit the
# same and so are the accumulators: the values agree to float64 rounding of nothing at all (measured: equal). The
# tolerance leaves room for a BLAS that orders a sum differently between two calls.
RTOL = 1e-12


def _images(seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (N, 3, SIZE, SIZE), dtype=np.uint8))


def _write(folder: Path, images: torch.Tensor) -> Path:
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return folder


class _Counter:
    """Counts the calls of a function and forwards them."""

    def __init__(self, function: Any) -> None:
        self.function, self.calls = function, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.function(*args, **kwargs)


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> dict[str, _Counter]:
    counters = {"real_pass": _Counter(real_pass._real_pass), "feed": _Counter(Evaluator._feed)}
    monkeypatch.setattr(real_pass, "_real_pass", counters["real_pass"])
    monkeypatch.setattr(Evaluator, "_feed", lambda self, *a, **k: counters["feed"](self, *a, **k))
    return counters


def _run_cli(*argv: Any) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random weights are not the reference
        status = cli.main([str(a) for a in argv] + ["--json", "--no-progress"])
    assert status == 0, err.getvalue()
    return json.loads(out.getvalue())


@pytest.mark.slow
def test_cli_and_evaluator_give_the_same_numbers_through_the_same_pass(
    tmp_path: Path, inception_weights_path: Path, extractor: Any, spies: dict[str, _Counter]
) -> None:
    fake, real = _images(1), _images(2)
    a, b = _write(tmp_path / "A", fake), _write(tmp_path / "B", real)
    common = ("--inception-weights", inception_weights_path, "--workers", 0, "--batch-size", BATCH, "--device", "cpu")

    ours: dict[str, Any] = {}
    calls: dict[str, tuple[int, int]] = {}
    for command, argv in {
        "fid": ("fid", a, b),
        "kid": ("kid", a, b, "--subsets", 3, "--subset-size", 4),
        "is": ("is", a, "--splits", 2),
    }.items():
        before = (spies["real_pass"].calls, spies["feed"].calls)
        ours[command] = _run_cli(*argv, *common)
        calls[command] = (spies["real_pass"].calls - before[0], spies["feed"].calls - before[1])
    # The real folder went through the one real pass (IS reads no real data), the evaluated folder through the
    # Evaluator's per-batch step: N images in batches of 4.
    assert calls == {"fid": (1, N // BATCH), "kid": (1, N // BATCH), "is": (0, N // BATCH)}

    before = (spies["real_pass"].calls, spies["feed"].calls)
    metrics = ["fid", build_metric("kid", subsets=3, subset_size=4, max_real=N), build_metric("is", splits=2)]
    evaluator = Evaluator(metrics, num_samples=N, latent_shape=1, batch_size=BATCH, space=(0, 1), inception=extractor)
    evaluator.prepare_real(DataLoader(TensorDataset(real), batch_size=BATCH), cache=False)
    position = [0]

    def generate(z: torch.Tensor) -> torch.Tensor:  # the N images, in bank order, as floats in [0, 1]
        images = fake[position[0] : position[0] + len(z)].float() / 255
        position[0] += len(z)
        return images

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = evaluator.evaluate(generate).values
    # One real pass for the three metrics, one step per batch of generated images.
    assert (spies["real_pass"].calls - before[0], spies["feed"].calls - before[1]) == (1, N // BATCH)

    for key, command in [("fid", "fid"), ("kid", "kid"), ("kid_std", "kid"), ("is", "is"), ("is_std", "is")]:
        assert ours[command][key] == pytest.approx(values[key], rel=RTOL, abs=1e-15), key
    assert ours["fid"]["num_samples_a"] == ours["fid"]["num_samples_b"] == N
    assert ours["is"]["num_samples"] == N
