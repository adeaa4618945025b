"""FIDCallback and InceptionScoreCallback inside real (tiny, CPU) Trainer runs.

Most runs use `FakeExtractor`, a cheap stand-in with the extractor's interface (uint8 in, ``pool``/``logits`` out,
``device``, ``identity``, ``num_features``, ``num_classes``), because these tests are about scheduling, sharding,
logging, state and Lightning's contracts, not about Inception; `test_real_inception_end_to_end` runs the real
network (random weights) once.
"""

from __future__ import annotations

import importlib
import logging
import math
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from fakes import FakeExtractor, quiet_trainer
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_ganeval.callbacks.base as callbacks_module
import lightning_ganeval.real_pass as real_module
from lightning_ganeval import FIDCallback, InceptionScoreCallback
from lightning_ganeval.frechet import GaussianStats
from lightning_ganeval.inception import InceptionFeatures
from lightning_ganeval.stats_files import extractor_provenance, save_stats
from lightning_ganeval.weights import WeightsError

IMAGE_SIZE = 8
LATENT_DIM = 8


# ---------------------------------------------------------------------------------------------- helpers


class TinyGAN(pl.LightningModule):
    """A generator ``forward(z)`` with BatchNorm and Dropout, trained with a trivial loss towards the data."""

    def __init__(
        self,
        latent_dim: int = LATENT_DIM,
        dropout: float = 0.2,
        drift: float = 0.0,
        deterministic: bool = False,
        lr: float = 0.05,
        save_latent_dim: bool = True,
    ) -> None:
        super().__init__()
        if save_latent_dim:
            self.save_hyperparameters("latent_dim")
        self.latent_dim, self.drift, self.deterministic, self.lr = latent_dim, drift, deterministic, lr
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(32, 3 * IMAGE_SIZE * IMAGE_SIZE),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.net(z.flatten(1))
        # `drift` makes the samples saturate more with every epoch: a generator that gets worse.
        return torch.tanh(x + self.drift * self.current_epoch).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)

    def _latents(self, n: int) -> torch.Tensor:
        if self.deterministic:
            # Lightning does not checkpoint the global RNG: a resumable run draws from the step number.
            return torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(self.global_step))
        return torch.randn(n, self.latent_dim)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        real = batch[0]
        return ((self(self._latents(len(real)).to(real.dtype)) - real) ** 2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", (batch[0] ** 2).mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def real_images(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def loader(shuffle: bool = False, seed: int = 0) -> DataLoader:
    return DataLoader(TensorDataset(real_images(seed=seed)), batch_size=8, shuffle=shuffle)


def make_trainer(root: Path, callbacks: list[Callback], **kwargs: Any) -> pl.Trainer:
    return quiet_trainer(pl.Trainer, root, callbacks, **{"num_sanity_val_steps": 0, "log_every_n_steps": 1, **kwargs})


def fit(trainer: pl.Trainer, model: pl.LightningModule, **kwargs: Any) -> None:
    kwargs.setdefault("train_dataloaders", loader())
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=".*(num_workers|log_every_n_steps|LeafSpec|not the reference|`val_dataloader`|`ckpt_path`).*",
        )
        trainer.fit(model, **kwargs)


@pytest.fixture
def fake_extractor(monkeypatch: pytest.MonkeyPatch) -> FakeExtractor:
    """Make the callbacks use a `FakeExtractor` (still resolving the weights file as usual)."""
    fake = FakeExtractor()
    fake.requests = []

    def get_extractor(device: Any = None, weights: Any = None, *, resize: str = "tf1", fast: bool = False) -> Any:
        fake.requests.append({"device": torch.device(device), "resize": resize, "fast": fast})
        return fake

    monkeypatch.setattr(callbacks_module, "get_extractor", get_extractor)
    return fake


@pytest.fixture
def fake_stats(tmp_path: Path, fake_extractor: FakeExtractor) -> Path:
    """A ``.npz`` of the fake features of `real_images`, with the fake extractor's provenance."""
    from lightning_ganeval.metrics import FID

    metric = FID()
    real = real_module.prepare_real_data(loader(), [(fake_extractor, metric)], space=(-1, 1), cache=False)
    stats = real[metric].stats
    fake_extractor.calls = 0
    return save_stats(tmp_path / "real.npz", stats, real_module.network_provenance(fake_extractor, "pool"))


@pytest.fixture
def settings(inception_weights_path: Path) -> dict[str, Any]:
    """Arguments shared by the callbacks of most tests: 16 samples in 2 batches, no bars, no grids."""
    return {"num_samples": 16, "batch_size": 8, "inception_weights": inception_weights_path, "progress": False}


def fid_callback(settings: dict[str, Any], real: Any, **kwargs: Any) -> FIDCallback:
    return FIDCallback(real=real, log_images=0, **{**settings, **kwargs})


def is_callback(settings: dict[str, Any], **kwargs: Any) -> InceptionScoreCallback:
    return InceptionScoreCallback(**{"splits": 2, **settings, **kwargs})


# ------------------------------------------------------------------------------------ construction (fast)


