"""What an evaluation warns about, and that it never trains the generator, from a plain loop and from a Trainer.

The warning policy lives in the :class:`~lightning_ganeval.Evaluator` (clamped pixels above 5 %, non-finite samples,
every NaN value with its reason), so a plain loop warns like the callbacks; the callbacks forward the evaluator's
warnings once per evaluation of their shared pass, and an ``EarlyStopping`` on a key that came out NaN skips that
evaluation with the reason instead of stopping the fit. An evaluation runs every module it can reach in eval mode and
leaves every BatchNorm statistic as it found it, also for ``evaluate(lambda z: G(z))`` and an EMA copy held as a
plain attribute.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from fakes import FakeExtractor
from test_evaluator import trained_generator
from tiny_nets import LATENT_DIM, real_images
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_ganeval import FID, KID, EvaluationWarning, Evaluator, InceptionScore, PrecisionRecall
from lightning_ganeval.sampling import LatentBank, eval_mode_guard, modules_of

NUM_SAMPLES, BATCH, NUM_REAL, SEED = 20, 8, 24, 3


def four_metrics(subset_size: int = 4) -> list[Any]:
    return [
        FID(),
        InceptionScore(splits=2),
        KID(subsets=3, subset_size=subset_size, max_real=NUM_REAL),
        PrecisionRecall(k=2, max_real=NUM_REAL),
    ]


def make_evaluator(metrics: list[Any], real_space: tuple[float, float] = (-1.0, 1.0), **kwargs: Any) -> Evaluator:
    options = {"num_samples": NUM_SAMPLES, "latent_shape": LATENT_DIM, "batch_size": BATCH, "seed": SEED}
    evaluator = Evaluator(metrics, inception=FakeExtractor(), **{**options, **kwargs})
    low, high = real_space
    images = (real_images(NUM_REAL, seed=1) + 1) / 2 * (high - low) + low
    evaluator.prepare_real(DataLoader(TensorDataset(images), batch_size=BATCH), space=real_space)
    return evaluator


def evaluation_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, EvaluationWarning)]


def evaluate_recording(evaluator: Evaluator, generate: Any, **kwargs: Any) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = evaluator.evaluate(generate, **kwargs)
    return result, evaluation_warnings(record)


def bank_first_components() -> torch.Tensor:
    return LatentBank(NUM_SAMPLES, LATENT_DIM, seed=SEED, batch_size=BATCH).latents()[:, 0]


# ------------------------------------------------------------------------- warnings from a plain loop (13.4)


def test_minus_one_one_generator_read_as_zero_one_warns_once() -> None:
    """A tanh generator evaluated in the space [0, 1]: about half the values clamped, one warning with both fixes."""
    evaluator = make_evaluator(four_metrics(), real_space=(0.0, 1.0), space=(0.0, 1.0))
    result, emitted = evaluate_recording(evaluator, trained_generator().eval())
    assert 0.3 < result.clamped_fraction < 0.7  # tanh output around 0: roughly half below 0
    assert len(emitted) == 1, emitted  # one warning for four metrics
    assert emitted == result.warnings
    message = emitted[0]
    assert f"{100 * result.clamped_fraction:.1f}% of the generated pixel values" in message
    assert "value_range=(0.0, 1.0)" in message
    assert "clamped" in message
    # Advice for a wrong space and for a right space early in training.
    assert "`space=`" in message
    assert "early in training" in message

    # The same generator in its own space: nothing to say.
    result, emitted = evaluate_recording(make_evaluator(four_metrics()), trained_generator().eval())
    assert result.clamped_fraction == 0.0
    assert emitted == []
    assert result.warnings == []


def test_half_nan_samples_warn_with_the_count() -> None:
    bad = bank_first_components() > 0
    expected = int(bad.sum())
    assert 5 <= expected <= NUM_SAMPLES - 8  # enough finite samples left for every metric

    generator = trained_generator().eval()

    def half_nan(z: torch.Tensor) -> torch.Tensor:
        images = generator(z)
        images[z[:, 0] > 0] = float("nan")
        return images

    result, emitted = evaluate_recording(make_evaluator(four_metrics()), half_nan)
    assert result.num_nonfinite == expected
    assert emitted == [
        f"{expected} of {NUM_SAMPLES} generated samples held NaN or Inf; they are left out of every metric"
        " (counted as `nonfinite`)."
    ]
    assert all(math.isfinite(v) for v in result.values.values())
    assert result.nan_reasons == {}


def test_kid_nan_says_that_too_few_finite_samples_remained() -> None:
    """With fewer finite samples than `subset_size`, KID is NaN and the result and the warning say exactly why."""
    first = bank_first_components()
    keep = first.topk(5).values  # 5 finite samples, KID draws 8 per subset
    generator = trained_generator().eval()

    def mostly_nan(z: torch.Tensor) -> torch.Tensor:
        images = generator(z)
        images[~torch.isin(z[:, 0], keep)] = float("nan")
        return images

    evaluator = make_evaluator([FID(), KID(subsets=3, subset_size=8, max_real=NUM_REAL)])
    result, emitted = evaluate_recording(evaluator, mostly_nan)
    assert result.num_nonfinite == NUM_SAMPLES - 5
    assert math.isnan(result.values["kid"])
    assert math.isnan(result.values["kid_std"])
    assert math.isfinite(result.values["fid"])
    reason = (
        f"only 5 of the {NUM_SAMPLES} generated samples were finite (the others held NaN or Inf and were left out),"
        " fewer than the subset_size=8 rows each KID subset draws"
    )
    assert result.nan_reasons == {"kid": reason, "kid_std": reason}
    assert emitted[-1] == f"`kid`, `kid_std` are NaN: {reason}."
    assert len(emitted) == 2  # the non-finite count, then the NaN


def test_every_nan_value_has_a_reason() -> None:
    """No sample finite: every metric's NaN comes with its own reason, and no value is NaN without one."""
    generator = trained_generator().eval()
    evaluator = make_evaluator(
        [FID(extrapolate=True, extrapolation_points=2), InceptionScore(splits=2), *four_metrics()[2:]]
    )
    result, emitted = evaluate_recording(evaluator, lambda z: generator(z) * float("nan"))
    nan_keys = {k for k, v in result.values.items() if math.isnan(v)}
    assert nan_keys == set(result.nan_reasons)
    assert {"fid", "fid_inf", "is", "is_std", "kid", "precision", "coverage"} <= nan_keys
    assert "a covariance needs at least 2" in result.nan_reasons["fid"]
    assert "received no samples" in result.nan_reasons["is"]
    assert "k=2 nearest neighbours need more than 2" in result.nan_reasons["precision"]
    assert all("returned NaN without a reason" not in r for r in result.nan_reasons.values())
    assert len(emitted) == len(result.warnings) == 1 + len(set(result.nan_reasons.values()))


