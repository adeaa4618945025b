"""KIDCallback and PrecisionRecallCallback, and FID∞ / IS∞, inside real (tiny, CPU) Trainer runs.

The runs use `RecordingExtractor` (the `FakeExtractor` of ``fakes.py`` that also keeps every output it returned),
so each logged value is compared with a reference implementation applied to exactly the features the callbacks
saw: :func:`kid_from_features`, torch-fidelity's ``kid_features_to_metric`` and ``prc_features_to_metric``, a
direct numpy density/coverage, and FID∞ / IS∞ refitted by hand from prefix scores. One test runs the random-weight
Inception instead, where the network matters (2048-d features).
"""

from __future__ import annotations

import math
import random
import re
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from fakes import FakeExtractor, quiet_trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

import lightning_ganeval.callbacks.base as callbacks_module
from lightning_ganeval import FIDCallback, InceptionScoreCallback, KIDCallback, PrecisionRecallCallback
from lightning_ganeval.evaluator import Evaluator
from lightning_ganeval.frechet import GaussianStats
from lightning_ganeval.images import to_uint8_rgb
from lightning_ganeval.inception import InceptionFeatures
from lightning_ganeval.inception_score_math import inception_score
from lightning_ganeval.metrics import FID, InceptionScore
from lightning_ganeval.metrics.kid import kid_from_features
from lightning_ganeval.pixel_space import PixelSpace
from lightning_ganeval.real_pass import select_real_rows

IMAGE_SIZE = 8
LATENT_DIM = 8
NUM_SAMPLES = 24  # 3 batches of 8
PR_KEYS = ("precision", "recall", "density", "coverage")


# ---------------------------------------------------------------------------------------------- helpers