def test_state_keys_are_pinned() -> None:
    assert FIDCallback().state_key == "FIDCallback{'name': 'fid'}"
    assert FIDCallback(name="fid_50k", num_samples=50_000).state_key == "FIDCallback{'name': 'fid_50k'}"
    assert InceptionScoreCallback().state_key == "InceptionScoreCallback{'name': 'is'}"


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "match"),
    [
        (FIDCallback, {"num_samples": 1}, ValueError, "`num_samples` must be an int >= 2, got 1"),
        (FIDCallback, {"num_samples": 10.0}, TypeError, "`num_samples` must be an int >= 2, got 10.0"),
        (FIDCallback, {"batch_size": 0}, ValueError, "`batch_size` must be an int >= 1, got 0"),
        (FIDCallback, {"every_n_epochs": 0}, ValueError, "`every_n_epochs` must be an int >= 1, got 0"),
        (FIDCallback, {"latent_shape": -3}, ValueError, r"`latent_shape` must have dimensions >= 1, got -3"),
        (
            FIDCallback,
            {"sample_fn": "generator"},
            TypeError,
            "`sample_fn` must be a callable, an import path .* or None; got the string 'generator'",
        ),
        (FIDCallback, {"value_range": (1, -1)}, ValueError, r"`value_range` must be a pair of finite .* got \(1, -1\)"),
        (FIDCallback, {"value_range": 1.0}, ValueError, r"`value_range` must be a pair of finite numbers .* got 1.0"),
        (FIDCallback, {"normalize": (0.5,)}, ValueError, r"`normalize` must be a pair \(mean, std\).* got \(0.5,\)"),
        (FIDCallback, {"value_range": (0, 1), "normalize": (0.5, 0.5)}, ValueError, "either `value_range` or"),
        (FIDCallback, {"real_value_range": (0, 0)}, ValueError, r"`real_value_range` .* got \(0, 0\)"),
        (FIDCallback, {"real": 3}, TypeError, "`real` must be a path to a .npz statistics file, .* got int"),
        (FIDCallback, {"num_real": 1}, ValueError, "`num_real` must be an int >= 2, got 1"),
        (FIDCallback, {"inception_weights": 5}, TypeError, "`inception_weights` must be a path .* got int"),
        (FIDCallback, {"resize": "bicubic"}, ValueError, "`resize` must be one of 'tf1', 'antialias', got 'bicubic'"),
        (FIDCallback, {"fast": "yes"}, TypeError, "`fast` must be True or False, got 'yes'"),
        (FIDCallback, {"seed": -1}, ValueError, "`seed` must be an int >= 0, got -1"),
        (FIDCallback, {"name": ""}, ValueError, "`name` must be a non-empty string .* got ''"),
        (FIDCallback, {"log_images": -1}, ValueError, "`log_images` must be an int >= 0, got -1"),
        (FIDCallback, {"nonfinite": "drop"}, ValueError, "`nonfinite` must be one of 'exclude', 'raise', got 'drop'"),
        (FIDCallback, {"cache_dir": 1}, TypeError, "`cache_dir` must be a path .* got int"),
        (FIDCallback, {"progress": 1}, TypeError, "`progress` must be True or False, got 1"),
        (InceptionScoreCallback, {"splits": 0}, ValueError, "`splits` must be an int >= 1, got 0"),
        (InceptionScoreCallback, {"num_samples": 5, "splits": 10}, ValueError, "`num_samples` must be an int >= 10"),
    ],
)
def test_argument_errors(cls: type, kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_construction_touches_no_weights_and_pickles(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("constructing a callback must not resolve weights or build the extractor")

    monkeypatch.setattr(callbacks_module, "get_extractor", forbidden)
    monkeypatch.setattr(callbacks_module, "resolve_weights", forbidden)
    fid = FIDCallback(real="stats.npz", latent_shape=(8, 1, 1))
    isc = InceptionScoreCallback(latent_shape=8)
    for callback in (fid, isc):
        clone = pickle.loads(pickle.dumps(callback))
        assert clone.state_key == callback.state_key


def test_shared_arguments_are_flat_typed_and_checked_by_name() -> None:
    """Each callback declares only its own arguments; the shared ones still form one flat, typed signature."""
    import inspect

    from lightning_ganeval import KIDCallback, PPLCallback

    for cls in (FIDCallback, InceptionScoreCallback, KIDCallback, PPLCallback):
        parameters = inspect.signature(cls).parameters
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values()), cls.__name__
        assert parameters["every_n_epochs"].default is None
        assert parameters["every_n_epochs"].annotation == (int | None)
        assert parameters["batch_size"].default == 64
        assert parameters["value_range"].annotation == (tuple[float, float] | None)
    assert inspect.signature(FIDCallback).parameters["name"].default == "fid"
    assert inspect.signature(KIDCallback).parameters["name"].default == "kid"
    assert "num_samples" not in inspect.signature(PPLCallback).parameters  # PPL counts pairs
    assert "log_images" not in inspect.signature(InceptionScoreCallback).parameters  # FID's own argument
    # Flat keyword arguments, as before.
    fid = FIDCallback(num_samples=5_000, every_n_epochs=2, real="stats.npz")
    assert (fid.num_samples, fid.every_n_epochs, fid.real, fid.batch_size) == (5_000, 2, "stats.npz", 64)
    # An argument a callback does not take is refused by name, as Python refuses it for a written-out signature.
    with pytest.raises(
        TypeError,
        match=r"FIDCallback\(\) got an unexpected keyword argument 'num_sample'\. Did you"
        r" mean `num_samples`\?",
    ):
        FIDCallback(num_sample=5)
    with pytest.raises(TypeError, match=r"InceptionScoreCallback\(\) got an unexpected keyword argument 'log_images'"):
        InceptionScoreCallback(log_images=4)
    with pytest.raises(TypeError, match="positional"):
        FIDCallback("stats.npz")


def test_a_subclass_passing_kwargs_on_keeps_the_checks() -> None:
    """A user's subclass with plain ``**kwargs`` forwards the shared arguments; unknown ones are still refused."""

    class MyFID(FIDCallback):
        def __init__(self, *, tag: str = "x", **kwargs: Any) -> None:
            self.tag = tag
            super().__init__(**kwargs)

    callback = MyFID(tag="y", num_samples=5_000, every_n_epochs=3)
    assert (callback.tag, callback.num_samples, callback.every_n_epochs, callback.name) == ("y", 5_000, 3, "fid")
    with pytest.raises(TypeError, match=r"MyFID\(\) got an unexpected keyword argument 'splits'"):
        MyFID(splits=3)


def test_callbacks_keep_no_module_level_registry() -> None:
    """Callbacks that share a pass find each other through `trainer.callbacks`: no container outside the Trainer."""
    import pkgutil
    import weakref

    import lightning_ganeval.callbacks as package

    containers = (dict, list, set, weakref.WeakKeyDictionary, weakref.WeakValueDictionary, weakref.WeakSet)
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, value in vars(module).items():
            assert name.startswith("__") or not isinstance(value, containers), f"{info.name}.{name}"


def test_two_trainers_in_one_process_share_no_pass(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor
) -> None:
    """Equal callbacks in two Trainers set up in turn: one shared pass per Trainer, each left alone by the other."""
    first = [fid_callback(settings, "stats.npz"), is_callback(settings)]
    second = [fid_callback(settings, "stats.npz"), is_callback(settings)]
    trainers = [make_trainer(tmp_path / "a", first), make_trainer(tmp_path / "b", second)]
    model = TinyGAN()
    for index in (0, 1):  # interleaved: FID of both Trainers, then IS of both
        for trainer, callbacks in zip(trainers, (first, second), strict=True):
            callbacks[index].setup(trainer, model, "fit")
    assert first[0]._group is first[1]._group
    assert second[0]._group is second[1]._group
    assert first[0]._group is not second[0]._group
    assert first[0]._group.members == first
    assert second[0]._group.members == second
    # The end of one fit releases its pass and leaves the other Trainer's as it was.
    for callback in first:
        callback.teardown(trainers[0], model, "fit")
    assert first[0]._group is None
    assert second[0]._group.members == second
    # A new fit of the first Trainer builds a new pass.
    for callback in first:
        callback.setup(trainers[0], model, "fit")
    assert first[0]._group is first[1]._group
    assert first[0]._group is not second[0]._group


# --------------------------------------------------------------------------------------- Trainer runs


@pytest.mark.slow
@pytest.mark.parametrize("shared", [True, False])
def test_one_pass_feeds_both_metrics(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, fake_stats: Path, shared: bool
) -> None:
    fid = fid_callback(settings, fake_stats)
    isc = is_callback(settings, seed=0 if shared else 1)
    trainer = make_trainer(tmp_path, [fid, isc])
    fit(trainer, TinyGAN())
    passes = 1 if shared else 2
    assert fake_extractor.calls == 2 * 2 * passes  # epochs x batches x passes
    # Built in setup on the strategy's root device with the callbacks' settings.
    assert fake_extractor.requests[0] == {"device": torch.device("cpu"), "resize": "tf1", "fast": False}
    metrics = trainer.callback_metrics
    for key in ("fid", "fid_num_samples", "fid_nonfinite", "is", "is_std", "is_num_samples", "is_nonfinite"):
        assert key in metrics
    assert [h["epoch"] for h in fid.history] == [0, 1]
    assert float(metrics["fid"]) == pytest.approx(fid.last_score, rel=1e-6)  # logged as float32
    assert float(metrics["is"]) == pytest.approx(isc.last_score, rel=1e-6)
    assert metrics["fid_num_samples"] == 16
    assert metrics["is_num_samples"] == 16
    assert fid.last_score > 0
    assert 1 <= isc.last_score <= FakeExtractor.num_classes


@pytest.mark.slow
def test_real_inception_end_to_end(tmp_path: Path, inception_weights_path: Path, extractor: Any) -> None:
    """The real (random-weight) Inception, one Inception pass for FID and IS, scalars and a grid in TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    calls = []
    original = extractor.forward

    def counting(images: torch.Tensor) -> InceptionFeatures:
        calls.append(len(images))
        return original(images)

    # Statistics of 3 random feature vectors: the network's cost is in the generated samples only.
    features = torch.rand(3, 2048, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stats = GaussianStats(n=3, mean=features.mean(0), cov=features.T.cov())
    real = save_stats(tmp_path / "real.npz", stats, extractor_provenance(extractor))
    common = {"num_samples": 4, "batch_size": 2, "inception_weights": inception_weights_path, "progress": False}
    fid = FIDCallback(real=real, log_images=4, **common)
    isc = InceptionScoreCallback(splits=2, **common)
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = make_trainer(tmp_path, [fid, isc], max_epochs=1, logger=logger)
    extractor.forward = counting
    try:
        fit(trainer, TinyGAN())
    finally:
        del extractor.forward
    assert calls == [2, 2]  # one pass: 2 batches for both metrics
    assert math.isfinite(fid.last_score)
    assert fid.last_score > 0
    events = EventAccumulator(str(Path(logger.log_dir)), size_guidance={"images": 0, "scalars": 0}).Reload()
    for key in ("fid", "fid_num_samples", "fid_nonfinite", "is", "is_std", "is_num_samples"):
        assert key in events.Tags()["scalars"], key
    assert events.Scalars("fid")[-1].value == pytest.approx(fid.last_score, rel=1e-6)
    assert events.Scalars("is")[-1].value == pytest.approx(isc.last_score, rel=1e-6)
    assert events.Tags()["images"] == ["fid_samples"]
    grid = events.Images("fid_samples")[-1]
    assert (grid.width, grid.height) == (2 * (IMAGE_SIZE + 2) + 2, 2 * (IMAGE_SIZE + 2) + 2)  # 2 x 2 grid


class SpyEarlyStopping(EarlyStopping):
    """Records what it checks: (epoch, monitored value)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[tuple[int, float]] = []

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        self.seen.append((trainer.current_epoch, float(trainer.callback_metrics[self.monitor])))
        super()._run_early_stopping_check(trainer)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("callback_first", "validation", "check_on_train_epoch_end"),
    [(True, False, None), (False, False, True), (False, True, None), (True, True, False)],
)
def test_monitoring_callbacks_see_this_epochs_value(
    tmp_path: Path,
    settings: dict,
    fake_extractor: FakeExtractor,
    fake_stats: Path,
    callback_first: bool,
    validation: bool,
    check_on_train_epoch_end: bool | None,
) -> None:
    fid = fid_callback(settings, fake_stats)
    stopper = SpyEarlyStopping(monitor="fid", patience=10, check_on_train_epoch_end=check_on_train_epoch_end)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="fid", save_top_k=-1, filename="{epoch}-{fid:.4f}")
    monitors: list[Callback] = [stopper, checkpoint]
    order = [fid, *monitors] if callback_first else [*monitors, fid]
    limit_val_batches = 1 if validation else 0
    trainer = make_trainer(
        tmp_path, order, max_epochs=3, enable_checkpointing=True, limit_val_batches=limit_val_batches
    )
    fit(trainer, TinyGAN(), val_dataloaders=loader() if validation else None)
    by_epoch = {h["epoch"]: h["fid"] for h in fid.history}
    assert sorted(by_epoch) == [0, 1, 2]
    assert [e for e, _ in stopper.seen] == [0, 1, 2]
    for epoch, value in stopper.seen:
        assert value == pytest.approx(by_epoch[epoch], rel=1e-6)  # this epoch's, not the previous one
    scores = {int(re.search(r"epoch=(\d+)", p).group(1)): float(s) for p, s in checkpoint.best_k_models.items()}
    assert sorted(scores) == [0, 1, 2]
    for epoch, value in scores.items():
        assert value == pytest.approx(by_epoch[epoch], rel=1e-6)
    # The adjustments of the monitors are undone after fit.
    assert "_run_early_stopping_check" not in stopper.__dict__
    assert checkpoint._save_on_train_epoch_end is None


