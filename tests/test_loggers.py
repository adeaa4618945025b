"""The sample grid reaches every kind of logger: TensorBoard, CSV (a PNG), MLflow (an artifact), W&B (offline).

Each test decodes what the logger stored and compares it pixel for pixel with the grid laid out by hand (PNG is
lossless, so the tolerance is exact equality). The MLflow store is a local folder (``file:``) and W&B runs in
offline mode: nothing leaves the machine.
"""

from __future__ import annotations

import csv
import importlib
import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_nets import LATENT_DIM, TinyFeatures, TinyGenerator, real_images
from torch.utils.data import DataLoader, TensorDataset

from lightning_ganeval import FIDCallback
from lightning_ganeval.callbacks.grids import log_grid

PADDING = 2  # torchvision.utils.make_grid's, as used by log_grid


def sample_images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def expected_grid(images: torch.Tensor) -> torch.Tensor:
    """The grid written out by hand: ceil(sqrt(n)) columns, 2 pixels of black padding around every tile."""
    n, _, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.zeros(3, rows * (h + PADDING) + PADDING, cols * (w + PADDING) + PADDING, dtype=torch.uint8)
    for i, image in enumerate(images):
        top = PADDING + (i // cols) * (h + PADDING)
        left = PADDING + (i % cols) * (w + PADDING)
        grid[:, top : top + h, left : left + w] = image
    return grid


def read_png(source: str | Path | bytes) -> torch.Tensor:
    """A PNG file (or its bytes) as a uint8 ``3 x H x W`` tensor."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def test_expected_grid_layout() -> None:
    # 5 tiles of 8 x 8 in 3 columns and 2 rows.
    assert expected_grid(sample_images(5)).shape == (3, 22, 32)


def test_csv_logger_gets_a_png(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="csv")
    images = sample_images(5)
    assert log_grid([logger], "fid_samples", images, step=7) == ["CSVLogger"]
    path = Path(logger.log_dir) / "images" / "fid_samples_step_00000007.png"
    assert path.is_file()
    assert torch.equal(read_png(path), expected_grid(images))


class MetricsOnly:
    """A logger with neither an image call nor a log folder (duck-typed: Lightning only calls its methods)."""

    name = "metrics-only"


def test_logger_without_images_or_folder_is_skipped() -> None:
    assert log_grid([MetricsOnly()], "fid_samples", sample_images(4), step=0) == []


@pytest.mark.slow
def test_mlflow_file_store_gets_an_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    # MLflow 3 refuses the file store unless asked for it; it is the one store that needs no server or database.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = MLFlowLogger(experiment_name="ganeval", tracking_uri=f"file:{tmp_path / 'mlruns'}")
    images = sample_images(6, seed=1)
    assert log_grid([logger], "fid_samples", images, step=3) == ["mlflow"]
    artifacts = [info.path for info in logger.experiment.list_artifacts(logger.run_id, "fid_samples")]
    assert artifacts == ["fid_samples/step_00000003.png"]
    local = logger.experiment.download_artifacts(logger.run_id, artifacts[0], str(tmp_path / "download"))
    assert torch.equal(read_png(local), expected_grid(images))


@pytest.mark.slow
def test_wandb_offline_gets_an_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "config"),
        "WANDB_DATA_DIR": str(tmp_path / "data"),
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
    }.items():
        monkeypatch.setenv(name, value)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="ganeval")
    images = sample_images(4, seed=2)
    try:
        assert log_grid([logger], "fid_samples", images, step=5) == ["wandb"]
        files = Path(logger.experiment.dir)
    finally:
        logger.experiment.finish()
    (png,) = (files / "media" / "images").glob("fid_samples_*.png")
    assert torch.equal(read_png(png), expected_grid(images))


def test_several_loggers_at_once(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers: list[Any] = [TensorBoardLogger(tmp_path, name="tb"), MetricsOnly(), CSVLogger(tmp_path, name="csv")]
    kinds = ["tensorboard", "CSVLogger"]
    images = sample_images(3, seed=3)
    assert log_grid(loggers, "is_samples", images, step=11) == kinds
    loggers[0].experiment.flush()
    accumulator = EventAccumulator(str(loggers[0].log_dir), size_guidance={"images": 0})
    accumulator.Reload()
    (event,) = accumulator.Images("is_samples")
    assert event.step == 11
    assert torch.equal(read_png(event.encoded_image_string), expected_grid(images))
    assert (Path(loggers[2].log_dir) / "images" / "is_samples_step_00000011.png").is_file()


# ------------------------------------------------------------------------------ inside a Trainer, both namespaces


def _gan_class(pl: Any) -> type:
    class TinyGAN(pl.LightningModule):
        def __init__(self, latent_dim: int = LATENT_DIM) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.generator = TinyGenerator(latent_dim)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.generator(z)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            real = batch[0]
            z = torch.randn(len(real), LATENT_DIM, generator=torch.Generator().manual_seed(self.global_step))
            return ((self(z) - real) ** 2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return TinyGAN


@pytest.mark.slow
@pytest.mark.parametrize("namespace", ["lightning.pytorch", "pytorch_lightning"])
def test_trainer_sends_grids_to_tensorboard_and_csv(tmp_path: Path, namespace: str) -> None:
    pl = importlib.import_module(namespace)
    loggers = importlib.import_module(f"{namespace}.loggers")
    tensorboard = loggers.TensorBoardLogger(tmp_path, name="tb")
    csv_logger = loggers.CSVLogger(tmp_path, name="csv")
    callback = FIDCallback(
        feature_extractor=TinyFeatures(), num_samples=16, batch_size=8, log_images=4, cache_dir=tmp_path / "cache"
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=[tensorboard, csv_logger],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's tips about workers; FID's small-N warning
        trainer.fit(_gan_class(pl)(), DataLoader(TensorDataset(real_images()), batch_size=8))

    # One grid per evaluation (2 epochs x 2 steps: steps 1 and 3), 4 samples in 2 x 2 tiles.
    accumulator = EventAccumulator(str(tensorboard.log_dir), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    events = accumulator.Images("fid_samples")
    assert [e.step for e in events] == [1, 3]
    assert all((e.width, e.height) == (22, 22) for e in events)
    assert [e.step for e in accumulator.Scalars("fid")] == [1, 3]
    pngs = sorted((Path(csv_logger.log_dir) / "images").glob("*.png"))
    assert [p.name for p in pngs] == ["fid_samples_step_00000001.png", "fid_samples_step_00000003.png"]
    for png, event in zip(pngs, events, strict=True):
        decoded = read_png(event.encoded_image_string)
        assert torch.equal(read_png(png), decoded)
    with open(Path(csv_logger.log_dir) / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("fid")]
    assert [float(row["fid"]) for row in rows] == pytest.approx([h["fid"] for h in callback.history], rel=1e-6)


def test_a_grid_that_cannot_be_written_warns_once_and_training_goes_on(tmp_path: Path) -> None:
    """Issue 13.9: ``images/`` of a CSVLogger taken by a file: one warning, the fit ends, every scalar is logged."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    csv_logger = CSVLogger(tmp_path, name="csv")
    Path(csv_logger.log_dir).mkdir(parents=True)
    (Path(csv_logger.log_dir) / "images").write_text("not a folder")
    tensorboard = TensorBoardLogger(tmp_path, name="tb")
    callback = FIDCallback(
        feature_extractor=TinyFeatures(), num_samples=16, batch_size=8, log_images=4, cache_dir=tmp_path / "cache"
    )
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=[csv_logger, tensorboard],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_gan_class(pl)(), DataLoader(TensorDataset(real_images()), batch_size=8))

    failures = [str(w.message) for w in caught if "grid could not be sent" in str(w.message)]
    assert len(failures) == 1, failures  # once for this logger, not once per evaluation
    assert "CSVLogger" in failures[0], failures[0]
    assert "FileExistsError" in failures[0], failures[0]
    assert trainer.current_epoch == 3  # training went on
    assert len(callback.history) == 3
    with open(Path(csv_logger.log_dir) / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("fid")]
    assert [float(row["fid"]) for row in rows] == pytest.approx([h["fid"] for h in callback.history], rel=1e-6)
    # The other logger still got every grid.
    accumulator = EventAccumulator(str(tensorboard.log_dir), size_guidance={"images": 0})
    accumulator.Reload()
    assert [e.step for e in accumulator.Images("fid_samples")] == [1, 3, 5]
