"""When the callbacks evaluate and which weights they score: step schedules and ``WeightAveraging``.

Tiny CPU Trainers with the `FakeExtractor` (see test_callbacks.py): these tests are about Lightning's step counting,
checkpoints, resumes and the averaged copy, not about Inception.
"""

# ruff: noqa: F811  (the fixtures imported from test_callbacks are redefined as arguments)
from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, EMAWeightAveraging, ModelCheckpoint
from test_callbacks import (  # noqa: F401  (fixtures are imported by name)
    TinyGAN,
    fake_extractor,
    fake_stats,
    fid_callback,
    fit,
    is_callback,
    loader,
    make_trainer,
    settings,
)

from lightning_ganeval import FIDCallback, InceptionScoreCallback

# ------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("cls", [FIDCallback, InceptionScoreCallback])
def test_epoch_and_step_schedules_are_exclusive(cls: type) -> None:
    with pytest.raises(ValueError, match=r"`every_n_epochs=2` and `every_n_train_steps=10` are mutually exclusive"):
        cls(every_n_epochs=2, every_n_train_steps=10)
    with pytest.raises(ValueError, match="every_n_train_steps"):
        cls(every_n_train_steps=0)
    with pytest.raises(ValueError, match="model_weights"):
        cls(model_weights="ema")
    assert cls().every_n_epochs == 1
    assert cls().every_n_train_steps is None
    steps = cls(every_n_train_steps=5)
    assert steps.every_n_epochs is None
    assert steps.every_n_train_steps == 5


# --------------------------------------------------------------------------------------- step schedules


class ManualGAN(TinyGAN):
    """Manual optimization with two optimizers, as GANs do: two optimizer steps (global_step += 2) per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.critic = torch.nn.Linear(3 * 8 * 8, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = batch[0]
        fake = self(self._latents(len(real)))
        loss_d = (self.critic(fake.detach().flatten(1)) - self.critic(real.flatten(1))).mean()
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        loss_g = ((fake - real) ** 2).mean()
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.SGD(self.net.parameters(), lr=0.05), torch.optim.SGD(self.critic.parameters(), lr=0.05)]


@pytest.mark.parametrize(
    ("model", "trainer_kwargs", "every", "steps"),
    [
        # 2 batches per epoch, 3 epochs: global_step 1..6.
        (TinyGAN, {}, 2, [2, 4, 6]),
        # Gradient accumulation over 2 batches: one optimizer step per epoch.
        (TinyGAN, {"accumulate_grad_batches": 2, "max_epochs": 4}, 2, [2, 4]),
        # Two optimizers stepped per batch: global_step moves by 2; every 4 steps = every 2 batches.
        (ManualGAN, {}, 4, [4, 8, 12]),
        # ... and a schedule that is not a multiple of 2 is crossed, not missed: steps 2, 4, 6, ... cross 3, 6, 9, 12.
        (ManualGAN, {}, 3, [4, 6, 10, 12]),
    ],
)
def test_step_schedule_counts_optimizer_steps(
    tmp_path: Path,
    settings: dict,
    fake_extractor: Any,
    fake_stats: Path,
    model: type,
    trainer_kwargs: dict,
    every: int,
    steps: list[int],
) -> None:
    fid = fid_callback(settings, fake_stats, every_n_train_steps=every)
    trainer = make_trainer(tmp_path, [fid], **{"max_epochs": 3, **trainer_kwargs})
    fit(trainer, model())
    assert [h["step"] for h in fid.history] == steps
    assert all(h["fid"] > 0 for h in fid.history)


def test_step_schedule_with_checkpoint_and_resume(
    tmp_path: Path, settings: dict, fake_extractor: Any, fake_stats: Path
) -> None:
    # ModelCheckpoint on the same step schedule ranks each evaluation by its own value; a resumed run continues the
    # schedule (no evaluation repeated at the restored step) and the history.
    def run(max_epochs: int, ckpt_path: str | None = None) -> tuple[FIDCallback, ModelCheckpoint]:
        fid = fid_callback(settings, fake_stats, every_n_train_steps=2)
        checkpoint = ModelCheckpoint(
            dirpath=tmp_path / "ckpt",
            monitor="fid",
            every_n_train_steps=2,
            save_top_k=-1,
            save_last=True,
            filename="{step}-{fid:.6f}",
        )
        trainer = make_trainer(tmp_path, [fid, checkpoint], max_epochs=max_epochs, enable_checkpointing=True)
        fit(trainer, TinyGAN(deterministic=True), ckpt_path=ckpt_path)
        return fid, checkpoint

    fid, checkpoint = run(2)
    assert [h["step"] for h in fid.history] == [2, 4]
    by_step = {h["step"]: h["fid"] for h in fid.history}
    ranked = {int(re.search(r"step=(\d+)", p).group(1)): float(s) for p, s in checkpoint.best_k_models.items()}
    assert ranked == pytest.approx(by_step, rel=1e-6)
    resumed, _ = run(3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [h["step"] for h in resumed.history] == [2, 4, 6]
    assert resumed.history[:2] == fid.history


def test_early_stopping_on_a_step_schedule_checks_epochs_with_an_evaluation(
    tmp_path: Path, settings: dict, fake_extractor: Any, fake_stats: Path
) -> None:
    # 2 optimizer steps per epoch, evaluation every 4 steps: epochs 1, 3, 5 hold one; EarlyStopping looks only then.
    seen: list[int] = []

    class Spy(EarlyStopping):
        def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
            seen.append(trainer.current_epoch)
            super()._run_early_stopping_check(trainer)

    fid = fid_callback(settings, fake_stats, every_n_train_steps=4)
    trainer = make_trainer(tmp_path, [fid, Spy(monitor="fid", patience=10)], max_epochs=6)
    fit(trainer, TinyGAN())
    assert [h["step"] for h in fid.history] == [4, 8, 12]
    assert seen == [1, 3, 5]


# ------------------------------------------------------------------------------------- averaged weights


class _Snapshot(Callback):
    """The LightningModule's parameters after the last training batch (before any callback's epoch end)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def _recording_sample_fn(seen: list[Any]) -> Any:
    def sample(pl_module: pl.LightningModule, z: torch.Tensor) -> torch.Tensor:
        seen.append(pl_module)
        return pl_module(z)

    return sample