@pytest.mark.slow
@pytest.mark.parametrize(("every_n_epochs", "stopped_epoch"), [(1, 1), (2, 3)])
def test_early_stopping_stops_when_samples_get_worse(
    tmp_path: Path,
    settings: dict,
    fake_extractor: FakeExtractor,
    fake_stats: Path,
    every_n_epochs: int,
    stopped_epoch: int,
) -> None:
    fid = fid_callback(settings, fake_stats, every_n_epochs=every_n_epochs)
    # strict=True: no crash on the epochs before the first evaluation; patience counts evaluations only.
    stopper = SpyEarlyStopping(monitor="fid", mode="min", patience=1, strict=True)
    trainer = make_trainer(tmp_path, [stopper, fid], max_epochs=10)
    fit(trainer, TinyGAN(drift=0.5, lr=0.0))
    values = [h["fid"] for h in fid.history]
    assert values == sorted(values)  # the drifting generator really gets worse
    assert [h["epoch"] for h in fid.history] == list(range(every_n_epochs - 1, stopped_epoch + 1, every_n_epochs))
    assert [e for e, _ in stopper.seen] == [h["epoch"] for h in fid.history]
    assert stopper.stopped_epoch == stopped_epoch
    assert trainer.current_epoch == stopped_epoch + 1


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, fake_stats: Path
) -> None:
    def run(root: Path, max_epochs: int, ckpt_path: Path | None = None) -> tuple[FIDCallback, ModelCheckpoint]:
        fid = fid_callback(settings, fake_stats)
        checkpoint = ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0)
        trainer = make_trainer(root, [fid, checkpoint], max_epochs=max_epochs, enable_checkpointing=True)
        torch.manual_seed(0)  # the same initial weights in every run
        fit(trainer, TinyGAN(deterministic=True, dropout=0.0), ckpt_path=ckpt_path)
        return fid, checkpoint

    straight, _ = run(tmp_path / "straight", 3)
    first, checkpoint = run(tmp_path / "resumed", 2)
    saved = torch.load(checkpoint.last_model_path, weights_only=False)
    state = saved["callbacks"]["FIDCallback{'name': 'fid'}"]
    assert [h["epoch"] for h in state["history"]] == [0, 1]
    assert set(state) == {"history", "last_score", "evaluated_epoch", "sampling", "real_fingerprint"}
    # Small: no Inception weights, no real statistics, no tensors in the callback state.
    assert len(pickle.dumps(state)) < 2_000
    assert not any("inception" in k or "extractor" in k or "fc_weight" in k for k in saved["state_dict"])

    resumed, _ = run(tmp_path / "resumed", 3, ckpt_path=Path(checkpoint.last_model_path))
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert resumed.history[2]["fid"] == pytest.approx(straight.history[2]["fid"], rel=1e-6)
    assert resumed.history[:2] == first.history == straight.history[:2]

    renamed = fid_callback(settings, fake_stats, name="fid_renamed")
    trainer = make_trainer(tmp_path / "renamed", [renamed], max_epochs=4)  # last.ckpt is now at epoch 3
    with pytest.warns(UserWarning, match=r"no state for `FIDCallback\{'name': 'fid_renamed'\}`"):
        fit(trainer, TinyGAN(deterministic=True, dropout=0.0), ckpt_path=checkpoint.last_model_path)
    assert [h["epoch"] for h in renamed.history] == [3]


