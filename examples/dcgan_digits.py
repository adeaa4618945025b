r"""Train a small DCGAN with Lightning and watch its FID and Inception Score in TensorBoard.

The default data are scikit-learn's 8x8 handwritten digits (1797 images, shipped with scikit-learn, no download),
upsampled to 16x16. At the end of every epoch `FIDCallback` and `InceptionScoreCallback` sample the generator
from a fixed latent bank, run the TF 2015-12-05 FID Inception once for both metrics and log ``fid``, ``is`` and
``is_std``; `EarlyStopping` and `ModelCheckpoint` monitor ``fid``.

Run it::

    python examples/dcgan_digits.py                                # downloads the Inception weights once (~95 MB);
                                                                   # offline: says so and runs on random weights
    python examples/dcgan_digits.py --inception-weights reference  # the published weights or stop (exit 2)
    python examples/dcgan_digits.py --inception-weights PATH       # a local pt_inception-2015-12-05-6726825d.pth
    python examples/dcgan_digits.py --inception-weights random     # offline smoke run; scores NOT comparable
    python examples/dcgan_digits.py --data cifar10 --data-dir ~/data --image-size 32 --accelerator gpu --devices 2 \
        --strategy ddp --num-samples 10000 --num-real 50000 --epochs 50
    tensorboard --logdir lightning_logs

The defaults finish in about 2½ minutes on a 2-core CPU (138 s measured: 6 epochs, 512 real images once, 256
samples per evaluation). Small sample counts make FID biased upwards (it falls
as the sample count grows), so compare numbers only between runs with the same ``--num-samples``/``--num-real``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_ganeval import FIDCallback, InceptionScoreCallback, WeightsError, resolve_weights

NOT_COMPARABLE = "FID/IS computed with these weights are NOT comparable with published scores"


class Generator(nn.Sequential):
    """Latent vector -> 4x4 feature map -> (upsample x2, 3x3 conv) blocks -> tanh image in [-1, 1].

    Upsample + convolution instead of transposed convolutions: no checkerboard artefacts, which Inception features
    (and so FID) pick up long after the digits look right.
    """

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int) -> None:
        ups = int(math.log2(image_size // 4))
        c = width * 2 ** (ups - 1)
        layers: list[nn.Module] = [nn.Linear(latent_dim, c * 16), nn.Unflatten(1, (c, 4, 4))]
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        for i in range(ups):
            out = channels if i == ups - 1 else c // 2
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(c, out, 3, 1, 1, bias=i == ups - 1)]
            layers += [nn.Tanh()] if i == ups - 1 else [nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        super().__init__(*layers)


class Discriminator(nn.Sequential):
    """Strided convolutions halving the side down to 4x4, then one logit (real vs fake)."""

    def __init__(self, channels: int, image_size: int, width: int) -> None:
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c, side = width, image_size // 2
        while side > 4:
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2)]
            c, side = c * 2, side // 2
        layers += [nn.Flatten(), nn.Linear(c * 16, 1)]
        super().__init__(*layers)


def _bce(logits: Tensor, real: bool) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


class DCGAN(L.LightningModule):
    """A DCGAN whose ``forward(z)`` is the generator: the contract the evaluation callbacks sample through."""

    def __init__(
        self, latent_dim: int = 64, channels: int = 1, image_size: int = 16, width: int = 64, lr: float = 2e-4
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # the callbacks read `hparams.latent_dim` to draw their latent bank
        self.automatic_optimization = False  # two optimizers, stepped by hand as in Lightning's GAN template
        self.generator = Generator(latent_dim, channels, image_size, width)
        self.discriminator = Discriminator(channels, image_size, width)

    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z)

    def on_train_start(self) -> None:
        # seed_everything gives every DDP rank the same RNG stream; offset it so ranks draw different training noise.
        # (DDP already synchronised the initial weights; the callbacks' latent bank has its own seed.)
        torch.manual_seed(torch.initial_seed() + self.global_rank)

    def training_step(self, real: Tensor, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.shape[0], self.hparams.latent_dim, device=self.device)
        fake = self(z)
        with self.toggled_optimizer(opt_d):
            d_loss = 0.5 * (_bce(self.discriminator(real), True) + _bce(self.discriminator(fake.detach()), False))
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()
        with self.toggled_optimizer(opt_g):
            g_loss = _bce(self.discriminator(fake), True)  # the non-saturating generator loss
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            opt_g.step()
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss}, prog_bar=True)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        betas = (0.5, 0.999)  # DCGAN paper
        return [
            torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas),
            torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=betas),
        ]


class _ImagesOnly(Dataset):
    """Drop the labels: the GAN and the real-statistics pass both want bare image tensors in [-1, 1]."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Tensor:
        return self.dataset[index][0]