def test_cmmd_vendi_and_memorization_explain_their_nan() -> None:
    """Every NaN of the newer metrics has its reason; C_T turned off (``test_fraction=0``) is reported, not warned."""
    from lightning_ganeval.metrics import CMMD, Memorization, VendiScore

    def metrics() -> list[Any]:
        return [CMMD(max_real=NUM_REAL), VendiScore(), Memorization(max_real=NUM_REAL, test_fraction=0.0)]

    generator = trained_generator().eval()
    result, emitted = evaluate_recording(make_evaluator(metrics()), lambda z: generator(z) * float("nan"))
    nan_keys = {k for k, v in result.values.items() if math.isnan(v)}
    assert nan_keys == {"cmmd", "vendi", "authpct", "ct", "memorized_fraction"}
    assert set(result.nan_reasons) == nan_keys
    assert all("returned NaN without a reason" not in r for r in result.nan_reasons.values())

    result, emitted = evaluate_recording(make_evaluator(metrics()), generator)
    assert [k for k, v in result.values.items() if math.isnan(v)] == ["ct"]
    assert "held-out test rows" in result.nan_reasons["ct"]
    assert emitted == []


def test_warn_false_reports_without_warning() -> None:
    evaluator = make_evaluator(four_metrics(), real_space=(0.0, 1.0), space=(0.0, 1.0))
    result, emitted = evaluate_recording(evaluator, trained_generator().eval(), warn=False)
    assert emitted == []
    assert len(result.warnings) == 1
    assert "clamped" in result.warnings[0]


# ---------------------------------------------------------------- a closure never trains BatchNorm (13.5)


def _buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in module.named_buffers()}


def _assert_bit_identical(before: dict[str, torch.Tensor], module: nn.Module) -> None:
    after = dict(module.named_buffers())
    assert before.keys() == after.keys()
    for name, buffer in before.items():
        assert torch.equal(buffer, after[name]), name