@pytest.mark.slow
def test_resume_warns_when_real_statistics_changed(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, fake_stats: Path
) -> None:
    fid = fid_callback(settings, fake_stats)
    fid.load_state_dict({"history": [], "last_score": None, "evaluated_epoch": None, "real_fingerprint": "0" * 16})
    trainer = make_trainer(tmp_path, [fid], max_epochs=1)
    with pytest.warns(UserWarning, match=r"real statistics of `FIDCallback\(name='fid'\)` differ from those of"):
        fit(trainer, TinyGAN())


@pytest.mark.slow
def test_training_trajectory_is_unchanged(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, inception_weights_path: Path
) -> None:
    """Same seed, with and without the callbacks: identical weights and BatchNorm statistics after fit.

    The model draws its latents from the global RNG, uses Dropout and a shuffling loader, and the real statistics
    are computed from a DataLoader: any use of the global random state by the callbacks would show.
    """

    def run(with_callbacks: bool) -> dict[str, torch.Tensor]:
        pl.seed_everything(7, verbose=False)
        extra: list[Callback] = []
        if with_callbacks:
            extra = [fid_callback(settings, loader(shuffle=True), cache_dir=tmp_path / "cache"), is_callback(settings)]
        model = TinyGAN()
        fit(make_trainer(tmp_path, extra, max_epochs=2), model, train_dataloaders=loader(shuffle=True))
        assert all(m.training for m in model.modules())
        assert all(p.requires_grad for p in model.parameters())
        return {k: v.clone() for k, v in model.state_dict().items()}

    without, with_ = run(False), run(True)
    assert fake_extractor.calls > 0
    assert without.keys() == with_.keys()
    for key in without:
        assert torch.equal(without[key], with_[key]), key