class TinyGAN(pl.LightningModule):
    """A generator ``forward(z)`` with BatchNorm and Dropout; counts its eval-mode (sampling) calls."""

    def __init__(self, latent_dim: int = LATENT_DIM, dropout: float = 0.0, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(32, 3 * IMAGE_SIZE * IMAGE_SIZE),
        )
        self.sampling_calls: list[int] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.sampling_calls.append(len(z))
        return torch.tanh(self.net(z.flatten(1))).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        real = batch[0]
        # Latents from the step number, not the global RNG (which Lightning does not checkpoint): resumable.
        z = torch.randn(len(real), LATENT_DIM, generator=torch.Generator().manual_seed(self.global_step))
        return ((self(z) - real) ** 2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def real_images(n: int, seed: int = 0) -> torch.Tensor:
    # Pixels in [-0.25, 0.25], about the spread of the initial generator's samples: the k-NN manifolds overlap
    # partly, so that no precision/recall/coverage is 0 or 1 (they are with a wider range).
    return (torch.rand(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1) / 4


def loader(n: int = NUM_SAMPLES, seed: int = 0) -> DataLoader:
    return DataLoader(TensorDataset(real_images(n, seed)), batch_size=8)


class RecordingExtractor(FakeExtractor):
    """A `FakeExtractor` that also keeps the ``(pool, logits)`` of every call, in call order."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.real_log: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def forward(self, images: torch.Tensor) -> InceptionFeatures:
        out = super().forward(images)
        self.log.append((out.pool.clone(), out.logits.clone()))
        return out

    def rows(self, log: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pool, logits)`` of the calls in ``log`` (default: the last evaluation), concatenated."""
        log = self.log if log is None else log
        return torch.cat([p for p, _ in log]), torch.cat([q for _, q in log])


class Phases(Callback):
    """Listed before the metric callbacks: splits the recorder's log into the real pass and the last evaluation.

    The real pass runs in the metric callbacks' ``on_train_start`` (after this one's), evaluations in their
    ``on_train_epoch_end`` (after this one's, which empties the log), and nothing else calls the network.
    """

    def __init__(self, recorder: RecordingExtractor) -> None:
        self.recorder = recorder

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.recorder.log = []
        self.recorder.real_log = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder.real_log is None:
            self.recorder.real_log = list(self.recorder.log)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.recorder.log = []


class CountingNetwork(nn.Module):
    """A user feature network (one ``(N, 24)`` output) that counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 4, 24)
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        x = nn.functional.adaptive_avg_pool2d(images.float() / 127.5 - 1, 4).flatten(1)
        return self.proj(x)


def make_trainer(root: Path, callbacks: list[Callback], **kwargs: Any) -> pl.Trainer:
    return quiet_trainer(pl.Trainer, root, callbacks, **{"max_epochs": 1, "num_sanity_val_steps": 0, **kwargs})


def fit(trainer: pl.Trainer, model: pl.LightningModule, **kwargs: Any) -> None:
    kwargs.setdefault("train_dataloaders", loader())
    with warnings.catch_warnings():
        # The small-N warnings of FID and Lightning's tips are expected here.
        warnings.simplefilter("ignore")
        trainer.fit(model, **kwargs)


def new_model(**kwargs: Any) -> TinyGAN:
    torch.manual_seed(0)  # the same initial weights in every run
    return TinyGAN(**kwargs)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> RecordingExtractor:
    """Make the callbacks use a `RecordingExtractor` (still resolving the weights file as usual)."""
    fake = RecordingExtractor()
    monkeypatch.setattr(callbacks_module, "get_extractor", lambda *args, **kwargs: fake)
    return fake


@pytest.fixture
def common(inception_weights_path: Path, tmp_path: Path) -> dict[str, Any]:
    """Sampling settings shared by the callbacks of a run (equal settings: one shared pass)."""
    return {
        "num_samples": NUM_SAMPLES,
        "batch_size": 8,
        "inception_weights": inception_weights_path,
        "progress": False,
    }


def all_four(common: dict[str, Any], real: DataLoader, cache_dir: Path, **extra: Any) -> list[Callback]:
    """FID and IS (both extrapolated), KID and precision/recall, on one real loader: one pass of everything."""
    with_real = {"real": real, "cache_dir": cache_dir, **common}
    return [
        FIDCallback(log_images=0, extrapolate=True, extrapolation_points=3, **with_real),
        InceptionScoreCallback(splits=2, extrapolate=True, extrapolation_points=3, **common),
        KIDCallback(subsets=4, subset_size=12, **with_real, **extra),
        PrecisionRecallCallback(k=3, **with_real),
    ]


def numpy_density_coverage(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Naeem et al. 2020 from explicit pairwise differences, closed balls, radius = k-th *other* neighbour."""

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    d_rr = dist(real, real)
    np.fill_diagonal(d_rr, np.inf)
    radii = np.sort(d_rr, axis=1)[:, k - 1]
    inside = dist(real, fake) <= radii[:, None]  # (n_real, n_fake)
    return {"density": float(inside.sum() / (k * len(fake))), "coverage": float(inside.any(axis=1).mean())}


def frechet_by_hand(fake: np.ndarray, real: np.ndarray, real_stats: GaussianStats | None = None) -> float:
    """‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(√Σ₂ Σ₁ √Σ₂), float64, with numpy's eigh (covariances may be singular).

    The real side is ``real``'s rows, or ``real_stats`` when given.
    """
    mu1, s1 = fake.mean(0), np.cov(fake, rowvar=False)
    if real_stats is None:
        mu2, s2 = real.mean(0), np.cov(real, rowvar=False)
    else:
        mu2, s2 = real_stats.mean.numpy(), real_stats.cov.numpy()
    w, v = np.linalg.eigh(s2)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s1 @ root), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


def intercept_by_hand(counts: list[int], values: list[float]) -> float:
    """Intercept of the least-squares line value = a + b/N (numpy's polyfit in x = 1/N)."""
    _, intercept = np.polyfit(1.0 / np.asarray(counts, dtype=np.float64), np.asarray(values), 1)
    return float(intercept)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# ------------------------------------------------------------------------------------- bad arguments (fast)


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "match"),
    [
        (KIDCallback, {"num_samples": 10, "subset_size": 20}, ValueError, r"`subset_size` \(20\) must not exceed"),
        (KIDCallback, {"subset_size": 1}, ValueError, "`subset_size` must be an int >= 2, got 1"),
        (KIDCallback, {"subsets": 0}, ValueError, "`subsets` must be an int >= 1, got 0"),
        (KIDCallback, {"kid_seed": -1}, ValueError, "`kid_seed` must be an int >= 0, got -1"),
        (KIDCallback, {"max_real": 1}, ValueError, "`max_real` must be an int >= 2, got 1"),
        (
            KIDCallback,
            {"num_samples": 100, "subset_size": 50, "max_real": 20},
            ValueError,
            r"`subset_size` \(50\) must not exceed `max_real` \(20\)",
        ),
        (KIDCallback, {"real": "x.npz"}, ValueError, r"`real` of KIDCallback must be a DataLoader or None.*'x.npz'"),
        (KIDCallback, {"real": Path("x.npz")}, ValueError, "`real` of KIDCallback must be a DataLoader or None"),
        (KIDCallback, {"real": 3}, TypeError, "`real` must be a path to a .npz statistics file, .* got int"),
        (PrecisionRecallCallback, {"num_samples": 5, "k": 5}, ValueError, r"`k` \(5\) must be smaller than"),
        (PrecisionRecallCallback, {"k": 0}, ValueError, "`k` must be an int >= 1, got 0"),
        (PrecisionRecallCallback, {"block_size": 0}, ValueError, "`block_size` must be an int >= 1, got 0"),
        (PrecisionRecallCallback, {"max_real": 1}, ValueError, "`max_real` must be an int >= 2, got 1"),
        (
            PrecisionRecallCallback,
            {"num_samples": 100, "k": 5, "max_real": 5},
            ValueError,
            r"`k` \(5\) must be smaller than `max_real` \(5\)",
        ),
        (
            PrecisionRecallCallback,
            {"real": "x.npz"},
            ValueError,
            "`real` of PrecisionRecallCallback must be a DataLoader or None",
        ),
        (FIDCallback, {"extrapolation_points": 1}, ValueError, "`extrapolation_points` must be an int >= 2, got 1"),
        (FIDCallback, {"extrapolate": 1}, TypeError, "`extrapolate` must be True or False, got 1"),
        (
            FIDCallback,
            {"extrapolate": True, "extrapolation_points": 5, "num_samples": 9},
            ValueError,
            r"`num_samples` must be an int >= 10 .*extrapolation_points=5.*got 9",
        ),
        (
            InceptionScoreCallback,
            {"extrapolation_points": 1},
            ValueError,
            "`extrapolation_points` must be an int >= 2, got 1",
        ),
        (
            InceptionScoreCallback,
            {"num_samples": 8},  # issue 13.13: the default splits=10 is named, not only "must be >= 10"
            ValueError,
            r"`num_samples` must be an int >= 10 with splits=10 .*got num_samples=8.*`splits=8` or fewer",
        ),
        (
            InceptionScoreCallback,
            {"extrapolate": True, "extrapolation_points": 8, "splits": 1, "num_samples": 7},
            ValueError,
            r"`num_samples` must be an int >= 8 .*extrapolation_points=8.*got 7",
        ),
    ],
)
def test_argument_errors(cls: type, kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_extrapolation_without_extrapolate_needs_no_extra_samples() -> None:
    # The points only bound num_samples when they are used.
    assert FIDCallback(num_samples=2, extrapolation_points=5).num_samples == 2
    assert InceptionScoreCallback(num_samples=2, splits=2, extrapolation_points=5).num_samples == 2


# ---------------------------------------------------------------------------------- FID∞ bias (fast)


class Projection(nn.Module):
    """A fixed random 64-d feature network on raw pixels: cheap, so that N can be large enough to show the bias."""

    def __init__(self, d: int = 64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(3 * IMAGE_SIZE * IMAGE_SIZE, d, generator=g) / 8)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh((images.float().flatten(1) / 127.5 - 1) @ self.w)


def uniform_pixels(z: torch.Tensor) -> torch.Tensor:
    """A generator that is a fixed function of its latents: Gaussian latents to uniform pixels in [-0.9, 0.9]."""
    return 0.9 * torch.special.erf(z / math.sqrt(2)).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_fid_inf_hardly_depends_on_the_sample_count() -> None:
    """FID at N and 2N differ by the 1/N bias; FID∞ from the same samples removes most of it.

    Real statistics of 20,000 uniform images in [-1, 1], the generator uniform in [-0.9, 0.9], d = 64, the
    default 5 points (the smallest prefix N/5 = 200 is well above d: near d FID leaves its 1/N regime and the fit
    is biased). Averaged over 4 latent banks, measured: FID 0.4353 -> 0.2563 and FID∞ 0.0528 -> 0.0768 from
    N = 1000 to 2000, so |ΔFID∞| / |ΔFID| = 0.13 (per bank 0.03 to 0.48: FID∞ is noisier than FID).
    """
    network = Projection()
    real = torch.rand(20_000, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    features = network(to_uint8_rgb(real, PixelSpace.from_value_range(-1, 1), side="real").images).double()
    stats = GaussianStats(n=len(features), mean=features.mean(0), cov=features.T.cov())
    means = {}
    for n in (1000, 2000):
        values = []
        for seed in range(4):
            metric = FID(feature_extractor=network, extrapolate=True)
            evaluator = Evaluator(
                [metric], num_samples=n, latent_shape=3 * IMAGE_SIZE * IMAGE_SIZE, batch_size=500, seed=seed
            )
            evaluator.prepare_real(stats)
            values.append(evaluator.evaluate(uniform_pixels).values)
        means[n] = {key: float(np.mean([v[key] for v in values])) for key in ("fid", "fid_inf")}
    fid_change = means[1000]["fid"] - means[2000]["fid"]
    fid_inf_change = abs(means[1000]["fid_inf"] - means[2000]["fid_inf"])
    assert fid_change > 0.1  # the bias is visible: FID falls with N
    assert 0 < means[1000]["fid_inf"] < means[2000]["fid"]
    assert fid_inf_change < 0.25 * fid_change


def _nan_for_some(z: torch.Tensor) -> torch.Tensor:
    images = 0.5 * torch.tanh(z[:, :1, None, None] * torch.linspace(-2, 2, IMAGE_SIZE)).expand(-1, 3, -1, -1).clone()
    images[z[:, 0] > 0.3] = float("nan")  # a fixed subset of the bank
    return images


def _nan_for_all(z: torch.Tensor) -> torch.Tensor:
    return torch.full((len(z), 3, IMAGE_SIZE, IMAGE_SIZE), float("nan"))


@pytest.mark.parametrize("generate", [_nan_for_some, _nan_for_all], ids=["some-nonfinite", "all-nonfinite"])
def test_extrapolation_over_excluded_nonfinite_samples(generate: Any) -> None:
    """Excluded samples leave chunks with 0 or 1 samples: FID∞/IS∞ fit the prefixes that can be scored.

    10 samples, 5 points: the prefixes are the samples with bank index < 2, 4, 6, 8, 10 that are finite. A
    prefix with fewer than 2 samples (FID) or none (IS), or no more samples than the previous one, is left out of
    the fit; with fewer than 2 prefixes left, or no sample at all, the value is NaN (as KID and IS without
    samples), not an error that would stop training.
    """
    network = RecordingExtractor()
    features = torch.randn(40, FakeExtractor.num_features, generator=torch.Generator().manual_seed(0)).double()
    real = GaussianStats(n=40, mean=features.mean(0), cov=features.T.cov())
    fid = FID(extrapolate=True, extrapolation_points=5)
    isc = InceptionScore(splits=1, extrapolate=True, extrapolation_points=5)
    evaluator = Evaluator([fid, isc], num_samples=10, latent_shape=LATENT_DIM, batch_size=4, inception=network)
    evaluator.prepare_real(real)
    values = evaluator.evaluate(generate).values

    finite = torch.isfinite(generate(evaluator.bank.latents())).flatten(1).all(1)
    pool, logits = (rows[finite] for rows in network.rows())
    index = torch.arange(10)[finite]
    if not finite.any():
        assert values["nonfinite"] == 10
        for key in ("fid", "fid_inf", "is", "is_inf"):
            assert math.isnan(values[key]), key
        return
    assert 0 < values["nonfinite"] < 10
    fid_points, is_points = {}, {}
    for bound in (2, 4, 6, 8, 10):
        n = int((index < bound).sum())
        if n >= 2:
            fid_points[n] = frechet_by_hand(pool[:n].double().numpy(), None, real)
        if n >= 1:
            is_points[n] = inception_score(logits[:n], splits=1)[0]
    assert len(fid_points) < 5  # the bank leaves a chunk short, as intended
    # Fewer samples than d = 16: singular covariances, ~1e-9 apart (see test_fid_inf_and_is_inf_equal_direct_fits).
    assert rel(values["fid"], fid_points[len(index)]) <= 1e-7
    assert rel(values["fid_inf"], intercept_by_hand(list(fid_points), list(fid_points.values()))) <= 1e-7
    assert rel(values["is"], is_points[len(index)]) <= 1e-12
    assert rel(values["is_inf"], intercept_by_hand(list(is_points), list(is_points.values()))) <= 1e-12


# ------------------------------------------------------------------------------ parity (Trainer runs, slow)


@pytest.mark.slow
def test_kid_and_precision_recall_equal_references_on_the_same_features(
    tmp_path: Path, common: dict[str, Any], recorder: RecordingExtractor
) -> None:
    real = loader()
    kid_all = KIDCallback(real=real, subsets=1, subset_size=NUM_SAMPLES, cache_dir=tmp_path, **common)
    kid_subsets = KIDCallback(
        real=real, name="kid4", subsets=4, subset_size=12, kid_seed=3, cache_dir=tmp_path, **common
    )
    pr = PrecisionRecallCallback(real=real, k=3, cache_dir=tmp_path, **common)
    fit(make_trainer(tmp_path, [Phases(recorder), kid_all, kid_subsets, pr]), new_model())
    real_features, _ = recorder.rows(recorder.real_log)
    fake_features, _ = recorder.rows()
    assert real_features.shape == fake_features.shape == (NUM_SAMPLES, FakeExtractor.num_features)
    # The real rows are a seeded uniform sample in the order of its priorities (here: all 24, reordered).
    real_features = real_features[select_real_rows(torch.arange(NUM_SAMPLES), NUM_SAMPLES)]
    (kid,) = kid_all.history
    (kid4,) = kid_subsets.history
    (prdc,) = pr.history

    # KID: the package's own function on the recorded features (identical inputs: bit for bit up to summation).
    mean, std = kid_from_features(real_features, fake_features, subsets=4, subset_size=12, seed=3)
    assert rel(kid4["kid4"], mean) <= 1e-12
    assert rel(kid4["kid4_std"], std) <= 1e-12
    mean, _ = kid_from_features(real_features, fake_features, subsets=1, subset_size=NUM_SAMPLES, seed=0)
    assert rel(kid["kid"], mean) <= 1e-12
    # torch-fidelity with one subset of every sample (its draw is then a permutation, which MMD² ignores), in
    # float64; only the summation order differs: measured relative difference 2.6e-14.
    theirs = kid_features_to_metric(
        real_features.double(),
        fake_features.double(),
        kid_subsets=1,
        kid_subset_size=NUM_SAMPLES,
        rng_seed=1,
        verbose=False,
    )
    assert kid["kid"] > 0
    # float64 on both sides: equal to rounding; the callback's float32 default within 1e-5 of the kernel scale.
    mean64, _ = kid_from_features(
        real_features, fake_features, subsets=1, subset_size=NUM_SAMPLES, seed=0, dtype=torch.float64
    )
    assert rel(mean64, theirs[KEY_METRIC_KID_MEAN]) <= 1e-10
    x, y = real_features.double(), fake_features.double()
    kernel_scale = float(((x @ y.T) / x.shape[1] + 1).pow(3).mean())
    assert abs(kid["kid"] - theirs[KEY_METRIC_KID_MEAN]) <= 1e-5 * kernel_scale
    assert kid["kid_std"] == 0.0 == theirs[KEY_METRIC_KID_STD]
    assert kid["kid_num_samples"] == NUM_SAMPLES

    # Precision/recall: torch-fidelity's prc (input1 = generated); fractions of 24 samples, compared as counts.
    theirs = prc_features_to_metric(fake_features, real_features, prc_neighborhood=3, verbose=False)
    for key in ("precision", "recall"):
        assert round(prdc[key] * NUM_SAMPLES) == round(theirs[key] * NUM_SAMPLES), key
    # Density/coverage: the direct numpy implementation, exactly (ratios of the same integer counts).
    expected = numpy_density_coverage(real_features.double().numpy(), fake_features.double().numpy(), k=3)
    for key in ("density", "coverage"):
        assert prdc[key] == pytest.approx(expected[key], abs=1e-12), key
    # Neither trivially 0 nor 1, so the comparisons above can fail (density may exceed 1).
    for key in ("precision", "recall", "coverage"):
        assert 0 < prdc[key] < 1, (key, prdc)
    assert prdc["density"] > 0
    assert prdc["pr_num_samples"] == NUM_SAMPLES


@pytest.mark.slow
def test_fid_inf_and_is_inf_equal_direct_fits(
    tmp_path: Path, common: dict[str, Any], recorder: RecordingExtractor
) -> None:
    # 4 points over 40 samples in batches of 8: chunk boundaries 10, 20, 30 fall inside batches.
    settings = {**common, "num_samples": 40}
    fid = FIDCallback(
        real=loader(48), log_images=0, extrapolate=True, extrapolation_points=4, cache_dir=tmp_path, **settings
    )
    isc = InceptionScoreCallback(splits=2, extrapolate=True, extrapolation_points=4, **settings)
    fit(make_trainer(tmp_path, [Phases(recorder), fid, isc]), new_model())
    real_features, _ = recorder.rows(recorder.real_log)
    fake_features, logits = recorder.rows()
    assert len(real_features) == 48
    assert len(fake_features) == 40
    real_np, fake_np = real_features.double().numpy(), fake_features.double().numpy()
    counts = [10, 20, 30, 40]
    (values,) = fid.history
    # Prefixes of 10 < d = 16 samples have singular covariances; numpy's eigh handles them.
    fids = [frechet_by_hand(fake_np[:n], real_np) for n in counts]
    # float64 throughout, but the 10-sample prefix's covariance has rank 9 < 16: the product's eigenvalues that are
    # 0 in exact arithmetic come out as ±1e-17, and their square roots (~3e-9) enter the trace differently in each
    # implementation. Measured: FID 1e-15 apart, FID∞ 4.7e-9 (relative).
    assert rel(values["fid"], fids[-1]) <= 1e-9
    assert rel(values["fid_inf"], intercept_by_hand(counts, fids)) <= 1e-7
    assert values["fid_inf"] < values["fid"]  # the bias is positive

    (values,) = isc.history
    scores = [inception_score(logits[:n], splits=1)[0] for n in counts]
    # float64 sums per chunk against float64 sums per prefix: measured 0 and 5e-16.
    assert rel(values["is"], inception_score(logits, splits=2)[0]) <= 1e-12
    assert rel(values["is_inf"], intercept_by_hand(counts, scores)) <= 1e-12
    assert values["is_inf"] != pytest.approx(values["is"], rel=1e-3)  # the fit moved it


@pytest.mark.slow
def test_random_weight_inception_kid_and_precision_recall_equal_torch_fidelity(
    tmp_path: Path, inception_weights_path: Path, extractor: Any
) -> None:
    """The same comparisons on 2048-d pool3 features of the (random-weight) Inception, 6 samples per side."""
    outputs: list[torch.Tensor] = []
    original = extractor.forward

    def recording(images: torch.Tensor) -> InceptionFeatures:
        out = original(images)
        outputs.append(out.pool.clone())
        return out

    n = 6
    settings = {"num_samples": n, "batch_size": n, "inception_weights": inception_weights_path, "progress": False}
    real = DataLoader(TensorDataset(real_images(n)), batch_size=n)
    kid = KIDCallback(real=real, subsets=1, subset_size=n, cache_dir=tmp_path, **settings)
    pr = PrecisionRecallCallback(real=real, k=2, cache_dir=tmp_path, **settings)
    extractor.forward = recording
    try:
        fit(make_trainer(tmp_path, [kid, pr]), new_model(), train_dataloaders=real)
    finally:
        del extractor.forward
    real_features, fake_features = outputs  # one real pass, one evaluation: one batch each
    assert real_features.shape == fake_features.shape == (n, 2048)
    theirs = kid_features_to_metric(
        real_features.double(), fake_features.double(), kid_subsets=1, kid_subset_size=n, rng_seed=1, verbose=False
    )
    # The callback's float32 default: within 1e-5 of the kernel scale (float64 on both sides is checked above).
    x, y = real_features.double(), fake_features.double()
    kernel_scale = float(((x @ y.T) / x.shape[1] + 1).pow(3).mean())
    assert abs(kid.last_score - theirs[KEY_METRIC_KID_MEAN]) <= 1e-5 * kernel_scale
    theirs = prc_features_to_metric(fake_features, real_features, prc_neighborhood=2, verbose=False)
    (values,) = pr.history
    for key in ("precision", "recall"):
        assert round(values[key] * n) == round(theirs[key] * n), key
    expected = numpy_density_coverage(real_features.double().numpy(), fake_features.double().numpy(), k=2)
    for key in ("density", "coverage"):
        assert values[key] == pytest.approx(expected[key], abs=1e-12), key


# ------------------------------------------------------------------------------ one pass, alone, resume


class Counts(Callback):
    """Listed after the metric callbacks: what the generator and the networks had done after each of their hooks."""

    def __init__(self, model: TinyGAN, *networks: Any) -> None:
        self.model, self.networks = model, networks
        self.seen: list[tuple[list[int], list[int]]] = []

    def _snapshot(self) -> None:
        self.seen.append((list(self.model.sampling_calls), [net.calls for net in self.networks]))
        self.model.sampling_calls.clear()
        for net in self.networks:
            net.calls = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._snapshot()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._snapshot()


def histories(callbacks: list[Callback]) -> dict[str, list[dict[str, float]]]:
    return {cb.name: cb.history for cb in callbacks if hasattr(cb, "history")}


@pytest.mark.slow
def test_all_metrics_share_one_generator_pass_and_one_pass_per_network(
    tmp_path: Path, common: dict[str, Any], recorder: RecordingExtractor
) -> None:
    real = loader()
    other = CountingNetwork()
    # The callback with its own network first: it starts the group that the Inception callbacks then join.
    metrics = [
        PrecisionRecallCallback(
            real=real, name="pr24", feature_extractor=other, cache_dir=tmp_path / "cache", **common
        ),
        *all_four(common, real, tmp_path / "cache"),
    ]
    model = new_model()
    counts = Counts(model, recorder, other)
    trainer = make_trainer(tmp_path, [*metrics, counts], max_epochs=2)
    fit(trainer, model)
    batches = NUM_SAMPLES // 8
    assert counts.seen == [
        # on_train_start: one pre-flight call of 2 latents; one real pass (3 batches) feeds FID's moments and the
        # real features of KID and both precision/recall callbacks, each network once per batch.
        ([2], [batches, batches]),
        # each evaluation: the generator once per batch, each network once per batch, for all five callbacks.
        ([8] * batches, [batches, batches]),
        ([8] * batches, [batches, batches]),
    ]
    logged = set(trainer.callback_metrics)
    for callback in metrics:
        assert [h["epoch"] for h in callback.history] == [0, 1]
        assert set(callback._logged_keys()) <= logged
    for key in ("fid_inf", "is_inf", "kid", "kid_std", "precision", "recall", "density", "coverage"):
        assert math.isfinite(float(trainer.callback_metrics[key])), key
    assert {"pr24_precision", "pr24_recall", "pr24_density", "pr24_coverage"} <= logged
    together = histories(metrics)

    # Alone, each new callback logs exactly what it logged in the shared pass (same generator, same samples).
    for alone in (
        KIDCallback(real=real, subsets=4, subset_size=12, cache_dir=tmp_path / "cache", **common),
        PrecisionRecallCallback(real=real, k=3, cache_dir=tmp_path / "cache", **common),
    ):
        fit(make_trainer(tmp_path, [alone], max_epochs=2), new_model())
        assert alone.history == together[alone.name]


@pytest.mark.slow
def test_resume_continues_every_metric_as_the_uninterrupted_run(
    tmp_path: Path, common: dict[str, Any], recorder: RecordingExtractor
) -> None:
    def run(root: Path, max_epochs: int, ckpt_path: str | None = None) -> tuple[list[Callback], ModelCheckpoint]:
        metrics = all_four(common, loader(), root / "cache")
        checkpoint = ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0)
        trainer = make_trainer(root, [*metrics, checkpoint], max_epochs=max_epochs, enable_checkpointing=True)
        fit(trainer, new_model(), ckpt_path=ckpt_path)
        return metrics, checkpoint

    straight, _ = run(tmp_path / "straight", 3)
    first, checkpoint = run(tmp_path / "resumed", 2)
    saved = torch.load(checkpoint.last_model_path, weights_only=False)["callbacks"]
    for callback in first:
        state = saved[callback.state_key]
        expected = {"history", "last_score", "evaluated_epoch", "sampling"}
        if not isinstance(callback, InceptionScoreCallback):
            expected.add("real_fingerprint")  # a digest, not the real features
            assert state["real_fingerprint"] == callback.real_fingerprint is not None
        assert set(state) == expected
        assert [h["epoch"] for h in state["history"]] == [0, 1]

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "other sampling settings" / "real data differ" warning
        resumed, _ = run(tmp_path / "resumed", 3, ckpt_path=checkpoint.last_model_path)
    for before, after, reference in zip(first, resumed, straight, strict=True):
        assert after.history[:2] == before.history == reference.history[:2]
        if not isinstance(after, InceptionScoreCallback):
            assert after._saved_real_fingerprint == after.real_fingerprint == before.real_fingerprint
        (next_values,) = after.history[2:]
        assert next_values.keys() == reference.history[2].keys()
        for key, value in next_values.items():
            # Measured: identical (the same weights, the same latent bank, the same real data).
            assert value == pytest.approx(reference.history[2][key], rel=1e-6, abs=1e-12), (after.name, key)
        assert after.last_score == next_values[after._metric.primary_key()]


# ------------------------------------------------------------------------- errors before training (slow)


class CountingSteps(TinyGAN):
    steps = 0

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        type(self).steps += 1
        return super().training_step(batch, batch_idx)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda common, tmp: KIDCallback(real=loader(8), subset_size=12, cache_dir=tmp, **common),
            r"`kid`: subset_size=12 is larger than the 8 real samples; lower `subset_size` or use more real data",
        ),
        (
            lambda common, tmp: KIDCallback(real=loader(), num_real=10, subset_size=12, cache_dir=tmp, **common),
            r"`kid`: subset_size=12 is larger than the 10 real samples",
        ),
        (
            lambda common, tmp: PrecisionRecallCallback(real=loader(3), k=3, cache_dir=tmp, **common),
            r"`pr`: k=3 needs more than k real samples, got 3; lower `k` or use more real data",
        ),
    ],
    ids=["kid-small-loader", "kid-num-real", "pr-small-loader"],
)
def test_too_few_real_samples_fail_before_training(
    tmp_path: Path, common: dict[str, Any], recorder: RecordingExtractor, make: Any, match: str
) -> None:
    CountingSteps.steps = 0
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=match):
        fit(make_trainer(tmp_path, [make(common, tmp_path / "cache")]), CountingSteps())
    assert CountingSteps.steps == 0


