"""Two and three CPU processes (``ddp``, gloo) log exactly the FID and IS of one process on the same samples.

The processes are those of tests/ddp_runs.py, shared with the other multi-process tests. The callbacks go through a
pickle round trip first (as ``ddp_spawn`` would send them), and the processes cannot see a pytest monkeypatch, so a
small callback placed before them swaps in a cheap stand-in extractor inside each process. The scores are about the
sharding of the latent bank and of the real data, the merge of the accumulators and the logging on every rank,
not about Inception.
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
from fakes import FakeExtractor, half_average
from lightning.pytorch.callbacks import Callback, WeightAveraging
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_ganeval.callbacks.base as callbacks_module
from lightning_ganeval import FIDCallback, InceptionScoreCallback
from lightning_ganeval.stats_files import load_stats

pytestmark = [pytest.mark.slow, pytest.mark.ddp]

IMAGE_SIZE = 8
NUM_REAL = 13  # odd: a DistributedSampler would pad it with a duplicate


class UseFakeExtractor(Callback):
    """Swaps the extractor in the process it runs in; listed first, its ``setup`` runs before the metrics'."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        fake = FakeExtractor()
        self._saved = callbacks_module.get_extractor
        callbacks_module.get_extractor = lambda *args, **kwargs: fake

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        callbacks_module.get_extractor = self._saved


class RecordScores(Callback):
    """Writes, per rank, the callbacks' float64 history and the float32 ``callback_metrics`` after fit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = [cb for cb in trainer.callbacks if isinstance(cb, (FIDCallback, InceptionScoreCallback))]
        record = {
            "history": {cb.name: cb.history for cb in metrics},
            "callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "world_size": trainer.world_size,
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
        # Rank 0 draws the latents of the single-process run, rank 1 others: after the last step the ranks hold
        # different BatchNorm statistics, and rank 0's are those of the single-process run.
        seed = self.global_step * 1000 + self.global_rank
        z = torch.randn(4, self.hparams.latent_dim, generator=torch.Generator().manual_seed(seed))
        return (self(z) - batch[0].mean()).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # lr 0: DDP averages the gradients of different shards; a frozen generator is the same in both runs.
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _run(root: Path, devices: int, weights: Path) -> dict[str, Any]:
    """This rank's record of one fit on ``devices`` processes (several: inside a launched group, tests/ddp_runs.py)."""
    real = torch.rand(NUM_REAL, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    common = {"num_samples": 10, "batch_size": 4, "inception_weights": weights, "progress": False}
    callbacks = [
        UseFakeExtractor(),
        FIDCallback(
            real=DataLoader(TensorDataset(real), batch_size=4),
            cache_dir=root / "cache",
            model_weights="both",
            # A step schedule: 2 batches per epoch, so steps 2 and 4.
            every_n_train_steps=2,
            **common,
        ),
        InceptionScoreCallback(splits=2, **common),
        RecordScores(root),
        # EMAWeightAveraging's closure cannot be pickled for ddp_spawn: the same average from a module function.
        WeightAveraging(avg_fn=half_average),
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
        max_epochs=2,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    train = DataLoader(TensorDataset(real), batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, train)
    return json.loads((root / f"rank{trainer.global_rank}-of-{devices}.json").read_text())


def ddp_job(rank: int, world_size: int, workdir: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """One rank's record (tests/ddp_runs.py runs it on 2 and 3 processes)."""
    return _run(workdir, world_size, inputs["inception_weights"])


def test_two_and_three_processes_log_the_single_process_scores_of_both_weights_on_a_step_schedule(
    tmp_path: Path, inception_weights_path: Path, ddp_runs: Any
) -> None:
    # The callbacks are pickled (the averaging callback is found again in each process). With lr 0 only the
    # BatchNorm running statistics move, and the averaged copy averages them too, so `fid` and `fid_current` differ;
    # each equals the single-process value (rank 0's statistics are used on every rank), on every rank, for 2 and 3
    # processes (13 real images: unequal shards). IS scores the averaged weights too.
    single = _run(tmp_path / "single", 1, inception_weights_path)
    (cached_single,) = (tmp_path / "single" / "cache").glob("real-*.npz")
    stats_single, _ = load_stats(cached_single)
    for devices in (2, 3):
        ranks = ddp_runs.ranks(devices, ddp_job)
        # Every rank logged the same values (broadcast from rank 0), bit for bit.
        for rank in ranks[1:]:
            assert ranks[0] == rank
        assert ranks[0]["world_size"] == devices
        steps = [h["step"] for h in ranks[0]["history"]["fid"]]
        assert steps == [h["step"] for h in single["history"]["fid"]] == [2, 4]
        for entry, reference in zip(ranks[0]["history"]["fid"], single["history"]["fid"], strict=True):
            assert entry["fid"] == pytest.approx(reference["fid"], rel=1e-5)
            assert entry["fid_current"] == pytest.approx(reference["fid_current"], rel=1e-5)
            assert entry["fid"] != pytest.approx(entry["fid_current"], rel=1e-4)
        for key in ("is", "is_std"):
            values_ddp = [h[key] for h in ranks[0]["history"]["is"]]
            assert len(values_ddp) == 2
            # float64 sums merged in another order
            assert values_ddp == pytest.approx([h[key] for h in single["history"]["is"]], rel=1e-6)
        for key in ("fid_num_samples", "is_num_samples"):
            assert ranks[0]["callback_metrics"][key] == single["callback_metrics"][key] == 10

        # The real statistics were sharded without duplicates, merged, and cached once (by rank 0).
        (cached,) = (ddp_runs.folder(devices, ddp_job) / "cache").glob("real-*.npz")
        stats, _ = load_stats(cached)
        assert stats.n == NUM_REAL
        assert cached.name == cached_single.name  # the cache key does not depend on the number of processes
        # Real batches differ between the runs (rank shards), so float32 features differ by rounding (~1e-7).
        torch.testing.assert_close(stats.mean, stats_single.mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stats.cov, stats_single.cov, rtol=1e-5, atol=1e-6)
