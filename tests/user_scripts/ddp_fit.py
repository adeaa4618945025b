"""Fit the user GAN with a LightningDataModule (2 loader workers) on ``--devices`` CPU processes.

With ``--strategy ddp`` Lightning launches this script again for rank 1 (its subprocess launcher); every rank
writes its logged scores to ``--out/rank{r}-of-{w}.json`` (`user_models.RecordScores`).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
import user_models

from lightning_ganeval import FIDCallback


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    fid = FIDCallback(
        feature_extractor=user_models.TinyFeatures(),
        num_samples=16,
        batch_size=4,
        log_images=0,
        progress=False,
        cache_dir=out / "cache",
    )
    torch.manual_seed(0)  # the same initial weights on every rank and in every run
    # lr=0 and latents seeded by (step, rank): rank 0's generator is the single-process run's generator.
    model = user_models.LitGAN(output="sigmoid", lr=0.0, seeded_latents=True)
    trainer = pl.Trainer(
        default_root_dir=out,
        accelerator="cpu",
        devices=args.devices,
        strategy=args.strategy,
        max_epochs=2,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[fid, user_models.RecordScores(out)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=user_models.ImageDataModule(num_workers=2))


if __name__ == "__main__":
    main()
