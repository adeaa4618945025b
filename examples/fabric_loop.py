r"""Train a tiny GAN with Lightning Fabric and score it every epoch with the plain-torch ``Evaluator``.

No Trainer and no callbacks: one :class:`lightning_ganeval.Evaluator` holds FID, Inception Score, KID and
precision/recall. ``evaluator.prepare_real(loader)`` runs one pass over the real images for every metric that
needs them (cached on disk); ``evaluator.evaluate(generator)`` samples a fixed latent bank once per batch, runs
Inception once on each batch for all four metrics and returns the values, identical on every process under DDP.
The same three calls work in a plain PyTorch loop: Fabric is only the training harness here.

The data are scikit-learn's 8x8 handwritten digits (shipped with scikit-learn, no download), upsampled to 16x16.

Run it::

    python examples/fabric_loop.py --inception-weights random   # offline smoke run; scores NOT comparable
    python examples/fabric_loop.py --inception-weights PATH     # a local pt_inception-2015-12-05-6726825d.pth
    python examples/fabric_loop.py                              # $LIGHTNING_GANEVAL_INCEPTION_WEIGHTS, the torch
                                                                # hub cache, else a verified download (~95 MB)
    python examples/fabric_loop.py --accelerator gpu --devices 2 --strategy ddp --num-samples 10000

Scores go to ``<logdir>/fabric_gan/version_N/metrics.csv`` (Fabric's CSVLogger) and to stdout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_ganeval import FID, KID, Evaluator, InceptionScore, PrecisionRecall, get_extractor, resolve_weights

IMAGE_SIZE = 16


class Generator(nn.Sequential):
    """Latent vector -> MLP with BatchNorm -> tanh image in [-1, 1], 1 x 16 x 16."""

    def __init__(self, latent_dim: int, width: int = 128) -> None:
        super().__init__(
            nn.Linear(latent_dim, width),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Linear(width, 2 * width),
            nn.BatchNorm1d(2 * width),
            nn.ReLU(),
            nn.Linear(2 * width, IMAGE_SIZE * IMAGE_SIZE),
            nn.Tanh(),
            nn.Unflatten(1, (1, IMAGE_SIZE, IMAGE_SIZE)),
        )


class Discriminator(nn.Sequential):
    """Image -> one logit (real vs fake)."""

    def __init__(self, width: int = 128) -> None:
        super().__init__(
            nn.Flatten(),
            nn.Linear(IMAGE_SIZE * IMAGE_SIZE, 2 * width),
            nn.LeakyReLU(0.2),
            nn.Linear(2 * width, width),
            nn.LeakyReLU(0.2),
            nn.Linear(width, 1),
        )


def digits(limit: int | None = None) -> TensorDataset:
    """scikit-learn's digits as ``(image,)`` samples, 1 x 16 x 16 in [-1, 1]."""
    from sklearn.datasets import load_digits

    pixels = torch.as_tensor(load_digits().images, dtype=torch.float32).unsqueeze(1)[:limit]  # 0..16
    images = F.interpolate(pixels / 8.0 - 1.0, size=IMAGE_SIZE, mode="bilinear", align_corners=False)
    return TensorDataset(images.clamp(-1.0, 1.0))