class ImageDataModule(L.LightningDataModule):
    """scikit-learn digits (default, embedded), an image folder, or CIFAR-10; images scaled to [-1, 1]."""

    def __init__(self, data: str = "digits", data_dir: str | None = None, image_size: int = 16, batch_size: int = 64):
        super().__init__()
        if data != "digits" and data_dir is None:
            raise ValueError(f"`--data {data}` needs `--data-dir PATH`.")
        self.data, self.data_dir, self.image_size, self.batch_size = data, data_dir, image_size, batch_size
        self.channels = 1 if data == "digits" else 3  # grayscale is tiled to RGB by the library, not here
        self.dataset: Dataset | None = None

    def prepare_data(self) -> None:
        if self.data == "cifar10":  # runs on one process per node: download once
            from torchvision.datasets import CIFAR10

            CIFAR10(self.data_dir, train=True, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        if self.data == "digits":
            from sklearn.datasets import load_digits

            pixels = torch.as_tensor(load_digits().images, dtype=torch.float32).unsqueeze(1)  # N x 1 x 8 x 8, 0..16
            images = F.interpolate(pixels / 8.0 - 1.0, size=self.image_size, mode="bilinear", align_corners=False)
            self.dataset = _ImagesOnly(torch.utils.data.TensorDataset(images.clamp(-1.0, 1.0)))
            return
        from torchvision import transforms
        from torchvision.datasets import CIFAR10, ImageFolder

        transform = transforms.Compose(
            [
                transforms.Resize(self.image_size),
                transforms.CenterCrop(self.image_size),
                transforms.ToTensor(),
                transforms.Normalize([0.5] * 3, [0.5] * 3),  # [0, 1] -> [-1, 1]
            ]
        )
        if self.data == "folder":
            self.dataset = _ImagesOnly(ImageFolder(self.data_dir, transform=transform))
        else:
            self.dataset = _ImagesOnly(CIFAR10(self.data_dir, train=True, transform=transform))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, drop_last=True)


def _random_weights() -> Path:
    from lightning_ganeval.testing import cached_random_inception_weights

    return cached_random_inception_weights(seed=0)


def inception_weights(spec: str | None) -> tuple[Path, bool]:
    """Resolve ``--inception-weights`` to a file; returns (path, whether it is the published reference file).

    Without the option, a machine that can neither find nor download the weights falls back to seeded random
    weights, says so in one block, and labels every score as not comparable: the example still runs from start to
    finish. ``reference`` (or a PATH) is strict. Only this example falls back; the library never does.

    Raises:
        WeightsError: With ``reference`` or a PATH, if the file is missing or cannot be downloaded.
    """
    if spec == "random":
        return _random_weights(), False
    if spec is None:
        try:
            weights = resolve_weights(None)
        except WeightsError as err:
            info(
                "\n".join(
                    [
                        "=" * 100,
                        "The Inception weights could not be found or downloaded:",
                        f"  {str(err).splitlines()[0]}",
                        "Continuing with SEEDED RANDOM WEIGHTS so that the example runs from start to finish;",
                        f"{NOT_COMPARABLE}. Pass --inception-weights reference to stop here instead, or",
                        "--inception-weights PATH for a local copy of the file.",
                        "=" * 100,
                    ]
                )
            )
            return _random_weights(), False
        return weights.path, weights.is_reference
    weights = resolve_weights(None if spec == "reference" else spec)
    return weights.path, weights.is_reference


class _WeightsNote(L.Callback):
    """Put the provenance of the Inception weights into TensorBoard's text tab, next to the curves it qualifies."""

    def __init__(self, text: str) -> None:
        self.text = text

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.experiment.add_text("inception_weights", self.text, global_step=0)


@rank_zero_only
def info(message: str) -> None:
    print(message, flush=True)


