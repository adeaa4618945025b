"""Training code as users write it, for ``test_user_training_code.py`` and the scripts in ``user_scripts/``.

A GAN LightningModule with manual optimization (two optimizers, BatchNorm and Dropout, ``(images, labels)`` or dict
batches), torchvision-style datasets (PIL images through a ``transform``), a LightningDataModule, and
`TinyFeatures`, a small seeded feature network that stands in for Inception through ``feature_extractor=`` so
that the data paths can be tested in seconds. Importable from ``ddp_spawn`` children and launched scripts (put
``tests/`` on ``PYTHONPATH``), unlike conftest fixtures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as lpl
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset
from torchvision.datasets import VisionDataset

try:
    import pytorch_lightning as ptl
except ImportError:  # the old package name is optional
    ptl = None

LATENT_DIM = 8
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

# ------------------------------------------------------------------------------------------ features


class TinyFeatures(nn.Module):
    """uint8 ``N x 3 x H x W`` -> ``N x num_features``: 4 x 4 average pooling, a fixed random projection, tanh.

    Per sample and deterministic (seeded), so features computed by hand on the same uint8 images are the ones the
    callback computed. Anything but uint8 RGB batches is refused, so a callback feeding floats fails loudly.
    """

    def __init__(self, num_features: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(48, num_features, generator=g) * (4 / math.sqrt(48)))

    def forward(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise TypeError(f"TinyFeatures takes uint8 N x 3 x H x W, got {images.dtype} {tuple(images.shape)}")
        pooled = F.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)
        return torch.tanh((pooled - 0.5) @ self.projection)


# --------------------------------------------------------------------------------------------- models

_OUTPUTS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    # A tanh generator whose last layer was fitted to [0, 1] data: its values reach down to -0.9.
    "tanh_0.9": lambda x: 0.95 * torch.tanh(x) + 0.05,
    # A float generator in [0, 255] (e.g. a DCGAN port that scales its output for saving PNGs).
    "x255": lambda x: (torch.tanh(x) + 1) * 127.5,
    "linear": lambda x: x,
    "int64": lambda x: (torch.tanh(x) * 127.5 + 127.5).long(),
    "nan": lambda x: x * float("nan"),
    "two_channels": lambda x: torch.tanh(x),
}


def image_batch(batch: Any) -> Tensor:
    """The images of a batch the way user code picks them: a tensor, ``(images, labels)`` or a dict."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping):
        return batch["image"] if "image" in batch else batch["pixel_values"]
    return batch[0]


class GANMixin:
    """The body of `LitGAN` / `PLGAN`: a DCGAN-like training step with manual optimization.

    Args:
        latent_dim: Size of ``z`` (saved as a hyperparameter, which is where the callbacks find it).
        image_shape: ``(C, H, W)`` of the generated images.
        output: Output activation, a key of ``_OUTPUTS`` (``"tanh"``, ``"sigmoid"``, ``"x255"``, ...).
        lr: Adam learning rate of both networks (0 freezes the weights; BatchNorm statistics still move).
        dropout: Dropout probability in both networks.
        drift: Adds ``drift * |epoch - drift_peak|`` before the output activation: a generator whose samples are
            best at epoch ``drift_peak`` and worse on both sides, to test EarlyStopping and ModelCheckpoint.
        drift_peak: See ``drift``.
        seeded_latents: Draw the training latents from ``(global_step, global_rank)`` instead of the global RNG, so
            that rank 0 of a DDP run trains on the latents of a single-process run.
    """

    def __init__(
        self,
        latent_dim: int = LATENT_DIM,
        image_shape: Sequence[int] = (1, 8, 8),
        output: str = "tanh",
        lr: float = 2e-3,
        dropout: float = 0.2,
        drift: float = 0.0,
        drift_peak: int = 0,
        seeded_latents: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.image_shape = tuple(image_shape)
        channels = 2 if output == "two_channels" else self.image_shape[0]
        size = math.prod(self.image_shape)
        self.generator = nn.Sequential(
            nn.Linear(latent_dim, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(32, channels * math.prod(self.image_shape[1:])),
        )
        self.discriminator = nn.Sequential(
            nn.Flatten(), nn.Linear(size, 32), nn.LeakyReLU(0.2), nn.Dropout(dropout), nn.Linear(32, 1)
        )
        self.steps = 0  # training_step calls in this process

    def forward(self, z: Tensor) -> Tensor:
        hp = self.hparams
        x = self.generator(z.flatten(1)) + hp.drift * abs(self.current_epoch - hp.drift_peak)
        x = _OUTPUTS[hp.output](x)
        return x.view(len(z), -1, *self.image_shape[1:])

    def _latents(self, n: int) -> Tensor:
        if self.hparams.seeded_latents:
            seed = self.global_step * 1000 + self.global_rank
            return torch.randn(n, self.hparams.latent_dim, generator=torch.Generator().manual_seed(seed))
        return torch.randn(n, self.hparams.latent_dim)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.steps += 1
        real = image_batch(batch).float()
        opt_g, opt_d = self.optimizers()
        fake = self(self._latents(len(real)).to(real.device)).float()
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)

        d_loss = F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
        d_loss = d_loss + F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()

        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.log_dict({"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}, batch_size=len(real))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_brightness", image_batch(batch).float().mean(), batch_size=len(image_batch(batch)))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        lr = self.hparams.lr
        return [
            torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999)),
            torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999)),
        ]


