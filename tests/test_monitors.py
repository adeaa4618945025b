"""The EarlyStopping / ModelCheckpoint adjustments degrade to a warning where Lightning lacks a private hook."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lightning_ganeval.callbacks.monitors import MonitorAdjustments, _FreshGate


def _adjust(*callbacks: object, every_n_epochs: int = 2) -> MonitorAdjustments:
    owner = SimpleNamespace(_logged_keys=lambda: ["fid"], every_n_epochs=every_n_epochs, _evaluated_epoch=-1)
    adjustments = MonitorAdjustments(owner)
    adjustments.apply(SimpleNamespace(callbacks=list(callbacks)))
    return adjustments


def test_present_hooks_are_gated_and_undone(tmp_path) -> None:
    stopper = EarlyStopping(monitor="fid")
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="fid")
    adjustments = _adjust(stopper, checkpoint)
    assert isinstance(stopper.__dict__["_run_early_stopping_check"], _FreshGate)
    assert isinstance(checkpoint.__dict__["_save_topk_checkpoint"], _FreshGate)
    adjustments.undo()
    assert "_run_early_stopping_check" not in stopper.__dict__
    assert "_save_topk_checkpoint" not in checkpoint.__dict__


def test_early_stopping_without_the_private_hook_warns_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(EarlyStopping, "_run_early_stopping_check")
    stopper = EarlyStopping(monitor="fid")
    with pytest.warns(UserWarning, match=r"_run_early_stopping_check.*every_n_epochs=1.*check_on_train_epoch_end=True"):
        _adjust(stopper)
    assert "_run_early_stopping_check" not in stopper.__dict__  # untouched, no half-applied adjustment
    assert stopper._check_on_train_epoch_end is None


def test_checkpoint_without_the_private_hook_warns_with_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delattr(ModelCheckpoint, "_save_topk_checkpoint")
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="fid")
    with pytest.warns(UserWarning, match=r"_save_topk_checkpoint.*ModelCheckpoint\(every_n_epochs=3"):
        _adjust(checkpoint, every_n_epochs=3)
    assert "_save_topk_checkpoint" not in checkpoint.__dict__
    assert checkpoint._save_on_train_epoch_end is None


def test_early_stopping_skips_a_nan_evaluation_with_its_reason() -> None:
    """A NaN value is not handed to EarlyStopping (which would stop the fit); the warning gives the owner's reason."""
    stopper = EarlyStopping(monitor="fid")
    owner = SimpleNamespace(
        _logged_keys=lambda: ["fid"],
        every_n_epochs=1,
        _evaluated_epoch=3,
        _nan_reasons={"fid": "only 1 of the 16 generated samples were finite"},
    )
    MonitorAdjustments(owner).apply(SimpleNamespace(callbacks=[stopper]))
    trainer = SimpleNamespace(current_epoch=3, callback_metrics={"fid": torch.tensor(math.nan)}, should_stop=False)
    with pytest.warns(UserWarning, match=r"skips epoch 3: `fid` is NaN because only 1 of the 16 generated samples"):
        assert stopper._run_early_stopping_check(trainer) is None
    assert stopper.wait_count == 0
    assert not trainer.should_stop


def _without(cls: type, name: str) -> type:
    """A subclass standing in for a Lightning release that lacks ``name`` (a method or an attribute set in
    ``__init__``): ``hasattr`` is False for it, everything else is Lightning's."""

    def __getattribute__(self: Any, attribute: str) -> Any:
        if attribute == name:
            raise AttributeError(attribute)
        return cls.__getattribute__(self, attribute)

    return type(f"{cls.__name__}Without{name}", (cls,), {"__getattribute__": __getattribute__})


@pytest.mark.parametrize(
    ("cls", "name", "every_n_epochs", "fix"),
    [
        (EarlyStopping, "_run_early_stopping_check", 2, "count `patience` in epochs (2 per evaluation)"),
        (EarlyStopping, "_check_on_train_epoch_end", 1, "`EarlyStopping(check_on_train_epoch_end=True)`."),
        (
            ModelCheckpoint,
            "_save_topk_checkpoint",
            3,
            "`ModelCheckpoint(every_n_epochs=3, save_on_train_epoch_end=True)`",
        ),
        (
            ModelCheckpoint,
            "_save_on_train_epoch_end",
            2,
            "`ModelCheckpoint(every_n_epochs=2, save_on_train_epoch_end=True)`",
        ),
    ],
)
def test_each_missing_private_attribute_gives_exactly_one_warning_and_no_adjustment(
    cls: type, name: str, every_n_epochs: int, fix: str, tmp_path
) -> None:
    """A Lightning without any one of the four private attributes: no crash, one warning that names the missing
    attribute, the stale-value risk and the public settings that avoid it, and the callback left exactly as built."""
    kwargs = {"dirpath": tmp_path} if cls is ModelCheckpoint else {}
    monitor = _without(cls, name)(monitor="fid", **kwargs)
    before = dict(monitor.__dict__)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adjustments = _adjust(monitor, every_n_epochs=every_n_epochs)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert f".{name}`" in messages[0]
    assert "stale or missing value" in messages[0]
    assert fix in messages[0]
    assert monitor.__dict__ == before  # nothing half-applied
    adjustments.undo()
    assert monitor.__dict__ == before
