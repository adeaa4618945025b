"""Train the user GAN for 2 epochs from a fixed seed, with or without the metric callbacks; save the end state.

``test_training_is_untouched`` runs this with and without the callbacks under each namespace, each run in a fresh
process, and compares the saved weights bit for bit. The run draws from the global RNG everywhere a real one does:
the data augmentation (``torch.rand`` in ``__getitem__``), the shuffling loader, Dropout, and the generator's
training latents.
"""

from __future__ import annotations

import argparse
import importlib
import random
import warnings
from pathlib import Path

import numpy as np
import torch
import user_models
from torch.utils.data import DataLoader

from lightning_ganeval import FIDCallback, InceptionScoreCallback


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespace", default="lightning.pytorch")
    parser.add_argument("--with-callbacks", action="store_true")
    parser.add_argument("--is-weights", help="also an InceptionScoreCallback, on these Inception weights")
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    pl = importlib.import_module(args.namespace)
    gan = user_models.LitGAN if args.namespace == "lightning.pytorch" else user_models.PLGAN
    root = Path(args.root)

    pl.seed_everything(1234, verbose=False)
    images = user_models.to_tensor01(user_models.mnist_like_uint8(32))
    loader = DataLoader(user_models.JitteredImages(images), batch_size=8, shuffle=True)
    callbacks = []
    if args.with_callbacks:
        callbacks = [
            # Every epoch, real statistics from the (augmenting) training loader, pixel space inferred from it.
            FIDCallback(
                feature_extractor=user_models.TinyFeatures(),
                num_samples=16,
                batch_size=8,
                log_images=0,
                progress=False,
                cache_dir=root / "cache",
            ),
        ]
        if args.is_weights:
            callbacks.append(
                InceptionScoreCallback(
                    num_samples=4, splits=2, batch_size=4, inception_weights=args.is_weights, progress=False
                )
            )
    model = gan(output="tanh")
    trainer = pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, loader)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state()[1].tolist(),
            "steps": model.steps,
            "evaluations": [len(cb.history) for cb in callbacks],
        },
        args.out,
    )


if __name__ == "__main__":
    main()
