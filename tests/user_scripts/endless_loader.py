"""Fit with an infinite IterableDataset train loader and FIDCallback(real=None) (the training loader).

``--num-real 0`` leaves ``num_real`` unset: the callback must raise a ValueError that names ``num_real`` before
any training step instead of reading the stream forever. ``--num-real N`` must train and print the FID.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import lightning.pytorch as pl
import user_models
from torch.utils.data import DataLoader

from lightning_ganeval import FIDCallback


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-real", type=int, default=0)
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    fid = FIDCallback(
        feature_extractor=user_models.TinyFeatures(),
        num_samples=16,
        batch_size=8,
        num_real=args.num_real or None,
        log_images=0,
        progress=False,
        cache_dir=f"{args.root}/cache",
    )
    model = user_models.LitGAN(output="sigmoid")
    trainer = pl.Trainer(
        default_root_dir=args.root,
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=2,  # the stream has no end: the epoch needs one
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[fid],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, DataLoader(user_models.EndlessImages(), batch_size=8))
    print(f"TRAINING_STEPS={model.steps}", flush=True)
    print(f"FID={fid.last_score}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