# Each of the two backward passes of a step leaves the other network's parameters without gradients; DDP must be
# told, or it stops at the second backward.
_FIND_UNUSED = {"ddp": "ddp_find_unused_parameters_true", "ddp_spawn": "ddp_spawn_find_unused_parameters_true"}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the docstring's layout; show the defaults that say something (not None, not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # Identity, not equality: a default of 0 (``--seed``) says something, although ``0 == False``.
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return f"{action.help} (default: %(default)s)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    arg = parser.add_argument_group("data").add_argument
    arg("--data", choices=["digits", "folder", "cifar10"], default="digits", help="digits: scikit-learn's, embedded; "
        "folder: a torchvision ImageFolder at --data-dir; cifar10: downloaded to --data-dir")  # fmt: skip
    arg("--data-dir", help="dataset directory for --data folder / cifar10")
    arg("--image-size", type=int, default=16, help="side of the generated images, a power of two >= 8")
    arg = parser.add_argument_group("training").add_argument
    arg("--epochs", type=int, default=6, help="maximum number of epochs")
    arg("--batch-size", type=int, default=32, help="training batch size")
    arg("--latent-dim", type=int, default=64, help="generator input size")
    arg("--width", type=int, default=32, help="base channel count of both networks")
    arg("--lr", type=float, default=2e-4, help="Adam learning rate")
    arg("--patience", type=int, default=3, help="stop after this many FID evaluations without improvement")
    arg("--seed", type=int, default=0, help="seed for the weights, the training noise and the latent bank")
    arg = parser.add_argument_group("evaluation: FID and Inception Score").add_argument
    arg("--num-samples", type=int, default=256, help="generated images per evaluation (published FIDs: 10k or 50k)")
    arg("--num-real", type=int, default=512, help="real images for the FID statistics; 0 = the whole dataset")
    arg("--every-n-epochs", type=int, default=1, help="evaluate at the end of every N-th epoch")
    arg("--splits", type=int, default=10, help="Inception Score splits")
    arg("--inception-weights", metavar="PATH|reference|random", help="a local pt_inception-2015-12-05-6726825d.pth; "
        "'reference': $LIGHTNING_GANEVAL_INCEPTION_WEIGHTS, the torch hub cache or a SHA-256 checked download, else "
        "stop; 'random': seeded random weights (scores NOT comparable). Default: as 'reference', but an offline "
        "machine continues with random weights, labelled")  # fmt: skip
    arg("--resize", choices=["tf1", "antialias"], default="tf1", help="resize to 299 like the reference TF1 code, "
        "or with antialiasing (torchmetrics' default; differs from published numbers)")  # fmt: skip
    arg("--fast", action="store_true", help="fast extractor mode: not reference-exact, do not publish its numbers")
    arg = parser.add_argument_group("hardware and logging").add_argument
    arg("--accelerator", default="auto", help="cpu, gpu, ...")
    arg("--devices", default="auto", help="number of devices, or a list")
    arg("--num-nodes", type=int, default=1, help="number of nodes")
    arg("--strategy", default="auto", help="e.g. ddp (run with find_unused_parameters=True, as a GAN step needs)")
    arg("--precision", default="32-true", help="training precision, e.g. 16-mixed or bf16-mixed")
    arg("--logdir", default="lightning_logs", help="root directory of the TensorBoard logs and checkpoints")
    args = parser.parse_args(argv)
    if args.image_size < 8 or args.image_size & (args.image_size - 1):
        parser.error(f"--image-size must be a power of two >= 8, got {args.image_size}")
    if args.data != "digits" and not args.data_dir:
        parser.error(f"--data {args.data} needs --data-dir PATH")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    # Resolve the weights before anything slow, so that an offline machine stops at once with the library's advice.
    weights_path, is_reference = inception_weights(args.inception_weights)
    note = f"Inception weights: {weights_path} (reference file: {'yes' if is_reference else 'NO'})."
    if not is_reference:
        kind = (
            "random weights (--inception-weights random)" if args.inception_weights == "random" else "not the reference"
        )
        note += f" These are {kind}: {NOT_COMPARABLE}; use them to test the pipeline only."
    info(note)
    L.seed_everything(args.seed, workers=True)

    dm = ImageDataModule(args.data, args.data_dir, args.image_size, args.batch_size)
    model = DCGAN(args.latent_dim, dm.channels, args.image_size, args.width, args.lr)
    shared = {
        "num_samples": args.num_samples,
        "every_n_epochs": args.every_n_epochs,
        "inception_weights": weights_path,
        "resize": args.resize,
        "fast": args.fast,
        "seed": args.seed,
    }
    # real=None: the reference statistics come from the training dataloader's dataset (its first `num_real`
    # images in dataset order, whatever the shuffling), computed once and cached on disk.
    fid = FIDCallback(real=None, num_real=args.num_real or None, **shared)
    inception_score = InceptionScoreCallback(splits=args.splits, **shared)

    logger = TensorBoardLogger(args.logdir, name="dcgan_digits")
    checkpoint = ModelCheckpoint(
        monitor="fid",
        mode="min",
        save_top_k=1,
        every_n_epochs=args.every_n_epochs,
        filename="epoch={epoch}-fid={fid:.3f}",
        auto_insert_metric_name=False,
    )
    # The FID callback makes EarlyStopping check only on epochs with a fresh FID, so patience counts evaluations.
    early_stopping = EarlyStopping(monitor="fid", mode="min", patience=args.patience)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=_FIND_UNUSED.get(args.strategy, args.strategy),
        precision=args.precision,
        logger=logger,
        log_every_n_steps=10,
        callbacks=[fid, inception_score, checkpoint, early_stopping, _WeightsNote(note)],
    )
    trainer.fit(model, datamodule=dm)

    if trainer.is_global_zero:
        best = checkpoint.best_model_score
        print(f"\nFinished {trainer.current_epoch} epochs in {time.perf_counter() - start:.0f} s.")
        best_fid = best.item() if best is not None else float("nan")
        print(f"Best FID: {best_fid:.3f}  checkpoint: {checkpoint.best_model_path}")
        print(f"TensorBoard logs: {logger.log_dir}")
        print(f"Open them with:   tensorboard --logdir {args.logdir}")
        if not is_reference:
            print(f"Reminder: {NOT_COMPARABLE}.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except WeightsError as err:
        # The library's message already says where to put the file; add this script's own switches.
        print(
            f"error: {err}\nThis example also takes --inception-weights PATH (a local copy of the file), or "
            "--inception-weights random (or no --inception-weights at all) for an offline smoke run whose scores are"
            " not comparable.",
            file=sys.stderr,
        )
        sys.exit(2)
