"""The callbacks on training code as people write it (issue 8): real LightningModules, datasets and Trainers.

A GAN with manual optimization, BatchNorm and Dropout (`user_models.GANMixin`) trains on MNIST-like ``ToTensor``
data, ``Normalize``-d torchvision datasets, dict batches, subsets, an endless stream, a LightningDataModule with
workers; under ``lightning.pytorch`` and ``pytorch_lightning``. The pixel space of the images is inferred from the
real data when nothing is declared, so the tests compare the logged FID with one computed by hand in the right
space (and check that the wrong space would give a clearly different number, so the comparison can fail).

Most runs use `user_models.TinyFeatures` through ``feature_extractor=`` (milliseconds per batch); the tests that
need Inception itself use the random-weight file of the ``inception_weights_path`` fixture with <= 16 samples.
Runs whose outcome depends on the process (bit-identical training, ``strategy="ddp"``, a loader that could hang)
run the scripts of ``tests/user_scripts`` in fresh processes with a timeout (`fresh_python`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import re
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
import user_models
from fakes import quiet_trainer
from fresh_python import script_env
from torch.utils.data import DataLoader, Subset, TensorDataset, random_split
from torchvision import transforms
from user_models import (
    MNIST_MEAN,
    MNIST_STD,
    DictImages,
    FakeVisionDataset,
    ImageDataModule,
    RecordScores,
    TinyFeatures,
    labelled,
    mnist_like_uint8,
    to_tensor01,
)

from lightning_ganeval import FIDCallback, InceptionScoreCallback
from lightning_ganeval.sampling import LatentBank

pytestmark = pytest.mark.slow  # every test runs at least one Trainer

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
NUM_SAMPLES = 16
NUM_REAL = 32
# Hand and callback quantise the same float images; a different but equivalent formula for the affine map
# (e.g. (x - lo) * 255 / (hi - lo) vs (x * std + mean) * 255) can move a value sitting within ~1e-5 of a rounding
# tie to the other integer, which moves FID by ~1e-4 relative. Every test also checks that the wrong pixel space
# is off by far more than this.
FID_RTOL = 1e-3
# Reading the images in the wrong pixel space must move FID by at least this (relative), or a test could not tell.
SEPARATION = 10 * FID_RTOL

# ------------------------------------------------------------------------------------------- namespaces

NAMESPACES = ["lightning.pytorch", "pytorch_lightning"]


def namespace(name: str) -> SimpleNamespace:
    """What a user gets from ``import <name> as pl``, plus the GAN class built on its LightningModule."""
    pl = pytest.importorskip(name)
    callbacks = importlib.import_module(f"{name}.callbacks")
    loggers = importlib.import_module(f"{name}.loggers")
    return SimpleNamespace(
        name=name,
        pl=pl,
        Trainer=pl.Trainer,
        EarlyStopping=callbacks.EarlyStopping,
        ModelCheckpoint=callbacks.ModelCheckpoint,
        TensorBoardLogger=loggers.TensorBoardLogger,
        GAN=user_models.LitGAN if name == "lightning.pytorch" else user_models.PLGAN,
    )


@pytest.fixture(params=NAMESPACES)
def ns(request: pytest.FixtureRequest) -> SimpleNamespace:
    return namespace(request.param)


@pytest.fixture
def lit() -> SimpleNamespace:
    return namespace("lightning.pytorch")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A callback with ``feature_extractor=`` needs no Inception weights: any download attempt fails the test."""

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"the test tried to open a URL: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


# ------------------------------------------------------------------------------------------- helpers


def make_trainer(ns: SimpleNamespace, root: Path, callbacks: list[Any], **kwargs: Any) -> Any:
    return quiet_trainer(ns.Trainer, root, callbacks, **{"num_sanity_val_steps": 0, "log_every_n_steps": 1, **kwargs})


def quiet_fit(trainer: Any, model: Any, *args: Any, **kwargs: Any) -> None:
    """``trainer.fit`` without Lightning's advice (workers, logging intervals) in the output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, *args, **kwargs)


def tiny_fid(tmp_path: Path, **kwargs: Any) -> FIDCallback:
    """An FIDCallback on `TinyFeatures`, 16 samples in 2 batches, no grid, no bars, a per-test cache."""
    options: dict[str, Any] = {
        "feature_extractor": TinyFeatures(),
        "num_samples": NUM_SAMPLES,
        "batch_size": 8,
        "log_images": 0,
        "progress": False,
        "cache_dir": tmp_path / "cache",
    }
    return FIDCallback(**{**options, **kwargs})


def loader(dataset: Any, shuffle: bool = True) -> DataLoader:
    return DataLoader(dataset, batch_size=8, shuffle=shuffle)


class Captured:
    """Collects log records (INFO and above, Lightning's non-propagating loggers included) and warnings."""

    class _Handler(logging.Handler):
        def __init__(self, records: list[logging.LogRecord]) -> None:
            super().__init__(logging.INFO)
            self.records = records

        def emit(self, record: logging.LogRecord) -> None:
            if all(r is not record for r in self.records):
                self.records.append(record)

    def __enter__(self) -> Captured:
        self.records: list[logging.LogRecord] = []
        self._handler = self._Handler(self.records)
        root = logging.getLogger()
        self._loggers = [root] + [
            lg
            for lg in logging.Logger.manager.loggerDict.values()
            if isinstance(lg, logging.Logger) and not lg.propagate
        ]
        for lg in self._loggers:
            lg.addHandler(self._handler)
        self._root_level = root.level
        root.setLevel(min(root.level, logging.INFO))  # as under logging.basicConfig(level=logging.INFO)
        self._catcher = warnings.catch_warnings(record=True)
        self.warnings = self._catcher.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._catcher.__exit__(*exc)
        for lg in self._loggers:
            lg.removeHandler(self._handler)
        logging.getLogger().setLevel(self._root_level)

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records] + [str(w.message) for w in self.warnings]

    def matching(self, pattern: str) -> list[str]:
        return [m for m in self.messages if re.search(pattern, m, flags=re.IGNORECASE)]

    def warned(self, pattern: str) -> list[str]:
        return [str(w.message) for w in self.warnings if re.search(pattern, str(w.message), flags=re.IGNORECASE)]