def test_closure_keeps_batchnorm_statistics_and_scores_in_eval_mode() -> None:
    """``evaluate(lambda z: G(z))`` with G in training mode: statistics bit-identical, values of eval mode (exact)."""
    evaluator = make_evaluator(four_metrics())
    generator = trained_generator()
    before = _buffers(generator)
    closure = evaluator.evaluate(lambda z: generator(z), warn=False)
    _assert_bit_identical(before, generator)
    assert all(m.training for m in generator.modules())  # training mode given back

    reference = copy.deepcopy(generator).eval()
    expected = evaluator.evaluate(lambda z: reference(z), warn=False)
    assert closure.values == expected.values  # the same computation in eval mode: exactly equal


def test_sample_fn_that_switches_to_train_mode_still_runs_in_eval_mode() -> None:
    """A generator function that calls ``G.train()`` itself gets eval mode anyway, and leaves no statistic changed."""
    evaluator = make_evaluator(four_metrics())
    generator = trained_generator()
    before = _buffers(generator)
    reference = copy.deepcopy(generator).eval()

    def in_train_mode(z: torch.Tensor) -> torch.Tensor:
        generator.train()
        return generator(z)

    result = evaluator.evaluate(in_train_mode, module=generator, warn=False)
    _assert_bit_identical(before, generator)
    assert result.values == evaluator.evaluate(reference, warn=False).values


class Holder(nn.Module):
    """A module whose EMA generator is not a registered submodule (set with ``object.__setattr__``, or in a list)."""

    def __init__(self, generator: nn.Module, in_list: bool) -> None:
        super().__init__()
        self.generator = generator
        ema = copy.deepcopy(generator)
        if in_list:
            self.averaged = [ema]
        else:
            object.__setattr__(self, "ema", ema)

    def ema_copy(self) -> nn.Module:
        return self.averaged[0] if hasattr(self, "averaged") else self.__dict__["ema"]


@pytest.mark.parametrize("in_list", [False, True], ids=["object-setattr", "list"])
def test_unregistered_ema_copy_keeps_its_statistics(in_list: bool) -> None:
    evaluator = make_evaluator(four_metrics())
    holder = Holder(trained_generator(), in_list)
    ema = holder.ema_copy()
    assert ema not in list(holder.modules())  # really not registered
    before = _buffers(ema)
    reference = copy.deepcopy(ema).eval()
    result = evaluator.evaluate(lambda z: holder.ema_copy()(z), module=holder, warn=False)
    _assert_bit_identical(before, ema)
    assert all(m.training for m in ema.modules())
    assert result.values == evaluator.evaluate(reference, warn=False).values


def test_eval_mode_guard_covers_modules_nobody_found() -> None:
    """A module in training mode that no search found runs in eval mode inside the guard, and gets its flag back."""
    hidden = trained_generator()
    before = _buffers(hidden)
    reference = copy.deepcopy(hidden).eval()
    z = torch.randn(4, LATENT_DIM)
    with torch.no_grad(), eval_mode_guard():
        out = hidden(z)
        assert not any(m.training for m in hidden.modules())
    _assert_bit_identical(before, hidden)
    assert all(m.training for m in hidden.modules())
    with torch.no_grad():
        assert torch.equal(out, reference(z))


GLOBAL_GENERATOR = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


class Plain:
    """A plain-PyTorch GAN wrapper, not a module."""

    def __init__(self) -> None:
        self.G = nn.Linear(2, 2)
        self.G_ema = nn.Linear(2, 2)

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        return self.G_ema(z)


def test_modules_of_finds_the_modules_a_callable_runs() -> None:
    local = nn.Linear(2, 2)
    plain = Plain()
    assert modules_of(local) == [local]
    assert modules_of(lambda z: local(z)) == [local]
    assert modules_of(lambda z: GLOBAL_GENERATOR(z)) == [GLOBAL_GENERATOR]  # a script's global
    assert modules_of(lambda z: torch.tanh(GLOBAL_GENERATOR(z))) == [GLOBAL_GENERATOR]
    assert modules_of(plain.sample) == [plain.G, plain.G_ema]  # a bound method's self
    assert modules_of(functools.partial(lambda g, z: g(z), local)) == [local]
    assert modules_of(lambda z: [m(z) for m in (local,)]) == [local]
    # Submodules of a module found are not listed again.
    assert modules_of(lambda z: GLOBAL_GENERATOR[1](GLOBAL_GENERATOR(z))) == [GLOBAL_GENERATOR]
    assert modules_of(lambda z: z) == []