class LitGAN(GANMixin, lpl.LightningModule):
    """`GANMixin` under ``import lightning.pytorch as pl``."""


if ptl is not None:

    class PLGAN(GANMixin, ptl.LightningModule):
        """`GANMixin` under ``import pytorch_lightning as pl``."""


# ------------------------------------------------------------------------------------------- datasets


def mnist_like_uint8(n: int, seed: int = 0, channels: int = 1, size: int = 8) -> Tensor:
    """Mostly black images with bright strokes, uint8 ``n x C x H x W``; both 0 and 255 occur."""
    g = torch.Generator().manual_seed(seed)
    strokes = torch.rand(n, channels, size, size, generator=g) > 0.6
    levels = torch.randint(100, 256, (n, channels, size, size), generator=g)
    images = (strokes * levels).to(torch.uint8)
    images[0, 0, 0, 0], images[0, 0, 0, 1] = 0, 255
    return images


def to_tensor01(images: Tensor) -> Tensor:
    """What ``torchvision.transforms.ToTensor`` makes of uint8 images: float32 in [0, 1]."""
    return images.float() / 255


def labelled(images: Tensor, seed: int = 0) -> TensorDataset:
    """``TensorDataset(images, labels)``, the most common real dataset in tutorials."""
    labels = torch.randint(0, 10, (len(images),), generator=torch.Generator().manual_seed(seed))
    return TensorDataset(images, labels)


class FakeVisionDataset(VisionDataset):
    """torchvision's dataset layout (like ``MNIST``/``CIFAR10``): uint8 arrays, PIL images through ``transform``."""

    def __init__(self, root: str | Path, data: Tensor, transform: Callable | None = None) -> None:
        super().__init__(str(root), transform=transform)
        # H x W for one channel (mode "L"), H x W x 3 for RGB, like torchvision's MNIST.data / CIFAR10.data.
        self.data = data[:, 0].numpy() if data.shape[1] == 1 else data.permute(0, 2, 3, 1).numpy()
        self.targets = [int(t) for t in torch.arange(len(data)) % 10]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(np.ascontiguousarray(self.data[index]))
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


class DictImages(Dataset):
    """Items are dicts, like Hugging Face datasets with a ``set_transform``: ``{key: image, "label": y}``."""

    def __init__(self, images: Tensor, key: str = "image") -> None:
        self.images, self.key = images, key

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {self.key: self.images[index], "label": index % 10}


class JitteredImages(Dataset):
    """[0, 1] images with a random brightness jitter drawn from the global torch RNG (an augmentation)."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        jitter = (torch.rand(()) - 0.5) * 0.2
        return (self.images[index] + jitter).clamp(0, 1), index % 10


class EndlessImages(IterableDataset):
    """An infinite stream of [0, 1] images (a webdataset / streaming setup): no length, no end."""

    def __init__(self, channels: int = 1, size: int = 8) -> None:
        self.channels, self.size = channels, size

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        while True:
            yield torch.rand(self.channels, self.size, self.size, generator=g), 0


class ImageDataModule(lpl.LightningDataModule):
    """MNIST-like ``ToTensor`` images in a shuffling loader with worker processes."""

    def __init__(self, n: int = 32, batch_size: int = 4, num_workers: int = 2) -> None:
        super().__init__()
        self.n, self.batch_size, self.num_workers = n, batch_size, num_workers

    def setup(self, stage: str) -> None:
        self.train_set = labelled(to_tensor01(mnist_like_uint8(self.n)))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


class RecordScores(lpl.Callback):
    """Writes, per rank, the metric callbacks' histories and ``callback_metrics`` after fit (JSON)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        histories = {cb.name: cb.history for cb in trainer.callbacks if hasattr(cb, "history") and hasattr(cb, "name")}
        record = {
            "history": histories,
            "callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "world_size": trainer.world_size,
        }
        path = self.directory / f"rank{trainer.global_rank}-of-{trainer.world_size}.json"
        path.write_text(json.dumps(record))
