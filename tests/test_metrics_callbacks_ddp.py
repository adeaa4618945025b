"""1, 2 and 3 CPU processes (``ddp``, gloo) log the same FID, FID∞, IS, IS∞, KID and precision/recall.

One run per world size with every metric callback together, as ``test_callbacks_ddp.py`` does for FID and IS: 14
samples in batches of 4 give the ranks unequal shares (3 processes: batches {0, 3}, {1}, {2}; the last batch holds
2 samples), and 13 real images give them unequal real shards. The 2 and 3 processes are those of
tests/ddp_runs.py, shared with the other multi-process tests. They cannot see a pytest monkeypatch, so a callback
listed first swaps in the cheap `FakeExtractor` inside each process.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from ddp_runs import roundtrip_pickle
from fakes import FakeExtractor
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_ganeval.callbacks.base as callbacks_module
from lightning_ganeval import FIDCallback, InceptionScoreCallback, KIDCallback, PrecisionRecallCallback

pytestmark = [pytest.mark.slow, pytest.mark.ddp]

IMAGE_SIZE = 8
NUM_REAL = 13
METRIC_CALLBACKS = (FIDCallback, InceptionScoreCallback, KIDCallback, PrecisionRecallCallback)
KEYS = ("fid", "fid_inf", "is", "is_std", "is_inf", "kid", "kid_std", "precision", "recall", "density", "coverage")


class UseFakeExtractor(Callback):
    """Swaps the extractor in the process it runs in; listed first, its ``setup`` runs before the metrics'."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        fake = FakeExtractor()
        self._saved = callbacks_module.get_extractor
        callbacks_module.get_extractor = lambda *args, **kwargs: fake

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        callbacks_module.get_extractor = self._saved


class RecordScores(Callback):
    """Writes, per rank, every metric callback's float64 history and the float32 ``callback_metrics`` after fit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = [cb for cb in trainer.callbacks if isinstance(cb, METRIC_CALLBACKS)]
        record = {
            "history": {cb.name: cb.history for cb in metrics},
            "callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        }
        path = self.directory / f"rank{trainer.global_rank}-of-{trainer.world_size}.json"
        path.write_text(json.dumps(record))


class TinyGAN(pl.LightningModule):
    def __init__(self, latent_dim: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(latent_dim, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 192))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(z)).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        # Each rank draws other latents: after the last step the ranks hold different BatchNorm statistics, and
        # rank 0's are those of the single-process run (the evaluation uses rank 0's).
        seed = self.global_step * 1000 + self.global_rank
        z = torch.randn(4, self.hparams.latent_dim, generator=torch.Generator().manual_seed(seed))
        return (self(z) - batch[0].mean()).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # lr 0: DDP averages the gradients of different shards; a frozen generator is the same in every run.
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _run(root: Path, devices: int, weights: Path) -> dict[str, Any]:
    """This rank's record of one fit on ``devices`` processes (several: inside a launched group, tests/ddp_runs.py)."""
    # Pixels in [-0.25, 0.25], near the generator's spread, so that precision/recall/coverage are not 0 or 1.
    real = (torch.rand(NUM_REAL, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1) / 4
    common = {"num_samples": 14, "batch_size": 4, "inception_weights": weights, "progress": False}
    with_real = {"real": DataLoader(TensorDataset(real), batch_size=4), "cache_dir": root / "cache", **common}
    callbacks = [
        UseFakeExtractor(),
        FIDCallback(log_images=0, extrapolate=True, extrapolation_points=3, **with_real),
        InceptionScoreCallback(splits=2, extrapolate=True, extrapolation_points=3, **common),
        KIDCallback(subsets=3, subset_size=10, **with_real),
        PrecisionRecallCallback(k=3, **with_real),
        RecordScores(root),
    ]
    torch.manual_seed(0)
    model = TinyGAN()
    if devices > 1:
        model, callbacks = roundtrip_pickle((model, callbacks))
    trainer = pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, DataLoader(TensorDataset(real), batch_size=4))
    return json.loads((root / f"rank{trainer.global_rank}-of-{devices}.json").read_text())


def ddp_job(rank: int, world_size: int, workdir: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """One rank's record (tests/ddp_runs.py runs it on 2 and 3 processes)."""
    return _run(workdir, world_size, inputs["inception_weights"])


def _values(record: dict[str, Any]) -> dict[str, float]:
    """The one evaluation's values of every callback, merged into one dict."""
    values: dict[str, float] = {}
    for history in record["history"].values():
        (entry,) = history
        values.update({k: v for k, v in entry.items() if k not in ("epoch", "step")})
    return values


def test_one_two_and_three_processes_log_the_same_values(
    tmp_path: Path, inception_weights_path: Path, ddp_runs: Any
) -> None:
    runs = {
        1: [_run(tmp_path, 1, inception_weights_path)],
        2: ddp_runs.ranks(2, ddp_job),
        3: ddp_runs.ranks(3, ddp_job),
    }
    single = _values(runs[1][0])
    assert set(KEYS) <= set(single)
    for key in ("precision", "recall", "coverage"):
        assert 0 < single[key] < 1, (key, single[key])  # not trivially 0 or 1: a different sample would show
    assert single["kid_num_samples"] == single["pr_num_samples"] == single["fid_num_samples"] == 14

    for devices in (2, 3):
        ranks = runs[devices]
        # Every rank logged the same values (broadcast from rank 0), bit for bit.
        assert all(rank == ranks[0] for rank in ranks[1:])
        values = _values(ranks[0])
        assert values.keys() == single.keys()
        for key in KEYS:
            # The generated features are those of the same global batches, bit for bit; the real features come from
            # other batch compositions (float32 rounding ~1e-7), and FID/IS merge float64 sums in another order.
            # Measured relative differences to 1 process (they depend on the reference's thread count): with 2
            # threads, 2 processes KID 0, FID 4e-9, FID∞ 3.4e-9, 3 processes ~4e-15; with 1 thread (earlier code)
            # up to 3.3e-8 (KID). IS, IS∞ and precision/recall/density/coverage: 0.
            assert values[key] == pytest.approx(single[key], rel=1e-6, abs=1e-9), (devices, key)
        for key in ("precision", "recall", "density", "coverage"):
            assert values[key] == single[key], (devices, key)  # counts of the same decisions
        assert ranks[0]["callback_metrics"]["kid_num_samples"] == 14