# ------------------------------------------------------------------------------ callbacks (13.11, 13.16)

LIGHTNING_IMAGE_SIZE = 8


def _trainer_run(
    tmp_path: Path, callbacks: list[Any], data: torch.Tensor, max_epochs: int, model: Any = None
) -> tuple[Any, list[Any]]:
    import lightning.pytorch as pl
    from test_callbacks import TinyGAN

    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = TinyGAN() if model is None else model
        trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(data), batch_size=8))
    return trainer, record


def _callback_settings(inception_weights_path: Path) -> dict[str, Any]:
    return {"num_samples": 16, "batch_size": 8, "inception_weights": inception_weights_path, "progress": False}


@pytest.fixture
def fake_inception(monkeypatch: pytest.MonkeyPatch) -> FakeExtractor:
    import lightning_ganeval.callbacks.base as callbacks_module

    fake = FakeExtractor()
    monkeypatch.setattr(callbacks_module, "get_extractor", lambda *args, **kwargs: fake)
    return fake


def _sample(pl_module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    return pl_module(z)


@pytest.mark.slow
def test_four_callbacks_warn_once_per_evaluation_about_clamping(
    tmp_path: Path, inception_weights_path: Path, fake_inception: FakeExtractor
) -> None:
    """A tanh generator trained on [0, 1] data: one clamp warning per evaluation for four callbacks, not four."""
    from lightning_ganeval import FIDCallback, InceptionScoreCallback, KIDCallback, PrecisionRecallCallback

    data = (real_images(16, seed=1) + 1) / 2  # [0, 1]
    real = DataLoader(TensorDataset(data), batch_size=8)
    common = {**_callback_settings(inception_weights_path), "sample_fn": _sample, "value_range": (0, 1)}
    callbacks = [
        FIDCallback(real=real, log_images=0, **common),
        InceptionScoreCallback(splits=2, **common),
        KIDCallback(real=real, subsets=2, subset_size=8, **common),
        PrecisionRecallCallback(real=real, k=2, **common),
    ]
    trainer, record = _trainer_run(tmp_path, callbacks, data, max_epochs=2)
    clamp = [m for m in evaluation_warnings(record) if "clamped" in m]
    assert len(clamp) == 2, clamp  # one per evaluation (2 epochs)
    for epoch, message in enumerate(clamp):
        assert message.startswith(f"lightning_ganeval, epoch {epoch} (fid/is/kid/pr): ")
        # Names what the callbacks log and take, and advises for a wrong space and for early training.
        assert "`fid_clamped`, `is_clamped`, `kid_clamped`, `pr_clamped`" in message
        assert "`value_range=` (or `normalize=`)" in message
        assert "early in training" in message
    assert trainer.callback_metrics["fid_clamped"] > 0.05


def _first_three_finite(pl_module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Finite images for the first 3 latents of the bank (the pre-flight draws the first 2), NaN for the others."""
    keep = LatentBank(16, LATENT_DIM).latents()[:3, 0]
    images = pl_module(z)
    images[~torch.isin(z[:, 0], keep)] = float("nan")
    return images


@pytest.mark.slow
def test_early_stopping_on_kid_skips_a_nan_and_says_why(
    tmp_path: Path, inception_weights_path: Path, fake_inception: FakeExtractor
) -> None:
    """KID NaN because 3 finite samples are fewer than subset_size=8: EarlyStopping neither stops nor stays silent."""
    from lightning.pytorch.callbacks import EarlyStopping

    from lightning_ganeval import KIDCallback

    data = real_images(16, seed=1)
    kid = KIDCallback(
        real=DataLoader(TensorDataset(data), batch_size=8),
        subsets=2,
        subset_size=8,
        sample_fn=_first_three_finite,
        **_callback_settings(inception_weights_path),
    )
    stopper = EarlyStopping(monitor="kid", patience=0)
    trainer, record = _trainer_run(tmp_path, [kid, stopper], data, max_epochs=2)
    assert trainer.current_epoch == 2
    assert not trainer.should_stop
    assert [math.isnan(entry["kid"]) for entry in kid.history] == [True, True]
    reason = "only 3 of the 16 generated samples were finite"
    skips = [str(w.message) for w in record if "skips epoch" in str(w.message)]
    assert len(skips) == 2
    assert skips[0].startswith("`EarlyStopping(monitor='kid')` skips epoch 0: `kid` is NaN because " + reason)
    assert "subset_size=8" in skips[0]
    assert "neither stops training nor counts towards `patience`" in skips[0]
    forwarded = [m for m in evaluation_warnings(record) if "`kid`, `kid_std` are NaN" in m]
    assert len(forwarded) == 2
    assert reason in forwarded[0]
    assert forwarded[0].startswith("lightning_ganeval, epoch 0 (kid): ")


def _sample_ema(pl_module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    return pl_module.__dict__["ema"](z)


@pytest.mark.slow
def test_sample_fn_on_an_unregistered_ema_copy_keeps_its_statistics(
    tmp_path: Path, inception_weights_path: Path, fake_inception: FakeExtractor
) -> None:
    """An EMA generator kept as a plain attribute and sampled in ``sample_fn``: its BatchNorm statistics and training
    flags are bit-identical after two evaluations (on main they took the evaluation batches' statistics)."""
    from test_callbacks import TinyGAN

    from lightning_ganeval import FIDCallback

    ema = trained_generator()  # training mode, like a copy made in __init__ and never switched
    before = _buffers(ema)
    torch.manual_seed(0)
    model = TinyGAN()
    object.__setattr__(model, "ema", ema)  # not a registered submodule: not in .modules(), not moved, not saved
    data = real_images(16, seed=1)
    fid = FIDCallback(
        real=DataLoader(TensorDataset(data), batch_size=8),
        log_images=0,
        sample_fn=_sample_ema,
        latent_shape=LATENT_DIM,
        **_callback_settings(inception_weights_path),
    )
    _trainer_run(tmp_path, [fid], data, max_epochs=2, model=model)
    assert len(fid.history) == 2
    _assert_bit_identical(before, ema)
    assert all(m.training for m in ema.modules())
    # Both evaluations sampled the same (unchanged, eval-mode) EMA generator from the same bank: equal values.
    assert fid.history[0]["fid"] == fid.history[1]["fid"]


def test_ppl_of_a_closure_keeps_batchnorm_statistics(tmp_path: Path) -> None:
    """PPL's own pass, like the Evaluator: ``evaluate(lambda z: G(z))`` with G in training mode changes no BatchNorm
    statistic and gives the eval-mode value (exactly)."""
    from lightning_ganeval.lpips import LPIPSVGG16
    from lightning_ganeval.metrics.ppl import PerceptualPathLength
    from lightning_ganeval.testing import write_random_lpips_weights

    lpips_path, vgg_path = write_random_lpips_weights(tmp_path, seed=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not the reference.*")
        lpips = LPIPSVGG16(lpips_path, vgg_path, resize=16)
    metric = PerceptualPathLength(LATENT_DIM, num_pairs=8, batch_size=4, resize=16, lpips=lpips)
    generator = trained_generator()
    before = _buffers(generator)
    closure = metric.evaluate(lambda z: generator(z))
    _assert_bit_identical(before, generator)
    assert all(m.training for m in generator.modules())
    reference = copy.deepcopy(generator).eval()
    assert closure.values == metric.evaluate(reference).values


def test_wording_names_the_callers_keys_and_argument() -> None:
    """A caller reporting the counts under its own names (as the callbacks do) passes them through `wording=`."""
    wording = {"clamped": "`my_clamped`", "nonfinite": "`my_nonfinite`", "space": "`pixel_range=`"}
    evaluator = make_evaluator([FID()], real_space=(0.0, 1.0), space=(0.0, 1.0), wording=wording)
    generator = trained_generator().eval()

    def some_nan(z: torch.Tensor) -> torch.Tensor:
        images = generator(z)
        images[z[:, 0] > 0] = float("nan")
        return images

    _, emitted = evaluate_recording(evaluator, some_nan)
    clamped, nonfinite = emitted  # a tanh generator read as [0, 1] (clamped), and NaN samples
    assert "(reported as `my_clamped`)" in clamped
    assert "declare the right one with `pixel_range=`" in clamped
    assert "`space=`" not in clamped
    assert "(counted as `my_nonfinite`)" in nonfinite
    with pytest.raises(
        ValueError, match=r"`wording` takes the keys \['clamped', 'nonfinite', 'space'\], got \['nan'\]"
    ):
        make_evaluator([FID()], wording={"nan": "x"})
