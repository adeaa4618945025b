"""A tiny GAN training script driven by ``LightningCLI``: the callbacks come from the YAML config.

Run by tests/test_cli.py in a subprocess (``python tests/cli_app.py fit --config cfg.yaml``), as a user would.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LightningCLI
from tiny_nets import LATENT_DIM, TinyGenerator, real_images
from torch.utils.data import DataLoader, TensorDataset


class TinyGAN(pl.LightningModule):
    """``forward(z)`` is the generator; the loss pulls samples towards the real batch (enough to change them)."""

    def __init__(self, latent_dim: int = LATENT_DIM, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.generator = TinyGenerator(latent_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        real = batch[0]
        z = torch.randn(len(real), self.hparams.latent_dim)
        return ((self(z) - real) ** 2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class RealImages(pl.LightningDataModule):
    """Random images in [-1, 1] with labels, as ``(image, label)`` batches."""

    def __init__(self, num_images: int = 16, batch_size: int = 8) -> None:
        super().__init__()
        self.num_images, self.batch_size = num_images, batch_size

    def train_dataloader(self) -> DataLoader:
        images = real_images(self.num_images)
        return DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=self.batch_size)


if __name__ == "__main__":
    LightningCLI(TinyGAN, RealImages)
