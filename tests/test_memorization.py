"""Memorisation: AuthPct, C_T and the memorised fraction flag a copying generator and spare a fresh one.

* On features: copies (exact, or with small noise) against fresh draws of the same distribution; parity of
  ``authpct`` and ``ct`` with NumPy/SciPy transcriptions of dgm-eval's ``authpct.py`` and ``ct.py``.
* In a Trainer: :class:`MemorizationCallback` with a generator that returns training images (optionally flipped,
  seen through a mirror-symmetric feature network, or with noise) and one that draws fresh images; the
  nearest-training grid read back from TensorBoard and from the CSV logger's folder, for map-style and iterable
  real data.
* 1, 2 and 3 processes (gloo, ``ddp`` in the processes of tests/ddp_runs.py) log the same values and pick the same
  nearest samples.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ddp_runs import roundtrip_pickle
from lightning.pytorch.callbacks import Callback
from scipy.cluster.vq import kmeans2
from scipy.spatial.distance import cdist
from scipy.stats import mannwhitneyu
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from lightning_ganeval import MemorizationCallback
from lightning_ganeval.metrics.memorization import (
    Memorization,
    fit_kmeans,
    mann_whitney_u,
    memorization_scores,
    seeded_split,
)

IMAGE_SIZE = 8
LATENT_DIM = 3 * IMAGE_SIZE * IMAGE_SIZE


# ----------------------------------------------------------------------------------- dgm-eval transcriptions


def dgm_eval_authpct(train: np.ndarray, gen: np.ndarray) -> float:
    """dgm-eval ``metrics/authpct.py`` in NumPy/SciPy (float64 instead of float32 cdist)."""
    real_dists = cdist(train, train)
    np.fill_diagonal(real_dists, np.inf)
    gen_dists = cdist(train, gen)
    real_min = real_dists.min(axis=0)
    gen_min_values, gen_min_indices = gen_dists.min(axis=0), gen_dists.argmin(axis=0)
    authen = real_min[gen_min_indices] < gen_min_values
    return float(100 * authen.sum() / len(authen))


def dgm_eval_ct(train: np.ndarray, test: np.ndarray, gen: np.ndarray, seed: int = 0) -> float:
    """dgm-eval ``metrics/ct.py`` in NumPy/SciPy: exact PCA to 64 dims, k-means (scipy) with 3 cells, per-cell
    one-sided Mann-Whitney U of nearest same-cell training distances, Z with continuity 0.5, test-share weights
    over cells with more than tau = 20/m of the generated rows."""
    if train.shape[1] > 64:
        mean = train.mean(axis=0)
        _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
        components = vt[:64].T
        train, test, gen = ((x - mean) @ components for x in (train, test, gen))
    centres, t_labels = kmeans2(train, 3, minit="++", seed=seed)
    p_labels = cdist(test, centres).argmin(axis=1)
    q_labels = cdist(gen, centres).argmin(axis=1)
    m, n, k = len(gen), len(test), 3
    q_share = np.bincount(q_labels, minlength=k) / m
    p_share = np.bincount(p_labels, minlength=k) / n
    keep = q_share > 20 / m
    zu = np.zeros(k)
    for i in range(k):
        t_i, p_i, q_i = train[t_labels == i], test[p_labels == i], gen[q_labels == i]
        if len(q_i) == 0:
            continue
        lq, lp = cdist(q_i, t_i).min(axis=1), cdist(p_i, t_i).min(axis=1)
        u = mannwhitneyu(lq, lp, alternative="less").statistic
        zu[i] = (u - (len(p_i) * len(q_i) / 2 - 0.5)) / np.sqrt(len(p_i) * len(q_i) * (len(p_i) + len(q_i) + 1) / 12)
    return float(p_share[keep] @ zu[keep] / p_share[keep].sum())


def clusters(n: int, d: int, seed: int, spread: float = 1.0) -> torch.Tensor:
    """Rows around 3 far-apart centres (fixed), so that every k-means finds the same 3 cells."""
    centres = torch.randn(3, d, generator=torch.Generator().manual_seed(123)) * 10
    g = torch.Generator().manual_seed(seed)
    return centres[torch.randint(3, (n,), generator=g)] + spread * torch.randn(n, d, generator=g)


# ------------------------------------------------------------------------------------------ on features


def test_copies_are_flagged_and_fresh_draws_are_not() -> None:
    # 400 training rows, 200 test rows, 200 generated rows; under a second on an idle CPU core.
    train, test, fresh = clusters(400, 100, 1), clusters(200, 100, 2), clusters(200, 100, 3)
    copies = train[torch.randperm(400, generator=torch.Generator().manual_seed(4))[:200]]
    noisy = copies + 0.05 * torch.randn(copies.shape, generator=torch.Generator().manual_seed(5))
    fresh_scores, _ = memorization_scores(train, fresh, test)
    copy_scores, found = memorization_scores(train, copies, test, nearest=4)
    noisy_scores, _ = memorization_scores(train, noisy, test)
    # Exact copies: no copy is farther from its training row than that row from its neighbour.
    assert copy_scores == {"authpct": 0.0, "ct": pytest.approx(copy_scores["ct"]), "memorized_fraction": 1.0}
    assert copy_scores["ct"] < -5
    assert noisy_scores["authpct"] < 5
    assert noisy_scores["memorized_fraction"] > 0.95
    assert noisy_scores["ct"] < -5
    # Fresh draws: authentic mostly, C_T within sampling noise of 0, about 1 % below the 1 % quantile.
    assert fresh_scores["authpct"] > 60
    assert abs(fresh_scores["ct"]) < 3
    assert fresh_scores["memorized_fraction"] < 0.05
    # The evidence: distance 0, each copy's nearest training row is the row it copies.
    assert found is not None
    assert found.distance.tolist() == [0.0] * 4
    assert torch.equal(train[found.training[:, 0]], copies[found.generated])


def test_authpct_equals_dgm_eval_transcription() -> None:
    g = torch.Generator().manual_seed(0)
    train = torch.randn(500, 32, generator=g, dtype=torch.float64)
    gen = torch.randn(400, 32, generator=g, dtype=torch.float64) * 0.9
    gen[:50] = train[:50] + 1e-3 * torch.randn(50, 32, generator=g, dtype=torch.float64)
    ours, _ = memorization_scores(train, gen, block_size=64)  # ragged blocks: 500 = 7 x 64 + 52
    expected = dgm_eval_authpct(train.numpy(), gen.numpy())
    assert 0 < expected < 100
    assert ours["authpct"] == expected  # exact: the same decisions for every row


@pytest.mark.parametrize(("d", "shift"), [(100, 0.0), (100, -0.5), (32, 0.3)])
def test_ct_equals_dgm_eval_transcription(d: int, shift: float) -> None:
    # d = 100 goes through the PCA to 64; d = 32 does not. shift < 0 pulls generated rows towards training rows.
    train, test = clusters(400, d, 1), clusters(200, d, 2)
    gen = clusters(200, d, 3)
    nearest_train = train[torch.cdist(gen, train).argmin(dim=1)]
    gen = gen + (-shift) * (nearest_train - gen) if shift < 0 else gen * (1 + shift)
    ours, _ = memorization_scores(train, gen, test)
    expected = dgm_eval_ct(train.double().numpy(), test.double().numpy(), gen.double().numpy())
    assert math.isfinite(expected)
    assert ours["ct"] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_mann_whitney_u_matches_scipy_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 20, (57,), generator=g).double()
    y = torch.randint(0, 20, (81,), generator=g).double()
    assert mann_whitney_u(x, y) == mannwhitneyu(x.numpy(), y.numpy(), alternative="less").statistic


def test_kmeans_is_seeded_and_finds_separated_cells() -> None:
    x = clusters(300, 8, 0).double()
    a, b = fit_kmeans(x, 3, seed=0), fit_kmeans(x, 3, seed=0)
    assert torch.equal(a, b)
    labels = torch.cdist(x, a).argmin(dim=1)
    truth = torch.cdist(x, clusters(3, 8, 0, spread=0.0).double()).argmin(dim=1)
    # Same partition up to the naming of the cells.
    assert len({(int(p), int(q)) for p, q in zip(labels, truth, strict=True)}) == 3


def test_neighbour_search_never_holds_a_full_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each block of distances is at most block_size x n: record the largest tensor addmm returns.
    import lightning_ganeval.metrics.memorization as module

    largest = 0
    addmm = torch.addmm

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        nonlocal largest
        out = addmm(*args, **kwargs)
        largest = max(largest, out.numel())
        return out

    monkeypatch.setattr(module.torch, "addmm", recording)
    train, gen = clusters(400, 16, 0), clusters(300, 16, 1)
    memorization_scores(train, gen, block_size=50)
    assert largest == 50 * 400


def test_split_is_seeded_and_disjoint() -> None:
    train, test = seeded_split(100, 0.2, 7)
    again, _ = seeded_split(100, 0.2, 7)
    assert torch.equal(train, again)
    assert len(test) == 20
    assert sorted(train.tolist() + test.tolist()) == list(range(100))
    with pytest.raises(ValueError, match=r"test_fraction=0\.01 of 10 real samples"):
        seeded_split(10, 0.01, 0)


def test_metric_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="`test_fraction` must be a number in \\[0, 1\\)"):
        Memorization(test_fraction=1.0)
    with pytest.raises(ValueError, match="`quantile` must be a number in \\[0, 1\\]"):
        Memorization(quantile=2)
    assert Memorization(name="mem").keys() == ["mem_authpct", "mem_ct", "mem_memorized_fraction", "mem_num_samples"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split_seed": -1}, "`split_seed` must be an integer >= 0, got -1."),
        ({"block_size": 0}, "`block_size` must be an integer >= 1, got 0."),
        ({"kmeans_seed": 1.0}, "`kmeans_seed` must be an integer >= 0, got 1.0."),
        ({"nearest": True}, "`nearest` must be an integer >= 0, got True."),
        ({"neighbours": 0}, "`neighbours` must be an integer >= 1, got 0."),
        ({"max_real": 1}, "`max_real` must be an integer >= 2, got 1."),
    ],
)
def test_integer_arguments_are_named_in_the_error(kwargs: dict[str, Any], message: str) -> None:
    # One check (metrics.base.check_int) for every integer argument of the per-sample metrics; bools are refused.
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Memorization(**kwargs)


# ------------------------------------------------------------------------------------------- in a Trainer


class MirrorFeatures(nn.Module):
    """A feature network that cannot tell an image from its mirror image (as Inception nearly cannot)."""

    num_features = 16

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(48, 16, generator=torch.Generator().manual_seed(0)) / 4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1
        x = F.adaptive_avg_pool2d((x + x.flip(-1)) / 2, 4).flatten(1)
        return torch.tanh(x @ self.weight)


def uniform_images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


class CopyingOrFreshGAN(pl.LightningModule):
    """``mode="copy"``: a training image picked by the latent (flipped / noisy on request); ``"fresh"``: a new
    uniform image, the training data's distribution (erf maps N(0, 1) onto U(-1, 1))."""

    def __init__(self, training: torch.Tensor, mode: str = "copy", flip: bool = False, noise: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["training"])
        self.hparams["latent_dim"] = LATENT_DIM
        self.register_buffer("training_images", training.clone())
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.hparams.mode == "fresh":
            return torch.erf(z / math.sqrt(2)).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
        index = (z[:, 0].abs() * 1e4).long() % len(self.training_images)
        images = self.training_images[index]
        if self.hparams.flip:
            images = images.flip(-1)
        return (images + self.hparams.noise * z.view_as(images)).clamp(-1, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return (self.unused**2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


class Stream(IterableDataset):
    """The training images as an iterable dataset (batches read in order, the same each time)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __iter__(self):
        yield from ((image,) for image in self.images)


def _fit(tmp_path: Path, module: Any, train: torch.Tensor, test: torch.Tensor, *, iterable: bool = False, **kw: Any):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    real = DataLoader(Stream(train) if iterable else TensorDataset(train), batch_size=50)
    callback = MemorizationCallback(
        real=real,
        real_test=DataLoader(TensorDataset(test), batch_size=50),
        num_real=len(train) if iterable else None,
        num_samples=120,
        batch_size=40,
        feature_extractor=MirrorFeatures(),
        log_nearest=4,
        neighbours=2,
        cache_dir=tmp_path / "cache",
        progress=False,
        **kw,
    )
    loggers = [TensorBoardLogger(tmp_path, name="tb"), CSVLogger(tmp_path, name="csv")]
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=loggers,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's tips about workers and small logging intervals
        trainer.fit(module, DataLoader(TensorDataset(train), batch_size=50))
    return callback, loggers


def _tiles(grid: torch.Tensor, rows: int, cols: int, size: int = IMAGE_SIZE, padding: int = 2) -> torch.Tensor:
    """The ``rows x cols`` tiles of a torchvision grid, ``(rows, cols, 3, size, size)``."""
    out = torch.empty(rows, cols, 3, size, size, dtype=torch.uint8)
    for r in range(rows):
        for c in range(cols):
            top, left = padding + r * (size + padding), padding + c * (size + padding)
            out[r, c] = grid[:, top : top + size, left : left + size]
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "flip", "noise"), [("copy", False, 0.0), ("copy", True, 0.0), ("copy", False, 0.02), ("fresh", False, 0)]
)
def test_callback_flags_a_copying_generator_and_not_a_fresh_one(
    tmp_path: Path, mode: str, flip: bool, noise: float
) -> None:
    # 300 training and 150 held-out uniform images, 120 generated samples; a few seconds per case.
    train, test = uniform_images(300, 0), uniform_images(150, 1)
    callback, _ = _fit(tmp_path, CopyingOrFreshGAN(train, mode=mode, flip=flip, noise=noise), train, test)
    (entry,) = callback.history
    if mode == "copy":
        assert entry["authpct"] < 5, entry
        assert entry["memorized_fraction"] > 0.9, entry
        assert entry["ct"] < -3, entry
    else:
        assert entry["authpct"] > 50, entry
        assert entry["memorized_fraction"] < 0.1, entry
        assert entry["ct"] > -2.5, entry
    assert entry["memorization_num_samples"] == 120


@pytest.mark.slow
@pytest.mark.parametrize("iterable", [False, True])
def test_nearest_training_grid_reaches_tensorboard_and_csv(tmp_path: Path, iterable: bool) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_loggers import read_png

    train, test = uniform_images(300, 0), uniform_images(150, 1)
    callback, (tensorboard, csv_logger) = _fit(
        tmp_path, CopyingOrFreshGAN(train, mode="copy"), train, test, iterable=iterable
    )
    accumulator = EventAccumulator(str(tensorboard.log_dir), size_guidance={"images": 0})
    accumulator.Reload()
    (event,) = accumulator.Images("memorization_nearest_training")
    grid = read_png(event.encoded_image_string)
    (png,) = (Path(csv_logger.log_dir) / "images").glob("memorization_nearest_training_step_*.png")
    assert torch.equal(read_png(png), grid)  # lossless PNG: exact equality
    # 4 rows (the closest generated samples) x 3 columns (the sample, then its 2 nearest training images).
    assert grid.shape == (3, 4 * 10 + 2, 3 * 10 + 2)
    tiles = _tiles(grid, 4, 3)
    nearest = callback._metric.nearest
    uint8_train = ((train + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    for row in range(4):
        # An exact copy beside the training image it copies, read back by index: the same pixels.
        assert torch.equal(tiles[row, 0], tiles[row, 1])
        assert torch.equal(tiles[row, 1], uint8_train[int(nearest.training[row, 0])])
        assert torch.equal(tiles[row, 2], uint8_train[int(nearest.training[row, 1])])


@pytest.mark.slow
def test_seeded_split_is_announced_and_the_grid_maps_back_to_the_dataset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from lightning.pytorch.loggers import CSVLogger
    from test_loggers import read_png

    train = uniform_images(300, 0)
    callback = MemorizationCallback(
        real=DataLoader(TensorDataset(train), batch_size=50),
        num_samples=120,
        batch_size=40,
        feature_extractor=MirrorFeatures(),
        log_nearest=4,
        neighbours=1,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    logger = CSVLogger(tmp_path, name="csv")
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        accelerator="cpu",
        logger=logger,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings(), caplog.at_level("INFO"):
        warnings.simplefilter("ignore")
        trainer.fit(CopyingOrFreshGAN(train, mode="copy"), DataLoader(TensorDataset(train), batch_size=50))
    assert "splits 60 of the 300 real samples off as held-out data" in caplog.text
    (entry,) = callback.history
    # About a fifth of the copies are of split-off images, which now count as fresh: flagged, not at the bounds.
    assert entry["authpct"] < 30
    assert 0.6 < entry["memorized_fraction"] < 1
    assert entry["ct"] < -3
    # Neighbour positions among the training rows map back to dataset indices: the copy beside its original.
    nearest = callback._metric.nearest
    assert not set(nearest.training.flatten().tolist()) & set(seeded_split(300, 0.2, 0)[1].tolist())
    (png,) = (Path(logger.log_dir) / "images").glob("memorization_nearest_training_step_*.png")
    tiles = _tiles(read_png(png), 4, 2)
    assert all(torch.equal(tiles[row, 0], tiles[row, 1]) for row in range(4))


# ------------------------------------------------------------------------------------------------ DDP


def _ddp_run(root: Path, devices: int) -> dict[str, Any]:
    """This rank's record of one fit on ``devices`` processes (several: inside a launched group, tests/ddp_runs.py)."""
    train, test = uniform_images(130, 0), uniform_images(61, 1)
    # 70 samples in batches of 8: unequal shares for 2 and 3 ranks, a ragged last batch.
    callback = MemorizationCallback(
        real=DataLoader(TensorDataset(train), batch_size=16),
        real_test=DataLoader(TensorDataset(test), batch_size=16),
        num_samples=70,
        batch_size=8,
        feature_extractor=MirrorFeatures(),
        log_nearest=3,
        cache_dir=root / "cache",
        progress=False,
    )
    callbacks = [callback, _Record(root)]
    # A half-copying generator, so that none of the three numbers sits at a bound.
    model = CopyingOrFreshGAN(torch.cat([train[:65], uniform_images(65, 9)]), mode="copy", noise=0.01)
    if devices > 1:
        model, callbacks = roundtrip_pickle((model, callbacks))  # as ddp_spawn would send them
    trainer = pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=1,
        limit_train_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, DataLoader(TensorDataset(train), batch_size=16))
    return json.loads((root / f"rank{trainer.global_rank}-of-{devices}.json").read_text())


def ddp_job(rank: int, world_size: int, workdir: Path, inputs: Any) -> dict[str, Any]:
    """One rank's record (tests/ddp_runs.py runs it on 2 and 3 processes)."""
    return _ddp_run(workdir, world_size)


class _Record(Callback):
    """Writes, per rank, the callback's history and its nearest-training evidence after fit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        (callback,) = [cb for cb in trainer.callbacks if isinstance(cb, MemorizationCallback)]
        nearest = callback._metric.nearest
        record = {
            "history": callback.history,
            "generated": nearest.generated.tolist(),
            "training": nearest.training.tolist(),
            "distance": nearest.distance.tolist(),
        }
        path = self.directory / f"rank{trainer.global_rank}-of-{trainer.world_size}.json"
        path.write_text(json.dumps(record))


@pytest.mark.slow
@pytest.mark.ddp
def test_one_two_and_three_processes_give_identical_values(tmp_path: Path, ddp_runs: Any) -> None:
    runs = {1: [_ddp_run(tmp_path, 1)], 2: ddp_runs.ranks(2, ddp_job), 3: ddp_runs.ranks(3, ddp_job)}
    (single,) = runs[1]
    (entry,) = single["history"]
    assert 0 < entry["authpct"] < 100
    assert 0 < entry["memorized_fraction"] < 1
    assert math.isfinite(entry["ct"])
    for devices in (2, 3):
        for record in runs[devices]:
            # Exact: the same values and the same evidence on every rank, as with one process.
            assert {k: v for k, v in record["history"][0].items() if k != "step"} == {
                k: v for k, v in entry.items() if k != "step"
            }
            assert record["generated"] == single["generated"]
            assert record["training"] == single["training"]
            assert record["distance"] == single["distance"]


# ------------------------------------------------------------------------------------------ command line


def _write_pngs(folder: Path, images: torch.Tensor) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, array in enumerate(pixels):
        Image.fromarray(array).save(folder / f"{i:04d}.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("copying", [True, False])
def test_command_line_prints_the_numbers_and_writes_the_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copying: bool
) -> None:
    from test_loggers import read_png

    from lightning_ganeval import cli

    # The mirror-symmetric network instead of Inception (same pipeline; Inception on CPU would take minutes).
    monkeypatch.setattr(cli.setup, "build_network", lambda args, device: MirrorFeatures())
    train, test = uniform_images(200, 0), uniform_images(100, 1)
    generated = train[torch.randperm(200, generator=torch.Generator().manual_seed(2))[:90]] if copying else None
    generated = uniform_images(90, 3) if generated is None else generated
    folders = {k: _write_pngs(tmp_path / k, v) for k, v in {"gen": generated, "train": train, "test": test}.items()}
    grid_path = tmp_path / "grid.png"
    out = tmp_path / "out.json"
    argv = ["memorization", folders["gen"], folders["train"], "--test", folders["test"], "--grid", grid_path]
    argv += ["--nearest", "4", "--neighbours", "2", "--json", "--no-progress", "--device", "cpu", "--workers", "0"]
    with open(out, "w") as handle, contextlib.redirect_stdout(handle):
        assert cli.main([str(a) for a in argv]) == 0
    result = json.loads(out.read_text())
    assert result["num_samples_generated"] == 90
    assert result["num_train"] == 200
    assert result["num_test"] == 100
    if copying:
        assert result["authpct"] == 0.0
        assert result["memorized_fraction"] == 1.0
        assert result["ct"] < -3
    else:
        assert result["authpct"] > 50
        assert result["memorized_fraction"] < 0.1
        assert result["ct"] > -2.5
    # The same numbers as the function on the same features (the CLI adds only the file reading). The real rows come
    # from the callbacks' real pass, a seeded sample in priority order (select_real_rows); C_T's k-means++ draws
    # depend on the order of the rows, so the expected values take the rows in that order too.
    from lightning_ganeval.real_pass import select_real_rows

    features = {
        k: MirrorFeatures()(torch.stack([cli.read_image(p) for p in cli.list_images(f)])) for k, f in folders.items()
    }
    train, test = (
        features[k][select_real_rows(torch.arange(len(features[k])), len(features[k]))] for k in ("train", "test")
    )
    expected, _ = memorization_scores(train, features["gen"], test)
    assert {k: result[k] for k in expected} == pytest.approx(expected, rel=1e-12, abs=1e-12)
    grid = read_png(grid_path)
    assert grid.shape == (3, 4 * 10 + 2, 3 * 10 + 2)
    if copying:
        tiles = _tiles(grid, 4, 3)
        assert all(torch.equal(tiles[row, 0], tiles[row, 1]) for row in range(4))
