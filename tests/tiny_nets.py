"""Small networks shared by the ecosystem tests and the scripts they run in subprocesses (LightningCLI, Fabric).

Importable without Lightning: only torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 8
LATENT_DIM = 8


class TinyFeatures(nn.Module):
    """A fixed random projection of 4 x 4 average-pooled pixels: uint8 ``N x 3 x H x W`` in, ``N x dim`` out.

    A stand-in for a feature network (``feature_extractor=``), cheap enough for CPU tests. It counts its forward
    calls, so tests can check that one evaluation runs it once per batch.
    """

    def __init__(self, dim: int = 8, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(48, dim, generator=generator) / 4)
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"TinyFeatures expects uint8 images, got {images.dtype}.")
        self.calls += 1
        x = F.adaptive_avg_pool2d(images.float() / 127.5 - 1, 4).flatten(1)
        return torch.tanh(x @ self.weight)


class TinyGenerator(nn.Module):
    """``z -> tanh(MLP(z))`` images in [-1, 1], with BatchNorm and Dropout (state the evaluation must restore)."""

    def __init__(self, latent_dim: int = LATENT_DIM, image_size: int = IMAGE_SIZE, dropout: float = 0.2) -> None:
        super().__init__()
        self.image_size = image_size
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(32, 3 * image_size * image_size),
        )
        self.calls = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(self.net(z.flatten(1))).view(-1, 3, self.image_size, self.image_size)


def real_images(n: int = 16, seed: int = 0, image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """``n`` uniform random images in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, image_size, image_size, generator=generator) * 2 - 1


def sample(pl_module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """A ``sample_fn`` given by import path in configs: ``tiny_nets.sample``."""
    return pl_module(z)


def first_item(batch: object) -> torch.Tensor:
    """A ``real_image_fn`` given by import path in configs: the images of an ``(images, ...)`` batch."""
    assert isinstance(batch, (list, tuple)), type(batch)
    return batch[0]