@pytest.mark.slow
def test_two_instances_in_one_trainer(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, fake_stats: Path
) -> None:
    small = fid_callback(settings, fake_stats, num_samples=8, batch_size=8)
    large = fid_callback(settings, fake_stats, num_samples=16, every_n_epochs=2, name="fid_16")
    trainer = make_trainer(tmp_path, [small, large], max_epochs=2)
    fit(trainer, TinyGAN())
    assert [h["epoch"] for h in small.history] == [0, 1]
    assert [h["epoch"] for h in large.history] == [1]
    assert trainer.callback_metrics["fid_16_num_samples"] == 16
    assert trainer.callback_metrics["fid_num_samples"] == 8
    assert fake_extractor.calls == 2 * 1 + 1 * 2  # separate passes: different sample counts
    restored = fid_callback(settings, fake_stats, num_samples=8, batch_size=8)
    with pytest.warns(UserWarning, match=r"other sampling settings \(num_samples: 16 -> 8\)"):
        restored.load_state_dict(large.state_dict())
    assert restored.history == large.history


@pytest.mark.slow
def test_clashing_names_are_refused(tmp_path: Path, settings: dict, fake_extractor: FakeExtractor) -> None:
    with pytest.raises(RuntimeError, match=r"Two `FIDCallback` callbacks have name='fid'.* own `name=`"):
        make_trainer(tmp_path, [fid_callback(settings, None), fid_callback(settings, None)])
    trainer = make_trainer(tmp_path, [fid_callback(settings, None, name="is"), is_callback(settings)])
    with pytest.raises(ValueError, match=r"would both log `is`, `is_clamped`, `is_nonfinite`, `is_num_samples`"):
        fit(trainer, TinyGAN(), train_dataloaders=loader())


class _NormalizedImages(TensorDataset):
    """Images normalised already, with the torchvision transform that did it (the pixel-space inference reads it)."""

    def __init__(self, images: torch.Tensor) -> None:
        from torchvision import transforms

        super().__init__(images)
        self.transform = transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.mark.slow
def test_inferred_normalize_names_the_real_datas_transform(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, caplog: pytest.LogCaptureFixture
) -> None:
    # Lightning's loggers do not propagate to the root logger that caplog listens on; this one must.
    monkey = pytest.MonkeyPatch()
    monkey.setattr(logging.getLogger("lightning.pytorch"), "propagate", True)
    real = DataLoader(_NormalizedImages(real_images()), batch_size=8)
    trainer = make_trainer(tmp_path, [fid_callback(settings, real)], max_epochs=1)
    try:
        with caplog.at_level(logging.INFO):
            fit(trainer, TinyGAN())
    finally:
        monkey.undo()
    messages = [r.getMessage() for r in caplog.records if "inferred the pixel space" in r.getMessage()]
    assert len(messages) == 1, messages
    assert (
        "from torchvision Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) in the real data's transform"
        in (messages[0])
    )
    assert "the the" not in messages[0]