# --------------------------------------------------------------------------------- state restoration (slow)


def training_state(model: nn.Module) -> dict[str, Any]:
    return {
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "grad_enabled": torch.is_grad_enabled(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
    }


def assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["grad_enabled"] == before["grad_enabled"]
    assert after["tensors"].keys() == before["tensors"].keys()
    for key, value in before["tensors"].items():
        assert torch.equal(after["tensors"][key], value), key  # weights and BatchNorm statistics, bit for bit
    assert torch.equal(after["torch_rng"], before["torch_rng"])
    assert all(np.array_equal(a, b) for a, b in zip(after["numpy_rng"], before["numpy_rng"], strict=True))
    assert after["python_rng"] == before["python_rng"]


class StateProbe(Callback):
    """Records the training state in the hooks where the metric callbacks work (listed before and after them)."""

    def __init__(self, mix: bool = False) -> None:
        self.mix = mix
        self.states: list[dict[str, Any]] = []

    def _record(self, pl_module: pl.LightningModule) -> None:
        if self.mix:
            # A mixed state to restore: one submodule in eval mode, one frozen parameter, advanced global RNGs.
            pl_module.net[3].eval()
            pl_module.net[0].weight.requires_grad_(False)
            torch.rand(3)
            np.random.rand(3)
            random.random()
        self.states.append(training_state(pl_module))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(pl_module)


@pytest.mark.slow
def test_real_pass_and_evaluation_leave_the_training_state_untouched(
    tmp_path: Path, common: dict[str, Any], recorder: RecordingExtractor
) -> None:
    before, after = StateProbe(mix=True), StateProbe()
    metrics = all_four(common, loader(), tmp_path / "cache")
    fit(make_trainer(tmp_path, [before, *metrics, after]), new_model(dropout=0.5))
    assert all(len(cb.history) == 1 for cb in metrics)  # the evaluation ran between the probes
    assert len(before.states) == len(after.states) == 2  # on_train_start (real pass), on_train_epoch_end
    for state_before, state_after in zip(before.states, after.states, strict=True):
        assert_same_state(state_before, state_after)
    assert before.states[1]["modes"].count(False) == 1  # the mixed state really was mixed


@pytest.mark.slow
def test_class_sorted_training_data_give_spread_real_rows_and_space_logged_once(
    tmp_path: Path, common: dict[str, Any], recorder: RecordingExtractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An ImageFolder-like TensorDataset sorted by class: the first half of the classes lies in [0, 1], the rest
    # in [-1, 1]. The first batches said [0, 1] and held one class; the callbacks must look over the whole set.
    labels = torch.arange(10).repeat_interleave(20)
    images = real_images(200, seed=5).abs() * 4  # [0, 1]
    images[labels >= 5] = images[labels >= 5] * 2 - 1
    logged: list[str] = []
    for module in ("lightning_ganeval.callbacks._shared_pass", "lightning_ganeval.callbacks.fid"):
        monkeypatch.setattr(f"{module}.rank_zero_info", logged.append)
    kid = KIDCallback(subsets=2, subset_size=12, max_real=40, cache_dir=tmp_path, **common)
    train = DataLoader(TensorDataset(images, labels), batch_size=8)
    fit(make_trainer(tmp_path, [kid], max_epochs=2), new_model(), train_dataloaders=train)
    (space,) = [m for m in logged if "inferred the pixel space" in m]
    assert "value_range=(-1.0, 1.0) from observed range" in space
    assert "64 real images at seeded positions spread over all 200" in space
    # Once per fit (not per epoch), with the number of rows and where they come from.
    assert [m for m in logged if "compares with" in m] == [
        "lightning_ganeval: `kid` compares with 40 real rows, a seeded uniform sample of 200 real images."
    ]
    assert len(kid.history) == 2


# ------------------------------------------------------------------------ messages that name the right culprit


def test_a_torch_file_as_real_statistics_says_an_npz_is_expected(
    tmp_path: Path, common: dict[str, Any], recorder: RecordingExtractor
) -> None:
    """Issue 13.13: ``real="stats.pt"`` says that a ``.npz`` with ``mu`` and ``sigma`` is expected."""
    stats = tmp_path / "stats.pt"
    torch.save({"mu": torch.zeros(16), "sigma": torch.eye(16)}, stats)
    CountingSteps.steps = 0
    with pytest.raises(ValueError, match=r"stats\.pt.*PyTorch file.*\.npz archive holding 'mu' \(d,\) and 'sigma'"):
        fit(make_trainer(tmp_path, [FIDCallback(real=stats, log_images=0, **common)]), CountingSteps())
    assert CountingSteps.steps == 0


@pytest.mark.slow
def test_nan_inception_weights_blame_the_weights_file(tmp_path: Path, common: dict[str, Any]) -> None:
    """Issue 13.13: NaN weights are reported as a problem of the weights file, before any real image is read."""
    state = torch.load(common["inception_weights"], map_location="cpu", weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    broken = tmp_path / "nan-inception.pth"
    torch.save(state, broken)
    read: list[int] = []

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return NUM_SAMPLES

        def __getitem__(self, index: int) -> torch.Tensor:
            read.append(index)
            return real_images(1, seed=index)[0]

    callbacks = [
        FIDCallback(real=DataLoader(Images(), batch_size=8), log_images=0, **{**common, "inception_weights": broken})
    ]
    with pytest.raises(ValueError, match="weights file") as info:
        fit(make_trainer(tmp_path, callbacks), new_model())
    message = str(info.value)
    assert str(broken) in message, message
    assert re.search(r"NaN or Inf in 1 tensor\(s\) \(" + re.escape(key), message), message
    assert "real images" not in message, message  # not "Checking the real images ..."
    assert read == []  # found before the real pass


# ------------------------------------------------------------------ equivalent sample_fn: one pass, not one each


class _Sampler:
    """A callable object: whether two instances sample alike cannot be read from their code."""

    def __call__(self, pl_module: pl.LightningModule, z: torch.Tensor) -> torch.Tensor:
        return pl_module(z)


def _scaled_by(factor: float) -> Any:
    return lambda pl_module, z: pl_module(z) * factor


@pytest.mark.slow
def test_one_lambda_per_callback_shares_one_pass(
    tmp_path: Path, common: dict[str, Any], recorder: RecordingExtractor
) -> None:
    """Issue 13.15: four callbacks, each with its own equivalent lambda, sample and extract once per batch."""
    real = loader()
    with_real = {"real": real, "cache_dir": tmp_path / "cache", **common}
    # Written out per callback, as people do; `real_image_fn` likewise (one real pass, not three).
    metrics = [
        FIDCallback(
            log_images=0, sample_fn=lambda pl_module, z: pl_module(z), real_image_fn=lambda b: b[0], **with_real
        ),
        InceptionScoreCallback(splits=2, sample_fn=lambda pl_module, z: pl_module(z), **common),
        KIDCallback(
            subsets=4,
            subset_size=12,
            sample_fn=lambda pl_module, z: pl_module(z),
            real_image_fn=lambda b: b[0],
            **with_real,
        ),
        PrecisionRecallCallback(
            k=3, sample_fn=lambda pl_module, z: pl_module(z), real_image_fn=lambda b: b[0], **with_real
        ),
    ]
    model = new_model()
    counts = Counts(model, recorder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(tmp_path, [*metrics, counts]).fit(model, train_dataloaders=loader())
    batches = NUM_SAMPLES // 8
    # One pre-flight and one real pass, then one generator pass and one network pass per batch: not four each.
    assert counts.seen == [([2], [batches]), ([8] * batches, [batches])]
    assert not [w for w in caught if "sample_fn" in str(w.message)]
    for callback in metrics:
        assert [h["epoch"] for h in callback.history] == [0]

    # Functions that differ in what they capture are meant to differ: separate passes, no warning.
    scale = [1.0, 0.5]
    apart = [
        FIDCallback(log_images=0, sample_fn=_scaled_by(s), name=f"fid{i}", **with_real) for i, s in enumerate(scale)
    ]
    model = new_model()
    counts = Counts(model, recorder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(tmp_path, [*apart, counts]).fit(model, train_dataloaders=loader())
    assert counts.seen[1] == ([8] * batches * 2, [batches * 2])
    assert not [w for w in caught if "sample_fn" in str(w.message)]

    # Callable objects cannot be compared: separate passes, and one warning that says how to share one.
    objects = [
        FIDCallback(log_images=0, sample_fn=_Sampler(), **with_real),
        InceptionScoreCallback(splits=2, sample_fn=_Sampler(), **common),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(tmp_path, objects).fit(new_model(), train_dataloaders=loader())
    messages = [str(w.message) for w in caught if "`sample_fn` objects" in str(w.message)]
    assert len(messages) == 1, messages
    assert "pass the same function object to every callback" in messages[0]