# "(0, 1)", "[0.0, 1.0]", ... in a message about the inferred space.
SPACE_0_1 = r"[\[(]\s*0(\.0+)?\s*,\s*1(\.0+)?\s*[\])]"


# ------------------------------------------------------------------------------------- FID by hand


def to_pixels(images: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Float images in [low, high] -> uint8 RGB: affine map, clamp to the space, round half to even, tile."""
    x = images.float()
    pixels = torch.round((x.clamp(low, high) - low) * (255.0 / (high - low))).clamp(0, 255).to(torch.uint8)
    return pixels.expand(-1, 3, -1, -1).contiguous()


def unnormalize(images: torch.Tensor, mean: Sequence[float] | float, std: Sequence[float] | float) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return images.float() * torch.as_tensor(std).reshape(shape) + torch.as_tensor(mean).reshape(shape)


def gaussian(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = features.double().numpy()
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Squared Fréchet distance with scipy's matrix square root (the pytorch-fid formula), as the reference."""
    (mu1, s1), (mu2, s2) = a, b
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def generated(model: Any, num_samples: int = NUM_SAMPLES, seed: int = 0) -> torch.Tensor:
    """The generator's samples on the callback's latent bank, in eval mode, as at the last evaluation."""
    z = LatentBank(num_samples, model.hparams.latent_dim, seed=seed).latents()
    was_training = model.training
    model.eval()
    with torch.no_grad():
        images = model(z)
    model.train(was_training)
    return images


def stats_of(pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the `TinyFeatures` of uint8 images (one channel is tiled to three)."""
    with torch.no_grad():
        return gaussian(TinyFeatures()(pixels.expand(-1, 3, -1, -1).contiguous()))


def clamped_fraction(images01: torch.Tensor) -> float:
    """Share of values outside [0, 1] (of the generated images mapped to [0, 1])."""
    return float(((images01 < 0) | (images01 > 1)).float().mean())


def assert_clamped(logged: float, images01: torch.Tensor) -> None:
    """The logged ``<name>_clamped`` counts values clamped away from [0, 1].

    Whether a value within half a quantisation step outside (which rounds to 0 or 255 anyway) counts is the
    implementation's choice: the logged share must lie between "rounds outside [0, 255]" and "outside [0, 1]".
    """
    pixels = torch.round(images01.float() * 255)
    rounded_out = float(((pixels < 0) | (pixels > 255)).float().mean())
    assert rounded_out - 1e-6 <= logged <= clamped_fraction(images01) + 1e-6, (logged, rounded_out)


def metric(trainer: Any, key: str) -> float:
    assert key in trainer.callback_metrics, f"`{key}` not logged; logged: {sorted(trainer.callback_metrics)}"
    return float(trainer.callback_metrics[key])


# ============================================================================ the pixel space of the real data


def test_mnist_like_data_with_tanh_generator_is_read_as_0_1(ns: SimpleNamespace, tmp_path: Path) -> None:
    """The issue's first report: ``ToTensor`` [0, 1] data and a tanh generator were silently read as [-1, 1]."""
    real_uint8 = mnist_like_uint8(NUM_REAL)
    fid = tiny_fid(tmp_path)
    # Seeded: from whatever RNG state earlier tests leave, a generator could end where both readings are within
    # SEPARATION (seen once: 0.75 % apart), and the check that this test can tell would fail by chance. From seed 0
    # they are 4.2 % apart under both namespaces.
    torch.manual_seed(0)
    model = ns.GAN(output="tanh")
    trainer = make_trainer(ns, tmp_path, [fid])
    with Captured() as captured:
        trainer.fit(model, loader(labelled(to_tensor01(real_uint8))))

    inferred = captured.matching("inferred")
    assert len(inferred) == 1, captured.messages  # once, not per evaluation or per side
    assert re.search(SPACE_0_1, inferred[0]), inferred[0]
    assert len(fid.history) == 2

    images, real01 = generated(model), to_tensor01(real_uint8)
    expected = frechet(stats_of(to_pixels(images, 0, 1)), stats_of(real_uint8))
    as_minus1_1 = frechet(stats_of(to_pixels(images, -1, 1)), stats_of(to_pixels(real01, -1, 1)))
    assert abs(as_minus1_1 - expected) > SEPARATION * expected  # the old reading: this test can tell
    assert fid.last_score == pytest.approx(expected, rel=FID_RTOL)
    assert metric(trainer, "fid") == pytest.approx(expected, rel=FID_RTOL)
    # The tanh generator's negative values are clamped to black, and their share is logged.
    assert clamped_fraction(images) > 0.05
    assert_clamped(metric(trainer, "fid_clamped"), images)


def _subset_of_tensor_dataset(root: Path, u8: torch.Tensor) -> tuple[Any, torch.Tensor]:
    indices = list(range(0, len(u8), 2))
    return Subset(labelled(to_tensor01(u8)), indices), u8[indices]


def _random_split_of_vision_dataset(root: Path, u8: torch.Tensor) -> tuple[Any, torch.Tensor]:
    dataset = FakeVisionDataset(root, u8, transform=transforms.ToTensor())
    train, _ = random_split(dataset, [24, 8], generator=torch.Generator().manual_seed(0))
    return train, u8[list(train.indices)]


# name -> (dataset from (root, uint8 images), generator output, pixel space of the data)
DATA_SHAPES: dict[str, tuple[Callable[[Path, torch.Tensor], tuple[Any, torch.Tensor]], str, tuple[float, float]]] = {
    "TensorDataset(images, labels)": (lambda r, u8: (labelled(to_tensor01(u8)), u8), "sigmoid", (0, 1)),
    "TensorDataset(images)": (lambda r, u8: (TensorDataset(to_tensor01(u8)), u8), "sigmoid", (0, 1)),
    "torchvision ToTensor": (
        lambda r, u8: (FakeVisionDataset(r, u8, transform=transforms.ToTensor()), u8),
        "sigmoid",
        (0, 1),
    ),
    "dict image": (lambda r, u8: (DictImages(to_tensor01(u8), "image"), u8), "sigmoid", (0, 1)),
    "dict pixel_values": (lambda r, u8: (DictImages(to_tensor01(u8), "pixel_values"), u8), "sigmoid", (0, 1)),
    "Subset": (_subset_of_tensor_dataset, "sigmoid", (0, 1)),
    "random_split": (_random_split_of_vision_dataset, "sigmoid", (0, 1)),
    "uint8 tensors": (lambda r, u8: (labelled(u8), u8), "x255", (0, 255)),
    "[-1, 1] tensors": (lambda r, u8: (labelled(to_tensor01(u8) * 2 - 1), u8), "tanh", (-1, 1)),
}


@pytest.mark.parametrize("shape", list(DATA_SHAPES))
def test_common_datasets_work_without_arguments(lit: SimpleNamespace, tmp_path: Path, shape: str) -> None:
    """Each dataset layout trains and measures with no extra argument, in the pixel space its values show."""
    make, output, (low, high) = DATA_SHAPES[shape]
    dataset, used_uint8 = make(tmp_path / "data", mnist_like_uint8(NUM_REAL))
    fid = tiny_fid(tmp_path)
    model = lit.GAN(output=output)
    trainer = make_trainer(lit, tmp_path, [fid])
    with Captured() as captured:
        trainer.fit(model, loader(dataset))
    assert len(captured.matching("inferred")) == 1, captured.messages

    images = generated(model)
    expected = frechet(stats_of(to_pixels(images, low, high)), stats_of(used_uint8))
    assert fid.last_score == pytest.approx(expected, rel=FID_RTOL)
    # The same images read in the neighbouring convention would give another number.
    other = (0, 1) if (low, high) != (0, 1) else (-1, 1)
    assert abs(frechet(stats_of(to_pixels(images, *other)), stats_of(used_uint8)) - expected) > SEPARATION * expected
    assert metric(trainer, "fid_clamped") == 0.0  # these generators stay inside the space


def _vision_split(root: Path, u8: torch.Tensor, transform: Any) -> tuple[Any, torch.Tensor]:
    train, _ = random_split(FakeVisionDataset(root, u8, transform), [24, 8], generator=torch.Generator().manual_seed(1))
    return train, u8[list(train.indices)]


def _vision_subset_of_subset(root: Path, u8: torch.Tensor, transform: Any) -> tuple[Any, torch.Tensor]:
    outer = Subset(FakeVisionDataset(root, u8, transform), list(range(4, len(u8))))
    inner = Subset(outer, list(range(0, len(outer), 2)))
    return inner, u8[[4 + i for i in inner.indices]]


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
NORMALIZED: dict[str, tuple[Callable[..., tuple[Any, torch.Tensor]], int, Any, Any, bool]] = {
    # name -> (dataset(root, u8, transform), channels, mean, std, nested Compose)
    "MNIST Normalize": (lambda r, u8, t: (FakeVisionDataset(r, u8, t), u8), 1, (MNIST_MEAN,), (MNIST_STD,), False),
    "MNIST Normalize, random_split": (_vision_split, 1, (MNIST_MEAN,), (MNIST_STD,), False),
    "MNIST Normalize, Subset of Subset, nested Compose": (
        _vision_subset_of_subset,
        1,
        (MNIST_MEAN,),
        (MNIST_STD,),
        True,
    ),
    "CIFAR-like per-channel Normalize": (
        lambda r, u8, t: (FakeVisionDataset(r, u8, t), u8),
        3,
        CIFAR_MEAN,
        CIFAR_STD,
        False,
    ),
}


@pytest.mark.parametrize("case", list(NORMALIZED))
def test_normalize_in_the_dataset_transform_is_found(lit: SimpleNamespace, tmp_path: Path, case: str) -> None:
    """``Normalize((0.1307,), (0.3081,))`` data: the space is ``(pixels01 - mean) / std``, for both sides."""
    make, channels, mean, std, nested = NORMALIZED[case]
    transform: Any = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    if nested:
        transform = transforms.Compose([transforms.Compose([transforms.ToTensor()]), transforms.Normalize(mean, std)])
    u8 = mnist_like_uint8(NUM_REAL, channels=channels)
    dataset, used_uint8 = make(tmp_path / "data", u8, transform)
    fid = tiny_fid(tmp_path)
    # The generator learns the normalised values: no output activation.
    model = lit.GAN(output="linear", image_shape=(channels, 8, 8))
    trainer = make_trainer(lit, tmp_path, [fid])
    with Captured() as captured:
        trainer.fit(model, loader(dataset))
    inferred = captured.matching("inferred")
    assert len(inferred) == 1, captured.messages
    assert f"{mean[0]:g}" in inferred[0], inferred[0]  # it says what it found

    images01 = unnormalize(generated(model), mean, std)
    expected = frechet(stats_of(to_pixels(images01, 0, 1)), stats_of(used_uint8))
    assert fid.last_score == pytest.approx(expected, rel=FID_RTOL)
    # Read as [-1, 1] instead (the old default), the number is another one.
    assert (
        abs(frechet(stats_of(to_pixels(generated(model), -1, 1)), stats_of(used_uint8)) - expected)
        > SEPARATION * expected
    )
    assert_clamped(metric(trainer, "fid_clamped"), images01)


MEAN3, STD3 = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
ImageMap = Callable[[torch.Tensor], torch.Tensor]
DECLARED: dict[str, tuple[dict[str, Any], str, ImageMap, ImageMap]] = {
    # name -> (callback arguments, generator output, real tensors from [0, 1], generated images -> [0, 1])
    "normalize per channel": (
        {"normalize": (MEAN3, STD3)},
        "linear",
        lambda x01: (x01 - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(STD3).view(1, 3, 1, 1),
        lambda g: unnormalize(g, MEAN3, STD3),
    ),
    "normalize scalars": (
        {"normalize": (0.5, 0.5)},
        "tanh",
        lambda x01: (x01 - 0.5) / 0.5,
        lambda g: g * 0.5 + 0.5,
    ),
    "value_range (-1, 1) and real_normalize": (
        {"value_range": (-1, 1), "real_normalize": (tuple(MEAN3), tuple(STD3))},
        "tanh",
        lambda x01: (x01 - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(STD3).view(1, 3, 1, 1),
        lambda g: (g + 1) / 2,
    ),
    "value_range (0, 1) and real_value_range (0, 255)": (
        {"value_range": (0, 1), "real_value_range": (0, 255)},
        "sigmoid",
        lambda x01: x01 * 255,
        lambda g: g,
    ),
}


@pytest.mark.parametrize("case", list(DECLARED))
def test_declared_spaces_are_used_as_declared(lit: SimpleNamespace, tmp_path: Path, case: str) -> None:
    """Pre-normalised tensors (nothing to find in a transform): the declared space, per side, is what counts."""
    kwargs, output, make_real, to01 = DECLARED[case]
    u8 = mnist_like_uint8(NUM_REAL, channels=3)
    fid = tiny_fid(tmp_path, **kwargs)
    model = lit.GAN(output=output, image_shape=(3, 8, 8))
    trainer = make_trainer(lit, tmp_path, [fid])
    with Captured() as captured:
        trainer.fit(model, loader(labelled(make_real(to_tensor01(u8)))))
    assert captured.matching("inferred") == []  # nothing inferred when both sides are declared

    images01 = to01(generated(model))
    expected = frechet(stats_of(to_pixels(images01, 0, 1)), stats_of(u8))
    assert fid.last_score == pytest.approx(expected, rel=FID_RTOL)
    assert_clamped(metric(trainer, "fid_clamped"), images01)


def test_real_npz_keeps_the_minus1_1_default(lit: SimpleNamespace, tmp_path: Path) -> None:
    """With ``real="x.npz"`` there is no real data to look at: the generated side stays [-1, 1], nothing inferred."""
    real_uint8 = mnist_like_uint8(NUM_REAL)
    mu, sigma = stats_of(real_uint8)
    npz = tmp_path / "real.npz"
    np.savez(npz, mu=mu, sigma=sigma)  # a foreign file: no provenance (a warning may say so)
    fid = tiny_fid(tmp_path, real=npz)
    model = lit.GAN(output="tanh")
    trainer = make_trainer(lit, tmp_path, [fid])
    with Captured() as captured:
        # The training data are [0, 1]; they must not change how the generator is read when real= is a file.
        trainer.fit(model, loader(labelled(to_tensor01(real_uint8))))
    assert captured.matching("inferred") == []
    images = generated(model)
    expected = frechet(stats_of(to_pixels(images, -1, 1)), (mu, sigma))
    assert abs(frechet(stats_of(to_pixels(images, 0, 1)), (mu, sigma)) - expected) > SEPARATION * expected
    assert fid.last_score == pytest.approx(expected, rel=FID_RTOL)
    assert metric(trainer, "fid_clamped") == 0.0


# ======================================================================================= out-of-range values


def test_tanh_generator_on_0_1_data_is_clamped_not_refused(lit: SimpleNamespace, tmp_path: Path) -> None:
    """A tanh generator trained on [0, 1] data reaches -0.9: clamped (counted, warned about), never an error."""
    real_uint8 = mnist_like_uint8(NUM_REAL)
    fid = tiny_fid(tmp_path)
    model = lit.GAN(output="tanh_0.9")
    trainer = make_trainer(lit, tmp_path, [fid])
    with Captured() as captured:
        trainer.fit(model, loader(labelled(to_tensor01(real_uint8))))
    images = generated(model)
    assert -0.95 < float(images.min()) < -0.5  # the scenario of the issue
    fraction = clamped_fraction(images)
    assert fraction > 0.2
    assert_clamped(metric(trainer, "fid_clamped"), images)
    assert captured.warned(r"fid_clamped|clamp"), captured.messages  # a large share is worth a warning
    expected = frechet(stats_of(to_pixels(images, 0, 1)), stats_of(real_uint8))
    assert fid.last_score == pytest.approx(expected, rel=FID_RTOL)


def test_generator_inside_the_space_logs_zero_clamped_and_no_warning(lit: SimpleNamespace, tmp_path: Path) -> None:
    fid = tiny_fid(tmp_path)
    trainer = make_trainer(lit, tmp_path, [fid])
    with Captured() as captured:
        trainer.fit(lit.GAN(output="sigmoid"), loader(labelled(to_tensor01(mnist_like_uint8(NUM_REAL)))))
    assert metric(trainer, "fid_clamped") == 0.0
    assert captured.warned("clamp") == []


def _flat(pl_module: Any, z: torch.Tensor) -> torch.Tensor:
    return pl_module(z).flatten(1)


# name -> (GAN output, real images from [0, 1] uint8 images, callback arguments, error pattern)
PREFLIGHT: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor], dict[str, Any], str]] = {
    "[0, 255] generator with [-1, 1] data": ("x255", lambda u8: to_tensor01(u8) * 2 - 1, {}, r"\bgenerated\b"),
    "2-channel generator": (
        "two_channels",
        to_tensor01,
        {},
        r"\bgenerated\b(?s:.*)channel|channel(?s:.*)\bgenerated\b",
    ),
    "int64 generator": ("int64", to_tensor01, {}, r"\bgenerated\b(?s:.*)int64|int64(?s:.*)\bgenerated\b"),
    "NaN generator": ("nan", to_tensor01, {}, r"\bgenerated\b(?s:.*)(NaN|finite)|(NaN|finite)(?s:.*)\bgenerated\b"),
    "flat generator output": ("sigmoid", to_tensor01, {"sample_fn": _flat}, r"\bgenerated\b|sample_fn"),
    "[0, 255] float real data declared (-1, 1)": (
        "tanh",
        lambda u8: u8.float(),
        {"value_range": (-1, 1)},
        r"\breal\b(?s:.*)real_value_range|real_value_range(?s:.*)\breal\b",
    ),
    "4-channel real data": (
        "sigmoid",
        lambda u8: to_tensor01(torch.cat([u8, u8, u8, u8], dim=1)),
        {},
        r"\breal\b(?s:.*)channel|channel(?s:.*)\breal\b",
    ),
    "NaN in real data": (
        "sigmoid",
        lambda u8: to_tensor01(u8).index_put_((torch.tensor([3]),), torch.tensor(float("nan"))),
        {},
        r"\breal\b(?s:.*)(NaN|finite)|(NaN|finite)(?s:.*)\breal\b",
    ),
}


@pytest.mark.parametrize("case", list(PREFLIGHT))
def test_preflight_fails_before_the_first_training_step(lit: SimpleNamespace, tmp_path: Path, case: str) -> None:
    """A bad generator or real batch is found in ``on_train_start``: no epoch of training is lost to it."""
    output, make_real, kwargs, pattern = PREFLIGHT[case]
    model = lit.GAN(output=output)
    trainer = make_trainer(lit, tmp_path, [tiny_fid(tmp_path, **kwargs)])
    with pytest.raises((ValueError, TypeError)) as info:
        quiet_fit(trainer, model, loader(labelled(make_real(mnist_like_uint8(NUM_REAL)))))
    assert re.search(pattern, str(info.value), flags=re.IGNORECASE), str(info.value)
    assert model.steps == 0, f"{model.steps} training steps ran before the error: {info.value}"


def test_gross_range_mismatch_error_says_side_found_declared_and_fix(lit: SimpleNamespace, tmp_path: Path) -> None:
    model = lit.GAN(output="x255")
    trainer = make_trainer(lit, tmp_path, [tiny_fid(tmp_path, value_range=(-1, 1))])
    with pytest.raises(ValueError, match=r"(?i)generated") as info:
        quiet_fit(trainer, model, loader(labelled(to_tensor01(mnist_like_uint8(NUM_REAL)) * 2 - 1)))
    message = str(info.value)
    assert re.search(r"\bgenerated\b", message), message
    assert any(float(v) > 100 for v in re.findall(r"\d+(?:\.\d+)?", message)), message  # what was found
    assert re.search(r"-1(\.0*)?\s*,\s*1", message), message  # what was declared
    assert "value_range" in message, message  # the argument that fixes it
    assert model.steps == 0


def test_preflight_runs_again_after_a_resume(lit: SimpleNamespace, tmp_path: Path) -> None:
    data = labelled(to_tensor01(mnist_like_uint8(NUM_REAL)))
    checkpoint = lit.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    first = make_trainer(lit, tmp_path, [tiny_fid(tmp_path), checkpoint], max_epochs=1, enable_checkpointing=True)
    quiet_fit(first, lit.GAN(output="sigmoid"), loader(data))
    assert Path(checkpoint.last_model_path).is_file()

    # The resumed run's sampling goes wrong (e.g. a sample_fn edited between the runs): found before its first step.
    def broken(pl_module: Any, z: torch.Tensor) -> torch.Tensor:
        return pl_module(z) * 255

    model = lit.GAN(output="sigmoid")
    resumed = make_trainer(lit, tmp_path, [tiny_fid(tmp_path, sample_fn=broken)], max_epochs=3)
    with pytest.raises(ValueError, match=r"(?i)generated"):
        quiet_fit(resumed, model, loader(data), ckpt_path=checkpoint.last_model_path)
    assert model.steps == 0


def _gan_without_forward(pl: Any, attribute: str) -> Any:
    """A GAN written like the Lightning GAN example: no ``forward``, ``training_step`` calls the generator."""

    class GeneratorOnlyGAN(pl.LightningModule):
        def __init__(self, latent_dim: int = 8) -> None:
            super().__init__()
            self.save_hyperparameters()
            generator = torch.nn.Sequential(torch.nn.Linear(latent_dim, 64), torch.nn.Sigmoid())
            setattr(self, attribute, generator)
            self.discriminator = torch.nn.Linear(64, 1)
            self.steps = 0

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.steps += 1
            real = batch[0].flatten(1)
            fake = getattr(self, attribute)(torch.randn(len(real), self.hparams.latent_dim))
            return (self.discriminator(fake) - self.discriminator(real)).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return GeneratorOnlyGAN()


class CountingReads(TensorDataset):
    """Records every index read, to show that nothing was read before an error."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.read: list[int] = []

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        self.read.append(index)
        return super().__getitem__(index)


@pytest.mark.parametrize("attribute", ["generator", "netG"])
def test_module_without_forward_is_refused_before_any_real_data_is_read(
    ns: SimpleNamespace, tmp_path: Path, attribute: str
) -> None:
    """Issue 13.14: a TypeError with the one-line ``sample_fn`` naming the generator, before any image is read."""
    data = CountingReads(to_tensor01(mnist_like_uint8(NUM_REAL)), torch.zeros(NUM_REAL))
    model = _gan_without_forward(ns.pl, attribute)
    trainer = make_trainer(ns, tmp_path, [tiny_fid(tmp_path)])
    with pytest.raises(TypeError, match="defines no `forward`") as info:
        quiet_fit(trainer, model, loader(data))
    assert f"sample_fn=lambda pl_module, z: pl_module.{attribute}(z)" in str(info.value), str(info.value)
    assert data.read == []  # neither the real pass nor the pixel-space inference ran
    assert model.steps == 0

    # The advice, followed, works.
    def sample_fn(pl_module: Any, z: torch.Tensor) -> torch.Tensor:
        return getattr(pl_module, attribute)(z).view(len(z), 1, 8, 8)

    fid = tiny_fid(tmp_path, sample_fn=sample_fn)
    quiet_fit(make_trainer(ns, tmp_path, [fid], max_epochs=1), model, loader(data))
    assert np.isfinite(fid.last_score)


def test_endless_iterable_loader_needs_num_real(tmp_path: Path, fresh_python: Any) -> None:
    """An infinite IterableDataset train loader: a prompt ValueError about ``num_real``, not an endless read."""
    script = "tests/user_scripts/endless_loader.py"
    failing, working = fresh_python.run(
        [[script, "--root", tmp_path / "a"], [script, "--root", tmp_path / "b", "--num-real", "16"]],
        timeout=120,
        env=script_env(OMP_NUM_THREADS="1"),  # the two runs share the cores
    )
    if failing.returncode is None:
        pytest.fail("FIDCallback(real=None) kept reading an endless training loader (killed after 120 s)")
    assert failing.returncode != 0, failing.stdout
    last_error = failing.stderr.strip().splitlines()[-1]
    assert last_error.startswith("ValueError"), failing.stderr[-3000:]
    assert "num_real" in last_error, failing.stderr[-3000:]
    assert "TRAINING_STEPS" not in failing.stdout

    assert working.returncode == 0, f"{working.argv} failed ({working.returncode}):\n{working.stderr[-5000:]}"
    assert "TRAINING_STEPS=2" in working.stdout, working.stdout
    score = float(re.search(r"FID=(\S+)", working.stdout).group(1))
    assert np.isfinite(score), working.stdout
    assert score > 0, working.stdout


# ======================================================================================== training untouched


def assert_training_untouched(without: dict[str, Any], with_: dict[str, Any]) -> None:
    """The same 8 steps, bit-identical weights and the same torch, numpy and Python RNG states after both runs."""
    assert without["steps"] == with_["steps"] == 8
    assert without["state_dict"].keys() == with_["state_dict"].keys()
    differing = [k for k in without["state_dict"] if not torch.equal(without["state_dict"][k], with_["state_dict"][k])]
    assert differing == [], f"weights differ after training with the callbacks: {differing}"
    assert torch.equal(without["torch_rng"], with_["torch_rng"]), "the global torch RNG ends in another state"
    assert without["numpy_rng"] == with_["numpy_rng"]
    assert without["python_rng"] == with_["python_rng"]


def test_training_is_untouched(tmp_path: Path, inception_weights_path: Path, fresh_python: Any) -> None:
    """With seed_everything, a run with the callbacks evaluating every epoch ends bit-identical to one without.

    Each run is a fresh process (`fresh_python`: a pristine fork of an interpreter that has only imported the
    modules, so no state is shared through caches or module globals), under ``lightning.pytorch`` and
    ``pytorch_lightning``. The real statistics are computed from the augmenting, shuffling training loader, and its
    pixel space is inferred from it: all of that must leave the global RNGs as they were. An
    InceptionScoreCallback (real Inception, random weights, 4 samples) runs too.
    """
    namespaces = [n for n in NAMESPACES if importlib.util.find_spec(n) is not None]
    runs = []
    for name in namespaces:
        for case in ("without", "with"):
            options = ["--with-callbacks", "--is-weights", str(inception_weights_path)] if case == "with" else []
            out = tmp_path / f"{name}-{case}"
            runs.append(
                ["tests/user_scripts/train_weights.py", "--namespace", name, "--root", out, "--out", f"{out}.pt"]
            )
            runs[-1] += options
    # One torch thread each: the four runs share the cores (results depend on the thread count, equal for all).
    for result in fresh_python.run(runs, timeout=240, env=script_env(OMP_NUM_THREADS="1")):
        assert result.returncode == 0, f"{result.argv} failed ({result.returncode}):\n{result.stderr[-5000:]}"
    for name in namespaces:
        without = torch.load(tmp_path / f"{name}-without.pt", weights_only=False)
        with_ = torch.load(tmp_path / f"{name}-with.pt", weights_only=False)
        assert with_["evaluations"] == [2, 2], name  # every callback evaluated at both epoch ends
        assert_training_untouched(without, with_)


# ============================================================================ Lightning's monitoring callbacks


def test_tensorboard_grid_early_stopping_and_best_checkpoint(ns: SimpleNamespace, tmp_path: Path) -> None:
    """FID is best at epoch 1: EarlyStopping(patience=1) stops after epoch 2, the best checkpoint is epoch 1's."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fid = tiny_fid(tmp_path, log_images=4)
    stopper = ns.EarlyStopping(monitor="fid", mode="min", patience=1)
    checkpoint = ns.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="fid", mode="min", filename="{epoch}")
    logger = ns.TensorBoardLogger(tmp_path, name="tb")
    trainer = make_trainer(
        ns, tmp_path, [fid, stopper, checkpoint], max_epochs=6, logger=logger, enable_checkpointing=True
    )
    model = ns.GAN(output="sigmoid", lr=0.0, dropout=0.0, drift=2.0, drift_peak=1)
    quiet_fit(trainer, model, loader(labelled(to_tensor01(mnist_like_uint8(NUM_REAL)))))

    values = [h["fid"] for h in fid.history]
    assert len(values) == 3
    assert values[1] < min(values[0], values[2])  # the drifting generator really is best at epoch 1
    assert stopper.stopped_epoch == 2
    assert trainer.current_epoch == 3
    assert Path(checkpoint.best_model_path).name == "epoch=1.ckpt"
    assert float(checkpoint.best_model_score) == pytest.approx(values[1], rel=1e-6)  # logged as float32

    events = EventAccumulator(str(logger.log_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert "fid_samples" in events.Tags()["images"], events.Tags()
    grids = events.Images("fid_samples")
    assert len(grids) == 3  # one per evaluation
    assert (grids[-1].width, grids[-1].height) == (2 * (8 + 2) + 2, 2 * (8 + 2) + 2)  # 2 x 2 grid, padding 2
    assert [s.value for s in events.Scalars("fid")] == pytest.approx(values, rel=1e-6)


def test_every_2_epochs_with_validation_loop_and_checkpoint(ns: SimpleNamespace, tmp_path: Path) -> None:
    """No MisconfigurationException at epoch 0 (no FID yet); checkpoints only where FID was computed."""
    data = labelled(to_tensor01(mnist_like_uint8(NUM_REAL)))
    fid = tiny_fid(tmp_path, every_n_epochs=2)
    checkpoint = ns.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="fid", save_top_k=-1, filename="{epoch}")
    stopper = ns.EarlyStopping(monitor="fid", patience=10, strict=True)
    trainer = make_trainer(
        ns, tmp_path, [fid, checkpoint, stopper], max_epochs=4, enable_checkpointing=True, limit_val_batches=1
    )
    quiet_fit(trainer, ns.GAN(output="sigmoid"), loader(data), val_dataloaders=loader(data, shuffle=False))
    assert [h["epoch"] for h in fid.history] == [1, 3]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch=1.ckpt", "epoch=3.ckpt"]
    assert stopper.stopped_epoch == 0  # never stopped, and strict=True did not fail on epoch 0
    assert trainer.current_epoch == 4


def _white_then_raise(pl_module: Any, z: torch.Tensor) -> torch.Tensor:
    if pl_module.current_epoch >= 1:
        raise RuntimeError("generator exploded at the second evaluation")
    return torch.ones_like(pl_module(z))  # a very bad first FID, so the stopper's best value cannot help later


def test_failed_fit_leaves_early_stopping_as_it_was(ns: SimpleNamespace, tmp_path: Path) -> None:
    data = labelled(to_tensor01(mnist_like_uint8(NUM_REAL)))
    stopper = ns.EarlyStopping(monitor="fid", mode="min", patience=1)
    failing = make_trainer(ns, tmp_path / "failing", [tiny_fid(tmp_path, sample_fn=_white_then_raise), stopper])
    with pytest.raises(RuntimeError, match="generator exploded"):
        quiet_fit(failing, ns.GAN(output="sigmoid"), loader(data))

    def fit_with(early_stopping: Any, root: Path) -> Any:
        torch.manual_seed(0)
        model = ns.GAN(output="sigmoid", lr=0.0, dropout=0.0, drift=2.0, drift_peak=0)  # gets worse every epoch
        trainer = make_trainer(ns, root, [tiny_fid(tmp_path), early_stopping], max_epochs=6)
        quiet_fit(trainer, model, loader(data))
        return trainer

    fresh = ns.EarlyStopping(monitor="fid", mode="min", patience=1)
    reference = fit_with(fresh, tmp_path / "fresh")
    assert fresh.stopped_epoch == 1  # the reference itself stops
    reused = fit_with(stopper, tmp_path / "reused")
    assert stopper.stopped_epoch == fresh.stopped_epoch
    assert reused.current_epoch == reference.current_epoch == 2


def test_fewer_samples_than_features_warn_once_per_run(lit: SimpleNamespace, tmp_path: Path) -> None:
    """FID on fewer samples than features warns, once per fit (two evaluations each); as many samples do not warn.

    64-d `TinyFeatures` stand in for Inception's 2048 (the bound is the feature count of the real statistics);
    `test_inception_defaults_infer_the_space_for_fid_and_is` sees the same warning name 2048 under Inception.
    """
    dims = 64
    data = labelled(to_tensor01(mnist_like_uint8(dims)))
    fid = tiny_fid(tmp_path, feature_extractor=TinyFeatures(num_features=dims), num_samples=4, batch_size=4)
    for run in range(2):  # a second fit with the same callback is another run
        trainer = make_trainer(lit, tmp_path, [fid], max_epochs=2)
        with Captured() as captured:
            trainer.fit(lit.GAN(output="sigmoid"), loader(data))
        about_size = captured.warned(rf"\b{dims}\b features")
        assert len(about_size) == 1, (run, captured.messages)
        assert re.search(r"\b4\b", about_size[0]), about_size[0]  # it names the sample count in use
        assert [h["epoch"] for h in fid.history][-2:] == [0, 1]  # two evaluations, one warning

    fid = tiny_fid(tmp_path, feature_extractor=TinyFeatures(num_features=dims), num_samples=dims, batch_size=dims)
    trainer = make_trainer(lit, tmp_path, [fid], max_epochs=1, limit_train_batches=2)
    with Captured() as captured:
        trainer.fit(lit.GAN(output="sigmoid"), loader(data))
    assert captured.warned(r"features") == []
    assert len(fid.history) == 1


# =========================================================================================== real Inception


def test_inception_defaults_infer_the_space_for_fid_and_is(
    lit: SimpleNamespace, tmp_path: Path, inception_weights_path: Path, extractor: Any
) -> None:
    """No ``feature_extractor``: Inception (random weights), FID and IS sharing a pass, both in the data's space."""
    from lightning_ganeval.inception_score_math import inception_score

    real_uint8 = mnist_like_uint8(4)  # 4 real images and 4 samples: Inception runs ~10 images/s here
    common = {"num_samples": 4, "batch_size": 4, "inception_weights": inception_weights_path, "progress": False}
    fid = FIDCallback(log_images=0, cache_dir=tmp_path / "cache", **common)
    isc = InceptionScoreCallback(splits=2, **common)
    model = lit.GAN(output="sigmoid")
    trainer = make_trainer(lit, tmp_path, [fid, isc], max_epochs=1)
    with Captured() as captured:
        trainer.fit(model, loader(labelled(to_tensor01(real_uint8))))
    assert len(captured.matching("inferred")) == 1, captured.messages
    about_size = captured.warned(r"2048|2,048")  # Inception's 2048 features, more than 4 samples: once per fit
    assert len(about_size) == 1, captured.messages
    assert re.search(r"\b4\b", about_size[0]), about_size[0]
    assert np.isfinite(fid.last_score)
    assert fid.last_score > 0
    assert metric(trainer, "fid_clamped") == 0.0

    images = generated(model, num_samples=4)
    with torch.no_grad():
        right = inception_score(extractor(to_pixels(images, 0, 1)).logits, splits=2)
        wrong = inception_score(extractor(to_pixels(images, -1, 1)).logits, splits=2)
    assert abs(wrong[0] - right[0]) > 1e-3 * right[0]  # random weights still tell the spaces apart
    assert isc.last_score == pytest.approx(right[0], rel=1e-5)
    assert metric(trainer, "is_std") == pytest.approx(right[1], rel=1e-4, abs=1e-6)


# ========================================================================================================= DDP


def _scores(directory: Path, world_size: int) -> list[dict[str, Any]]:
    return [json.loads((directory / f"rank{r}-of-{world_size}.json").read_text()) for r in range(world_size)]


@pytest.mark.ddp
def test_ddp_spawn_and_launched_ddp_log_the_single_process_fid(tmp_path: Path, fresh_python: Any) -> None:
    """2 CPU processes, a LightningDataModule with 2 loader workers each, real=None, launched both ways users do.

    ``ddp_spawn`` from this process, and ``strategy="ddp"`` as users run it: `tests/user_scripts/ddp_fit.py`, which
    Lightning launches again for rank 1. Both fit the run of `run` (the script's settings) and must log its
    single-process FID. The script runs while this process runs the others (most of each is starting processes).
    """
    import lightning.pytorch as pl

    # No MASTER_PORT: this process's ddp_spawn uses the test's own; Lightning picks a free one for the script.
    env = {k: v for k, v in script_env().items() if k not in ("MASTER_PORT", "MASTER_ADDR")}
    script = ["tests/user_scripts/ddp_fit.py", "--devices", "2", "--strategy", "ddp_find_unused_parameters_true"]
    launched = fresh_python.start([[*script, "--out", tmp_path / "ddp"]], timeout=240, env=env)

    def run(root: Path, devices: int) -> list[dict[str, Any]]:
        root.mkdir(parents=True)
        torch.manual_seed(0)
        model = user_models.LitGAN(output="sigmoid", lr=0.0, seeded_latents=True)
        trainer = pl.Trainer(
            default_root_dir=root,
            accelerator="cpu",
            devices=devices,
            strategy="ddp_spawn_find_unused_parameters_true" if devices > 1 else "auto",
            max_epochs=2,
            limit_train_batches=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[tiny_fid(root, batch_size=4), RecordScores(root)],
        )
        quiet_fit(trainer, model, datamodule=ImageDataModule(num_workers=2))
        return _scores(root, devices)

    (single,) = run(tmp_path / "single", 1)
    expected = [h["fid"] for h in single["history"]["fid"]]
    assert len(expected) == 2
    spawned = run(tmp_path / "spawn", 2)
    (result,) = launched()
    assert result.returncode == 0, f"{result.argv} failed ({result.returncode}):\n{result.stderr[-5000:]}"
    for ranks in (spawned, _scores(tmp_path / "ddp", 2)):
        for record in ranks:
            assert record["world_size"] == 2
            assert [h["fid"] for h in record["history"]["fid"]] == pytest.approx(expected, rel=1e-6)
            assert record["callback_metrics"]["fid"] == ranks[0]["callback_metrics"]["fid"]  # same on every rank
            assert record["callback_metrics"]["fid"] == pytest.approx(expected[-1], rel=1e-6)