class _Probe(Callback):
    def __init__(self, extractor: FakeExtractor) -> None:
        self.extractor = extractor
        self.calls_after_sanity_check: int | None = None

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.calls_after_sanity_check = self.extractor.calls


@pytest.mark.slow
def test_sanity_check_and_fast_dev_run_compute_nothing(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor
) -> None:
    probe = _Probe(fake_extractor)
    fid = fid_callback(settings, loader(), cache_dir=tmp_path / "cache")
    trainer = make_trainer(tmp_path, [fid, probe], max_epochs=1, num_sanity_val_steps=2, limit_val_batches=1)
    fit(trainer, TinyGAN(), train_dataloaders=loader(), val_dataloaders=loader())
    assert probe.calls_after_sanity_check == 0  # not even the real statistics: they come after the check
    assert len(fid.history) == 1

    fake_extractor.calls = 0
    fid = fid_callback(settings, loader(), cache_dir=tmp_path / "cache2")
    trainer = make_trainer(tmp_path, [fid], fast_dev_run=True)
    fit(trainer, TinyGAN(), train_dataloaders=loader())
    assert fake_extractor.calls == 0
    assert fid.history == []
    assert not (tmp_path / "cache2").exists()


@pytest.mark.slow
def test_missing_weights_fail_before_training(tmp_path: Path, settings: dict) -> None:
    steps = []

    class Counting(TinyGAN):
        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            steps.append(batch_idx)
            return super().training_step(batch, batch_idx)

    fid = fid_callback({**settings, "inception_weights": tmp_path / "missing.pth"}, None)
    with pytest.raises(WeightsError, match=r"missing\.pth .* does not exist"):
        fit(make_trainer(tmp_path, [fid]), Counting(), train_dataloaders=loader())
    assert steps == []


@pytest.mark.slow
def test_latent_shape_from_hparams_argument_or_error(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, fake_stats: Path
) -> None:
    with pytest.raises(ValueError, match=r"pass `FIDCallback\(latent_shape=...\)`.*`TinyGAN.hparams` has no"):
        fit(
            make_trainer(tmp_path, [fid_callback(settings, fake_stats)]),
            TinyGAN(save_latent_dim=False),
            train_dataloaders=loader(),
        )

    # An explicit shape, and a sample_fn that does not go through forward (an EMA-like copy of the generator).
    seen_shapes = []

    def sample_fn(pl_module: TinyGAN, z: torch.Tensor) -> torch.Tensor:
        seen_shapes.append(tuple(z.shape))
        return pl_module(z.flatten(1))

    fid = fid_callback(settings, fake_stats, latent_shape=(LATENT_DIM, 1, 1), sample_fn=sample_fn)
    fit(make_trainer(tmp_path, [fid], max_epochs=1), TinyGAN(save_latent_dim=False), train_dataloaders=loader())
    # The pre-flight check in on_train_start draws 2 latents of the bank, the evaluation 2 batches of 8.
    assert seen_shapes == [(2, LATENT_DIM, 1, 1)] + [(8, LATENT_DIM, 1, 1)] * 2
    assert len(fid.history) == 1


def _nan_for_some(pl_module: TinyGAN, z: torch.Tensor) -> torch.Tensor:
    images = pl_module(z)
    bad = z[:, 0] > 0.5  # a fixed subset of the bank
    images[bad] = float("nan")
    return images


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sample_fn", "match"),
    [
        (lambda m, z: m(z) * 127.5 + 127.5, r"outside the declared value_range=\(-1\.0, 1\.0\).*\[0, 255\]"),
        (lambda m, z: m(z).flatten(1), r"`sample_fn\(pl_module, z\)` must return images of shape \(N, C, H, W\)"),
        (lambda m, z: (m(z), None), r"`sample_fn\(pl_module, z\)` must return a tensor of images"),
    ],
)
def test_bad_generator_outputs_raise(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, fake_stats: Path, sample_fn: Callable, match: str
) -> None:
    model = TinyGAN()
    fid = fid_callback(settings, fake_stats, sample_fn=sample_fn)
    with pytest.raises((ValueError, TypeError), match=match):
        fit(make_trainer(tmp_path, [fid], max_epochs=1), model, train_dataloaders=loader())
    assert all(m.training for m in model.modules())  # restored on the way out