def inception_weights(spec: str | None, fabric: L.Fabric) -> Path:
    """``--inception-weights``: a PATH, ``random`` (seeded random weights), or None (the library's resolution)."""
    if spec == "random":
        from lightning_ganeval.testing import cached_random_inception_weights

        with fabric.rank_zero_first():  # one writer; the others wait and read
            return cached_random_inception_weights(seed=0)
    with fabric.rank_zero_first():  # rank 0 downloads if needed; the others then find the file in the cache
        return resolve_weights(spec, progress=fabric.is_global_zero).path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arg = parser.add_argument
    arg("--epochs", type=int, default=5, help="training epochs, one evaluation after each (default: 5)")
    arg("--batch-size", type=int, default=64, help="training batch size (default: 64)")
    arg("--latent-dim", type=int, default=32, help="generator input size (default: 32)")
    arg("--lr", type=float, default=2e-4, help="Adam learning rate (default: 2e-4)")
    arg("--train-size", type=int, default=None, help="use the first N digits only (default: all 1797)")
    arg("--num-samples", type=int, default=256, help="generated images per evaluation (default: 256)")
    arg("--num-real", type=int, default=512, help="real images for the real statistics/features (default: 512)")
    arg("--eval-batch-size", type=int, default=64, help="samples per generator call and Inception pass")
    arg("--splits", type=int, default=10, help="Inception Score splits (default: 10)")
    arg("--kid-subset-size", type=int, default=100, help="KID subset size (default: 100)")
    arg("--kid-subsets", type=int, default=50, help="KID subsets (default: 50)")
    arg("--inception-weights", metavar="PATH|random", help="the weights file, or 'random' for a smoke run (scores "
        "NOT comparable); default: $LIGHTNING_GANEVAL_INCEPTION_WEIGHTS, the hub cache, else a download")  # fmt: skip
    arg("--accelerator", default="cpu", help="cpu, gpu, ... (default: cpu)")
    arg("--devices", default="1", help="number of devices (default: 1)")
    arg("--strategy", default="auto", help="e.g. ddp (default: auto)")
    arg("--seed", type=int, default=0, help="seed of the weights, the training noise and the latent bank")
    arg("--logdir", default="fabric_logs", help="root folder of the CSV logs (default: fabric_logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    fabric = L.Fabric(
        accelerator=args.accelerator,
        devices=devices,
        strategy=args.strategy,
        loggers=CSVLogger(args.logdir, name="fabric_gan"),
    )
    fabric.launch()
    fabric.seed_everything(args.seed)

    dataset = digits(args.train_size)
    train_loader = fabric.setup_dataloaders(
        DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)
    )
    generator, g_opt = _setup(fabric, Generator(args.latent_dim), args.lr)
    discriminator, d_opt = _setup(fabric, Discriminator(), args.lr)

    num_samples = args.num_samples
    num_real = min(args.num_real, len(dataset))
    evaluator = Evaluator(
        [
            FID(),
            InceptionScore(splits=args.splits),
            KID(
                subsets=args.kid_subsets,
                subset_size=min(args.kid_subset_size, num_samples, num_real),
                max_real=num_real,
            ),
            PrecisionRecall(k=3, max_real=num_real),
        ],
        num_samples=num_samples,
        latent_shape=args.latent_dim,
        batch_size=args.eval_batch_size,
        seed=args.seed,
        space=(-1.0, 1.0),  # the generator's tanh output, and the real digits' range
        inception=get_extractor(fabric.device, weights=inception_weights(args.inception_weights, fabric)),
    )
    # The real images through a plain DataLoader: the evaluator shards them over the processes itself (a loader
    # from `fabric.setup_dataloaders` would be sharded twice). Every process calls it; rank 0 writes the cache.
    evaluator.prepare_real(DataLoader(dataset, batch_size=args.eval_batch_size), num_real=num_real)

    for epoch in range(args.epochs):
        start = time.perf_counter()
        for (real,) in train_loader:
            z = torch.randn(len(real), args.latent_dim, device=fabric.device)
            fake = generator(z)
            d_loss = _bce(discriminator(real), True) + _bce(discriminator(fake.detach()), False)
            d_opt.zero_grad()
            fabric.backward(d_loss)
            d_opt.step()
            g_loss = _bce(discriminator(fake), True)
            g_opt.zero_grad()
            fabric.backward(g_loss)
            g_opt.step()
        train_time = time.perf_counter() - start

        start = time.perf_counter()
        # The plain module, not Fabric's wrapper: under DDP every wrapped forward broadcasts the buffers, a
        # collective that processes with different numbers of evaluation batches would not match.
        plain_generator = generator.module
        if fabric.world_size > 1:
            # Each process ends the epoch with BatchNorm statistics of its own last batch; sample every share from
            # rank 0's (the next training step broadcasts them anyway).
            for buffer in plain_generator.buffers():
                torch.distributed.broadcast(buffer, src=0)
        # Every process calls it. The generator runs in eval mode without autograd; its modes, BatchNorm
        # statistics, requires_grad flags and the global random states are restored afterwards.
        scores = evaluator.evaluate(plain_generator).values
        fabric.log_dict({**scores, "d_loss": d_loss.item(), "g_loss": g_loss.item()}, step=epoch)
        fabric.print(
            f"epoch {epoch}: fid={scores['fid']:.3f} is={scores['is']:.3f}±{scores['is_std']:.3f}"
            f" kid={scores['kid']:.5f}±{scores['kid_std']:.5f} precision={scores['precision']:.3f}"
            f" recall={scores['recall']:.3f} (train {train_time:.1f} s, evaluation {time.perf_counter() - start:.1f} s)"
        )
    for logger in fabric.loggers:
        logger.finalize("success")


def _setup(fabric: L.Fabric, module: nn.Module, lr: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    return fabric.setup(module, torch.optim.Adam(module.parameters(), lr=lr, betas=(0.5, 0.999)))


def _bce(logits: Tensor, real: bool) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


if __name__ == "__main__":
    main()
