"""The sample grid, sent to every logger of the Trainer that can show an image.

Scalars reach every logger through ``pl_module.log``; images have no such common call, so each logger kind gets
its own: TensorBoard's ``add_image``, ``WandbLogger.log_image``, an image artifact for ``MLFlowLogger`` and a PNG in
the log directory of ``CSVLogger`` (and of any other logger that has a ``log_dir`` but no image call).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_ganeval.callbacks._compat import lightning_classes

__all__ = ["log_grid"]


def make_grid(images: Tensor, nrow: int | None = None) -> Tensor:
    """uint8 ``N x 3 x H x W`` → one ``3 x H' x W'`` uint8 grid, ``nrow`` images per row (default: about square)."""
    from torchvision.utils import make_grid as torchvision_grid

    nrow = nrow if nrow is not None else max(1, math.ceil(math.sqrt(len(images))))
    return torchvision_grid(images, nrow=nrow, padding=2)


def log_grid(loggers: list[Any], tag: str, images: Tensor, step: int, *, nrow: int | None = None) -> list[str]:
    """Send the grid of ``images`` to every logger that can show it; returns the kinds it was sent to."""
    grid = make_grid(images, nrow)
    sent = []
    tensorboard = lightning_classes("loggers", "TensorBoardLogger")
    wandb = lightning_classes("loggers", "WandbLogger")
    mlflow = lightning_classes("loggers", "MLFlowLogger")
    for logger in loggers:
        if isinstance(logger, tensorboard):
            logger.experiment.add_image(tag, grid, global_step=step)
            sent.append("tensorboard")
        elif isinstance(logger, wandb):
            logger.log_image(key=tag, images=[grid.permute(1, 2, 0).cpu().numpy()], step=step)
            sent.append("wandb")
        elif isinstance(logger, mlflow):
            logger.experiment.log_image(
                logger.run_id, grid.permute(1, 2, 0).cpu().numpy(), f"{tag}/step_{step:08d}.png"
            )
            sent.append("mlflow")
        elif getattr(logger, "log_dir", None):
            _write_png(Path(logger.log_dir) / "images" / f"{tag}_step_{step:08d}.png", grid)
            sent.append(type(logger).__name__)
    return sent


def _write_png(path: Path, grid: Tensor) -> None:
    # Pillow (a torchvision dependency) rather than torchvision.io, whose encoders are deprecated since 0.29.
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).contiguous().cpu().numpy()).save(path, format="PNG")