@pytest.mark.slow
def test_nonfinite_samples_are_excluded_and_counted(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, fake_stats: Path
) -> None:
    from lightning_ganeval.sampling import LatentBank

    expected_bad = int((LatentBank(16, LATENT_DIM).latents()[:, 0] > 0.5).sum())
    assert 0 < expected_bad < 14  # the seed gives a mixed bank (and splits keep samples)
    fid = fid_callback(settings, fake_stats, sample_fn=_nan_for_some)
    isc = is_callback(settings, sample_fn=_nan_for_some, splits=1)
    trainer = make_trainer(tmp_path, [fid, isc], max_epochs=1)
    with pytest.warns(
        UserWarning, match=rf"epoch 0 \(fid/is\): {expected_bad} of 16 generated samples held NaN or Inf"
    ):
        fit(trainer, TinyGAN(), train_dataloaders=loader())
    metrics = trainer.callback_metrics
    assert metrics["fid_nonfinite"] == expected_bad
    assert metrics["fid_num_samples"] == 16 - expected_bad
    assert metrics["is_num_samples"] == 16 - expected_bad
    assert math.isfinite(fid.last_score)
    assert math.isfinite(isc.last_score)

    fid = fid_callback(settings, fake_stats, sample_fn=_nan_for_some, nonfinite="raise")
    with pytest.raises(ValueError, match=rf"produced {expected_bad} non-finite .* and `nonfinite='raise'`"):
        fit(make_trainer(tmp_path, [fid], max_epochs=1), TinyGAN(), train_dataloaders=loader())


