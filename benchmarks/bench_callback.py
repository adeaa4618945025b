"""Cost of one evaluation by the callbacks against the bare generator + Inception forward on the same samples.

A DCGAN-style generator (latent 128 -> 3 x 32 x 32, BatchNorm, ``tanh``) trains for a few one-step epochs with an
:class:`~lightning_ganeval.FIDCallback` and an :class:`~lightning_ganeval.InceptionScoreCallback` attached (same
sampling settings, so one pass feeds both). Two timing callbacks around them measure their whole
``on_train_epoch_end`` work: sampling, ``to_uint8_rgb``, Inception, the FID moments and IS marginals, the merge,
the Fréchet distance against a full-rank reference and the logging. In the same hook (so that a noisy neighbour
slows both alike), the bare cost is timed: the same generator on the same latents in eval mode under
``no_grad``, the plain ``(x + 1) * 127.5`` uint8 conversion and the extractor forward, batch by batch. The first
epoch is a warm-up; medians over the others are reported. The bare pass alternates between before and after the
callbacks from epoch to epoch. Because two long passes on a shared machine can differ by more than the few
percent at stake, the work a pass adds (checks and uint8 conversion, FID moments, IS marginals) is also timed alone
and reported as ``(bare + additions) / bare``.

The real statistics are loaded from an ``.npz`` in ``on_train_start`` (once per run, not timed). Random Inception
weights (:func:`lightning_ganeval.testing.write_random_inception_weights`) cost exactly what the real ones cost.

Usage::

    python benchmarks/bench_callback.py            # 256 samples, batch 64, 4 timed evaluations
    python benchmarks/bench_callback.py --quick    # 64 samples, 2 timed evaluations
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from run_all import format_table  # the one table format of benchmarks/
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_ganeval.callbacks.base as callbacks_module
from lightning_ganeval import FIDCallback, InceptionScoreCallback
from lightning_ganeval.accumulators import FIDMoments, ISMarginals
from lightning_ganeval.feature_network import network_provenance
from lightning_ganeval.frechet import GaussianStats
from lightning_ganeval.images import to_uint8_rgb
from lightning_ganeval.inception import get_extractor
from lightning_ganeval.sampling import LatentBank, check_generated
from lightning_ganeval.stats_files import save_stats
from lightning_ganeval.testing import cached_random_inception_weights

LATENT_DIM = 128
BATCH_SIZE = 64


class DCGAN(pl.LightningModule):
    """DCGAN generator for 32 x 32 images, trained with a placeholder loss (the loss is not what is measured)."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, width * 4, 4, 1, 0, bias=False),  # 4 x 4
            nn.BatchNorm2d(width * 4),
            nn.ReLU(True),
            *up(width * 4, width * 2),  # 8 x 8
            *up(width * 2, width),  # 16 x 16
            nn.ConvTranspose2d(width, 3, 4, 2, 1),  # 32 x 32
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(len(z), -1, 1, 1))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        z = torch.randn(len(batch[0]), self.hparams.latent_dim, device=self.device)
        return (self(z) - batch[0]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=2e-4, betas=(0.5, 0.999))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bare_pass(pl_module: pl.LightningModule, extractor: Any, latents: torch.Tensor) -> float:
    """The same generator on the same latents in eval mode, plain uint8 conversion, the extractor: seconds."""
    device = pl_module.device
    training = pl_module.training
    _sync(device)
    started = time.perf_counter()
    with torch.no_grad():
        pl_module.eval()
        for z in latents.split(BATCH_SIZE):
            images = pl_module(z.to(device))
            extractor(((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
        _sync(device)
    elapsed = time.perf_counter() - started
    pl_module.train(training)
    return elapsed


class _Timer(Callback):
    """Placed before and after the metric callbacks: times their ``on_train_epoch_end`` and the bare pass.

    The bare pass runs before the callbacks on odd epochs and after them on even ones, so that a slow drift of
    the machine (other processes) does not favour either side.
    """

    def __init__(self, extractor: Any, latents: torch.Tensor) -> None:
        self.extractor, self.latents = extractor, latents
        self.started = 0.0
        self.ours: list[float] = []
        self.bare: list[float] = []

    def start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch % 2 == 1:
            self.bare.append(_bare_pass(pl_module, self.extractor, self.latents))
        _sync(pl_module.device)
        self.started = time.perf_counter()

    def stop(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(pl_module.device)
        self.ours.append(time.perf_counter() - self.started)
        if trainer.current_epoch % 2 == 0:
            self.bare.append(_bare_pass(pl_module, self.extractor, self.latents))


class _Start(Callback):
    def __init__(self, timer: _Timer) -> None:
        self.timer = timer

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.start(trainer, pl_module)


class _Stop(Callback):
    def __init__(self, timer: _Timer) -> None:
        self.timer = timer

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.stop(trainer, pl_module)


def _additions(pl_module: pl.LightningModule, latents: torch.Tensor, splits: int) -> float:
    """Seconds of the work a pass adds to the bare one, timed without the generator and Inception around it.

    That is the checks and uint8 conversion of ``to_uint8_rgb`` beyond the plain conversion, the float64 FID
    moments and the IS marginals, on the generator's real outputs and features of the right sizes. Timed alone,
    this few-percent figure is not drowned in the noise of two long passes on a shared machine.
    """
    device = pl_module.device
    moments = FIDMoments().to(device)
    marginals = ISMarginals(len(latents), splits=splits).to(device)
    with torch.no_grad():
        pl_module.eval()
        outputs = [pl_module(z.to(device)) for z in latents.split(BATCH_SIZE)]
        pl_module.train()
    pool = torch.rand(BATCH_SIZE, 2048, device=device)
    logits = torch.randn(BATCH_SIZE, 1008, device=device)
    indices = torch.arange(len(latents), device=device).split(BATCH_SIZE)
    _sync(device)
    started = time.perf_counter()
    for images, index in zip(outputs, indices, strict=True):
        to_uint8_rgb(check_generated(images, len(images), source="bench"))
        moments.update(pool[: len(images)])
        marginals.update(logits[: len(images)], index)
    _sync(device)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    for images in outputs:
        ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    _sync(device)
    return ours - (time.perf_counter() - started)


def _full_rank_stats(seed: int = 0) -> GaussianStats:
    """A full-rank 2048-d covariance with a decaying spectrum, like real pool3 statistics of many images."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(2048, 2048, generator=g, dtype=torch.float64) * torch.logspace(0, -2, 2048).double()
    return GaussianStats(n=50_000, mean=torch.rand(2048, generator=g, dtype=torch.float64), cov=mixing @ mixing.T)


def _best_of(fn: Any, repeats: int) -> float:
    """The best wall time of ``repeats`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def fixed_cost_rows(quick: bool = False, repeats: int = 3) -> list[dict[str, Any]]:
    """What one evaluation costs beyond the generator and network forwards, at d = 2048 on the CPU.

    Each part runs through the package's own code on synthetic inputs of the real sizes: the FID metric's
    ``compute`` (merge of the chunk moments, covariance, Fréchet distance against a full-rank reference), split
    into the covariance and the distance, the latter with the reference's Cholesky factor (now) and with its
    eigendecomposition factor (before issue 17); the symmetric eigenvalue problem alone, which no exact method
    avoids; the IS ``compute``; FID∞ and IS∞ (5 extrapolation points each); KID (100 subsets of 1000) and
    precision/recall (k = 3) on 1000 samples per side. The building of the reference (once per fit) is shown
    apart. Best of ``repeats`` calls each.
    """
    from lightning_ganeval.frechet import FrechetReference, _trace_sqrt_product
    from lightning_ganeval.metrics.base import RealData
    from lightning_ganeval.metrics.fid import FID
    from lightning_ganeval.metrics.inception_score import InceptionScore
    from lightning_ganeval.metrics.kid import kid_from_features
    from lightning_ganeval.metrics.precision_recall import precision_recall_density_coverage

    cpu = torch.device("cpu")
    num_samples = 256 if quick else 1000
    g = torch.Generator().manual_seed(1)
    features = torch.rand(num_samples, 2048, generator=g) * 2
    logits = torch.randn(num_samples, 1008, generator=g) * 3
    indices = torch.arange(num_samples)
    stats = _full_rank_stats()
    started = time.perf_counter()
    reference = FrechetReference.from_stats(stats)
    build = time.perf_counter() - started

    def fitted(metric: Any, values: torch.Tensor, real: RealData | None = None) -> Any:
        if real is not None:
            metric.set_real(real)
        metric.reset(num_samples, cpu)
        metric.update(values, indices)
        return metric

    real = RealData(stats=stats, source="bench")
    fid = fitted(FID(), features, real)
    fid._reference = reference
    fid_inf = fitted(FID(extrapolate=True), features, real)
    fid_inf._reference = reference
    isc = fitted(InceptionScore(splits=10), logits)
    is_inf = fitted(InceptionScore(splits=10, extrapolate=True), logits)
    moments = fid._chunks[0]
    n, mean, m2 = int(moments.n.item()), moments.mean.clone(), moments.m2.clone()

    cov_buffer = torch.empty_like(m2)

    def covariance() -> torch.Tensor:
        return torch.div(m2, n - 1, out=cov_buffer)  # as FID._distance: a kept buffer, no symmetrise, no scan

    def covariance_before() -> torch.Tensor:
        cov = m2 / (n - 1)
        cov = (cov + cov.T) / 2
        assert bool(torch.isfinite(mean).all() and torch.isfinite(cov).all())
        return cov

    cov = covariance_before()
    eigen_route = FrechetReference.from_stats(stats)
    eigen_route._chol = None  # the route of every reference before issue 17
    product = torch.linalg.cholesky(stats.cov).T @ cov @ torch.linalg.cholesky(stats.cov)
    parts = {
        "FID compute (merge, covariance, Frechet distance)": lambda: fid.compute(),
        "  covariance from the moments (into a kept buffer)": covariance,
        "  covariance + symmetrise + finiteness scan (before)": covariance_before,
        "  Frechet distance, Cholesky factor of the reference": lambda: reference.distance(mean, cov),
        "  Frechet distance, eigendecomposition factor (before)": lambda: eigen_route.distance(mean, cov),
        "    of which the symmetric eigenvalue problem (eigvalsh)": lambda: _trace_sqrt_product(
            product, "cov", lambda: None
        ),
        "IS compute (10 splits)": lambda: isc.compute(),
        "FID + FID_inf compute (5 points)": lambda: fid_inf.compute(),
        "IS + IS_inf compute (5 points)": lambda: is_inf.compute(),
        f"KID 100 subsets of 1000, {num_samples} samples per side": lambda: kid_from_features(
            features, features.flip(0) * 1.01, subsets=100, subset_size=min(1000, num_samples)
        ),
        f"Precision/recall/density/coverage k=3, {num_samples} per side": lambda: precision_recall_density_coverage(
            features, features.flip(0) * 1.01, k=3
        ),
    }
    times = {name: _best_of(fn, repeats) for name, fn in parts.items()}
    fid_is = times["FID compute (merge, covariance, Frechet distance)"] + times["IS compute (10 splits)"]
    rows = [
        {
            "benchmark": "Fixed cost per evaluation, d=2048: FID + IS compute",
            "ours": fid_is,
            "peer": "target",
            "peer_value": 1.0,
            "unit": "s",
            "ratio": 1.0 / fid_is,
            "target": "<= 1 s",
        }
    ]
    for name, seconds in times.items():
        before = name.endswith("(before)")
        rows.append(
            {
                "benchmark": f"  {name}",
                "ours": seconds,
                "peer": "-",
                "peer_value": float("nan"),
                "unit": "s",
                "ratio": float("nan"),
                "target": "previous method" if before else "-",
            }
        )
    rows.append(
        {
            "benchmark": "  FrechetReference of the real statistics (eigh + Cholesky), once per fit",
            "ours": build,
            "peer": "-",
            "peer_value": float("nan"),
            "unit": "s",
            "ratio": float("nan"),
            "target": "once per fit",
        }
    )
    return rows


def run(quick: bool = False, device: str = "cpu") -> list[dict[str, Any]]:
    """Time the callbacks' epoch-end work; rows in the ``benchmarks/run_all.py`` format (ratio = ours / bare).

    On the CPU the rows of :func:`fixed_cost_rows` (the fixed per-evaluation cost, broken down) follow.
    """
    num_samples, timed = (64, 2) if quick else (256, 4)
    dev = torch.device(device)
    weights = cached_random_inception_weights()
    extractor = get_extractor(dev, weights=weights)
    passes: dict[int, float] = {}
    original_evaluate = callbacks_module._SharedEvaluation.evaluate

    def timed_evaluate(self: Any, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> Any:
        # The first member runs the pass; the second one finds its result (both calls are counted).
        started = time.perf_counter()
        result = original_evaluate(self, trainer, pl_module, *args)
        _sync(dev)
        epoch = trainer.current_epoch
        passes[epoch] = passes.get(epoch, 0.0) + time.perf_counter() - started
        return result

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights, Lightning tips
        real = save_stats(Path(tmp) / "real.npz", _full_rank_stats(), network_provenance(extractor, "pool"))
        common = {"num_samples": num_samples, "batch_size": BATCH_SIZE, "inception_weights": weights}
        fid = FIDCallback(real=real, log_images=0, progress=False, **common)
        isc = InceptionScoreCallback(splits=2 if quick else 10, progress=False, **common)
        latents = LatentBank(num_samples, LATENT_DIM, seed=0, batch_size=BATCH_SIZE).latents()
        timer = _Timer(extractor, latents)
        trainer = pl.Trainer(
            default_root_dir=tmp,
            accelerator=dev.type,
            devices=1,
            max_epochs=timed + 1,
            limit_train_batches=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[_Start(timer), fid, isc, _Stop(timer)],
        )
        data = DataLoader(TensorDataset(torch.rand(BATCH_SIZE, 3, 32, 32) * 2 - 1), batch_size=BATCH_SIZE)
        callbacks_module._SharedEvaluation.evaluate = timed_evaluate
        try:
            torch.manual_seed(0)
            trainer.fit(DCGAN(), data)
        finally:
            callbacks_module._SharedEvaluation.evaluate = original_evaluate

    added = statistics.median(_additions(trainer.lightning_module, latents, isc.splits) for _ in range(3))
    ours = statistics.median(timer.ours[1:])
    bare = statistics.median(timer.bare[1:])
    sampling = statistics.median(passes[epoch] for epoch in sorted(passes)[1:])
    size = f"{num_samples} samples 32x32, DCGAN, {dev.type}"
    # At a realistic sample count the per-sample parts (bare pass and the pass's additions) grow with N and the
    # rest of our epoch-end work (Fréchet distance, IS, logging) stays fixed: extrapolate from the parts.
    realistic = 10_000
    fixed = max(ours - bare - added, 0.0)
    per_sample_bare = bare / num_samples
    extrapolated_bare = per_sample_bare * realistic
    extrapolated_ours = extrapolated_bare + added / num_samples * realistic + fixed
    return [
        {
            "benchmark": f"Callbacks' epoch-end work, FID+IS one pass, {size}",
            "ours": ours,
            "peer": "bare G forward + Inception forward, same samples",
            "peer_value": bare,
            "unit": "s",
            "ratio": ours / bare,
            "target": "<= 1.05x",
        },
        {
            "benchmark": f"  of which the Evaluator (G, uint8, Inception, accumulators, merge, Frechet, IS), {size}",
            "ours": sampling,
            "peer": "bare G forward + Inception forward, same samples",
            "peer_value": bare,
            "unit": "s",
            "ratio": sampling / bare,
            "target": "<= 1.05x",
        },
        {
            "benchmark": f"  sampling pass additions timed alone (uint8 checks, moments, IS), {size}",
            "ours": bare + added,
            "peer": "bare G forward + Inception forward, same samples",
            "peer_value": bare,
            "unit": "s",
            "ratio": (bare + added) / bare,
            "target": "<= 1.05x",
        },
        {
            "benchmark": f"  extrapolated to {realistic} samples: per-sample parts x N + fixed {fixed:.2f} s",
            "ours": extrapolated_ours,
            "peer": "bare G forward + Inception forward, same samples",
            "peer_value": extrapolated_bare,
            "unit": "s",
            "ratio": extrapolated_ours / extrapolated_bare,
            "target": "<= 1.05x",
        },
        {
            "benchmark": "  of which logging, broadcast of the values and bookkeeping",
            "ours": ours - sampling,
            "peer": "-",
            "peer_value": float("nan"),
            "unit": "s",
            "ratio": float("nan"),
            "target": "fixed per evaluation",
        },
        *(fixed_cost_rows(quick=quick) if dev.type == "cpu" else []),
    ]


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 samples, 2 timed evaluations")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fixed-only", action="store_true", help="only the fixed per-evaluation cost breakdown")
    args = parser.parse_args()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, load average {load}")
    rows = fixed_cost_rows(quick=args.quick) if args.fixed_only else run(quick=args.quick, device=args.device)
    print(format_table(rows))


if __name__ == "__main__":
    _main()