def _module_class(namespace: str) -> type:
    """A small generator LightningModule subclassing the given namespace's LightningModule."""
    base = importlib.import_module(namespace).LightningModule

    class Generator(base):  # type: ignore[misc, valid-type]
        def __init__(self, latent_dim: int = 8) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(latent_dim, 3 * 8 * 8), torch.nn.BatchNorm1d(3 * 8 * 8))

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.net(z)).view(-1, 3, 8, 8)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            real = batch[0]
            return ((self(torch.randn(len(real), 8)) - real) ** 2).mean()

        def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
            self.log("val_loss", (batch[0] ** 2).mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.5)

    return Generator


@pytest.mark.parametrize("namespace", ["lightning.pytorch", "pytorch_lightning"])
@pytest.mark.parametrize("validation", [False, True])
def test_averaged_weights_are_scored_by_default(
    tmp_path: Path, settings: dict, fake_extractor: Any, fake_stats: Path, namespace: str, validation: bool
) -> None:
    callbacks_module = importlib.import_module(f"{namespace}.callbacks")
    seen: list[Any] = []
    fid = fid_callback(settings, fake_stats, sample_fn=_recording_sample_fn(seen))
    averaging = callbacks_module.EMAWeightAveraging(decay=0.5)
    snapshot = _Snapshot()
    kwargs: dict[str, Any] = {"limit_val_batches": 1} if validation else {"limit_val_batches": 0}
    if namespace == "pytorch_lightning":
        trainer = importlib.import_module(namespace).Trainer(
            default_root_dir=tmp_path,
            callbacks=[fid, averaging, snapshot],
            accelerator="cpu",
            devices=1,
            max_epochs=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            **kwargs,
        )
    else:
        trainer = make_trainer(tmp_path, [fid, averaging, snapshot], **kwargs)
    model = _module_class(namespace)()
    fit(trainer, model, val_dataloaders=loader() if validation else None)
    assert len(fid.history) == 2
    evaluated = {id(m) for m in seen[1:]}  # seen[0]: the pre-flight batch, on the module itself
    assert evaluated == {id(averaging._average_model.module)}
    assert id(model) not in evaluated


def test_both_weights_are_logged_and_differ(
    tmp_path: Path, settings: dict, fake_extractor: Any, fake_stats: Path
) -> None:
    fid = fid_callback(settings, fake_stats, model_weights="both")
    score = is_callback(settings, model_weights="current")
    trainer = make_trainer(tmp_path, [fid, score, EMAWeightAveraging(decay=0.9)], max_epochs=2)
    fit(trainer, TinyGAN(lr=0.5))
    for entry in fid.history:
        assert {"fid", "fid_current"} <= set(entry)
        # EMA with decay 0.9 over 2-4 steps lags far behind the trained weights.
        assert entry["fid"] != pytest.approx(entry["fid_current"], rel=1e-3)
    assert "fid_current" in trainer.callback_metrics
    assert "is_current" not in trainer.callback_metrics
    # The Inception Score callback scored the current weights: the same samples as fid_current's.
    assert len(score.history) == 2


def test_current_weights_without_averaging_and_on_request(
    tmp_path: Path, settings: dict, fake_extractor: Any, fake_stats: Path
) -> None:
    seen: list[Any] = []
    fid = fid_callback(settings, fake_stats, sample_fn=_recording_sample_fn(seen), model_weights="current")
    model = TinyGAN()
    trainer = make_trainer(tmp_path, [fid, EMAWeightAveraging()], max_epochs=1)
    fit(trainer, model)
    assert {id(m) for m in seen} == {id(model)}


def test_a_failing_evaluation_leaves_the_weights_alone(
    tmp_path: Path, settings: dict, fake_extractor: Any, fake_stats: Path
) -> None:
    # The averaged copy is sampled where it is, never swapped in: after an evaluation that raises, the module holds
    # exactly the weights training left there.
    calls = {"n": 0}

    def failing(pl_module: pl.LightningModule, z: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > 1:  # after the pre-flight batch
            raise RuntimeError("generator failed")
        return pl_module(z)

    fid = fid_callback(settings, fake_stats, sample_fn=failing)
    averaging = EMAWeightAveraging(decay=0.5)
    snapshot = _Snapshot()
    model = TinyGAN()
    trainer = make_trainer(tmp_path, [fid, averaging, snapshot], max_epochs=1)
    with pytest.raises(RuntimeError, match="generator failed"):
        fit(trainer, model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshot.state[key]), key


def test_both_weights_without_an_averaging_callback_say_so(
    tmp_path: Path, settings: dict, fake_extractor: Any, fake_stats: Path
) -> None:
    # `model_weights="both"` promises `fid_current`; without a WeightAveraging callback there is none to log.
    fid = fid_callback(settings, fake_stats, model_weights="both")
    with pytest.warns(UserWarning, match=r"model_weights='both'\)` finds no WeightAveraging callback"):
        fit(make_trainer(tmp_path, [fid], max_epochs=1), TinyGAN())
    assert "fid_current" not in fid.history[0]
    assert "fid" in fid.history[0]