@pytest.mark.slow
def test_real_statistics_are_cached_on_disk(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed = []
    original = real_module._real_pass

    def counting(real: Any, entries: Any, space: Any, image_fn: Any, num_real: Any, *args: Any) -> Any:
        computed.append(num_real)
        return original(real, entries, space, image_fn, num_real, *args)

    monkeypatch.setattr(real_module, "_real_pass", counting)
    scores = []
    for _ in range(2):
        fid = fid_callback(settings, loader(), cache_dir=tmp_path / "cache", num_real=12)
        torch.manual_seed(0)
        fit(make_trainer(tmp_path, [fid], max_epochs=1), TinyGAN(lr=0.0, dropout=0.0), train_dataloaders=loader())
        scores.append(fid.last_score)
    assert computed == [12]  # the second run read the cache
    assert len(list((tmp_path / "cache").glob("real-*.npz"))) == 1
    assert scores[0] == pytest.approx(scores[1], rel=1e-12)

    # real=None: the training dataloader; another count is another cache entry.
    fid = fid_callback(settings, None, cache_dir=tmp_path / "cache")
    fit(make_trainer(tmp_path, [fid], max_epochs=1), TinyGAN(), train_dataloaders=loader())
    assert computed == [12, None]
    assert len(list((tmp_path / "cache").glob("real-*.npz"))) == 2


@pytest.mark.slow
def test_npz_from_another_extractor_is_refused(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, fake_stats: Path
) -> None:
    from lightning_ganeval.stats_files import load_stats

    stats, provenance = load_stats(fake_stats)
    other = save_stats(tmp_path / "other.npz", stats, {**provenance, "extractor": "inception-2015-12-05/abc/tf1"})
    with pytest.raises(ValueError, match="was made with extractor='inception-2015-12-05/abc/tf1'"):
        fit(make_trainer(tmp_path, [fid_callback(settings, other)]), TinyGAN(), train_dataloaders=loader())


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_low_precision_generators(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, fake_stats: Path, precision: str
) -> None:
    seen = []
    original = fake_extractor.forward

    def spy(images: torch.Tensor) -> InceptionFeatures:
        seen.append((torch.get_default_dtype(), torch.is_autocast_enabled("cpu")))
        return original(images)

    fake_extractor.forward = spy
    fid = fid_callback(settings, fake_stats)
    trainer = make_trainer(tmp_path, [fid], max_epochs=1, precision=precision)
    fit(trainer, TinyGAN(dropout=0.0), train_dataloaders=loader())
    assert math.isfinite(fid.last_score)
    assert seen == [(torch.float32, False)] * 2  # the extractor runs outside the precision context


@pytest.mark.slow
def test_callback_pickles_without_runtime_objects_after_setup(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, fake_stats: Path
) -> None:
    fid = fid_callback(settings, fake_stats)
    isc = is_callback(settings)
    model = TinyGAN()
    fit(make_trainer(tmp_path, [fid, isc], max_epochs=1), model, train_dataloaders=loader())
    # The extractor is never attached to the LightningModule (its weights must not reach checkpoints).
    assert not any(isinstance(m, FakeExtractor) for m in model.modules())
    fid._extractor = fake_extractor  # as during fit
    clone = pickle.loads(pickle.dumps(fid))
    assert clone._extractor is None
    assert fid._metric.real is not None
    assert clone._metric.real is None  # no real statistics, accumulators or reference root travel
    assert clone.history == fid.history
    assert np.isfinite(clone.last_score)


@pytest.mark.slow
def test_a_reused_callback_starts_a_new_history_unless_resuming(
    tmp_path: Path, settings: dict, fake_extractor: FakeExtractor, fake_stats: Path
) -> None:
    """Issue 13.6: a second ``fit`` with the same callback starts a new curve; a resume continues the old one."""
    fid = fid_callback(settings, fake_stats)
    first = ModelCheckpoint(dirpath=tmp_path / "first", save_last=True, save_top_k=0)
    fit(make_trainer(tmp_path, [fid, first], enable_checkpointing=True), TinyGAN(deterministic=True))
    assert [h["epoch"] for h in fid.history] == [0, 1]

    # A new fit (another model, e.g. the next run of a sweep): epochs 0, 1 again, not [0, 1, 0, 1].
    second = ModelCheckpoint(dirpath=tmp_path / "second", save_last=True, save_top_k=0)
    fit(make_trainer(tmp_path, [fid, second], enable_checkpointing=True), TinyGAN(deterministic=True))
    assert [h["epoch"] for h in fid.history] == [0, 1]
    assert fid.last_score == fid.history[-1]["fid"]
    saved = torch.load(second.last_model_path, weights_only=False)["callbacks"][fid.state_key]
    assert [h["epoch"] for h in saved["history"]] == [0, 1]  # the checkpointed state too

    # Resuming the first run with the same instance (`ckpt_path=`) continues its history.
    first_history = torch.load(first.last_model_path, weights_only=False)["callbacks"][fid.state_key]["history"]
    fit(make_trainer(tmp_path, [fid], max_epochs=3), TinyGAN(deterministic=True), ckpt_path=first.last_model_path)
    assert [h["epoch"] for h in fid.history] == [0, 1, 2]
    assert fid.history[:2] == first_history

    # So does a state loaded by hand before the fit; the fit after that starts anew again.
    fid.load_state_dict({"history": first_history, "last_score": first_history[-1]["fid"]})
    fit(make_trainer(tmp_path, [fid], max_epochs=3), TinyGAN(deterministic=True))
    assert [h["epoch"] for h in fid.history] == [0, 1, 0, 1, 2]
    fit(make_trainer(tmp_path, [fid], max_epochs=1), TinyGAN(deterministic=True))
    assert [h["epoch"] for h in fid.history] == [0]


@pytest.mark.parametrize("namespace", ["lightning.pytorch", "pytorch_lightning"])
def test_one_state_key_twice_is_refused_naming_name(tmp_path: Path, namespace: str) -> None:
    """Issue 13.12: caught before Lightning's "more than one stateful callback", with the argument that fixes it."""
    trainer_class = importlib.import_module(namespace).Trainer
    once = InceptionScoreCallback()
    cases = [
        ([FIDCallback(), FIDCallback()], r"Two `FIDCallback` callbacks have name='fid'.*Give each its own `name=`"),
        ([once, once], r"`InceptionScoreCallback\(name='is'\)` is listed twice.*its own `name=`"),
    ]
    for callbacks, pattern in cases:
        with pytest.raises(RuntimeError, match=pattern) as info:
            trainer_class(callbacks=callbacks, logger=False, default_root_dir=tmp_path)
        assert "more than one stateful callback" not in str(info.value)
    trainer_class(callbacks=[FIDCallback(), FIDCallback(name="fid_2")], logger=False, default_root_dir=tmp_path)


class _ConfiguresOneCallbackTwice(TinyGAN):
    def __init__(self, callback: Callback) -> None:
        super().__init__()
        self.callback = callback

    def configure_callbacks(self) -> list[Callback]:
        return [self.callback, self.callback]  # Lightning does not check these


def test_one_instance_twice_from_configure_callbacks_is_refused_in_setup(
    tmp_path: Path, settings: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without Lightning's private list check (another Lightning version) the wrapper degrades to nothing...
    from lightning.pytorch.trainer.connectors import callback_connector

    monkeypatch.delattr(callback_connector, "_validate_callbacks_list")
    from lightning_ganeval.callbacks._state_keys import install_trainer_check

    install_trainer_check()
    assert not hasattr(callback_connector, "_validate_callbacks_list")
    monkeypatch.undo()
    # ... and setup still refuses the duplicate before any weights are resolved or any step runs.
    trainer = make_trainer(tmp_path, [])
    with pytest.raises(RuntimeError, match=r"`FIDCallback\(name='fid'\)` is listed twice"):
        fit(trainer, _ConfiguresOneCallbackTwice(fid_callback(settings, None)))


def test_function_keys_equal_exactly_for_equivalent_functions() -> None:
    """Issue 13.15: the group key of a ``sample_fn`` sees code, defaults and captured objects, not identity."""
    import functools

    from lightning_ganeval.callbacks._sample_fns import function_key, provable

    first = lambda pl_module, z: pl_module.generator(z)  # noqa: E731
    second = lambda pl_module, z: pl_module.generator(z)  # noqa: E731 (another line, another object)
    assert first is not second
    assert function_key(first) == function_key(second)
    assert hash(function_key(first)) == hash(function_key(second))
    assert provable(function_key(first))

    def capturing(module: nn.Module) -> Callable[[Any, torch.Tensor], torch.Tensor]:
        return lambda pl_module, z: module(z)

    ema, other = nn.Linear(2, 2), nn.Linear(2, 2)
    assert function_key(capturing(ema)) == function_key(capturing(ema))  # the same captured module
    assert function_key(capturing(ema)) != function_key(capturing(other))
    assert function_key(first) != function_key(lambda pl_module, z: pl_module.ema(z))  # other attribute
    assert function_key(first) != function_key(lambda pl_module, z: pl_module.generator(z) * 2)  # other constant

    def scaled(pl_module: Any, z: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return pl_module(z) * scale

    assert function_key(functools.partial(scaled, scale=2.0)) == function_key(functools.partial(scaled, scale=2.0))
    assert function_key(functools.partial(scaled, scale=2.0)) != function_key(functools.partial(scaled, scale=3.0))

    class Sampler:
        def __call__(self, pl_module: Any, z: torch.Tensor) -> torch.Tensor:
            return pl_module(z)

    one, two = Sampler(), Sampler()
    assert function_key(one.__call__) == function_key(one.__call__)  # bound methods of one object
    assert function_key(one) == function_key(one)
    assert function_key(one) != function_key(two)
    assert not provable(function_key(one))  # a callable object: identity only, so the callbacks warn
    assert function_key(None) is None
