"""Vendi score: parity of the d x d dual with the n x n definition (``vendi_score.score_X``, dgm-eval), bounds,
streaming, the callback in a Trainer, bad arguments and the command line."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from lightning_ganeval.metrics.vendi import GramSums, VendiScore, vendi_score

PARITY_RTOL = 1e-6  # the bound; measured 3e-16 to 1e-13 (eigenvalues of the n x n and the d x d matrix)


def _reference_score_x(x: np.ndarray) -> float:
    """vertaix vendi_score.score_X (q = 1) and dgm-eval compute_vendi_score, transcribed (n x n kernel)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms == 0, 1, norms)  # sklearn.preprocessing.normalize leaves zero rows at zero
    n = x.shape[0]
    w = scipy.linalg.eigvalsh(x @ x.T / n)
    p = w[w > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.parametrize(("n", "d"), [(30, 8), (12, 40), (50, 50)])
def test_dual_equals_the_n_by_n_definition(n: int, d: int) -> None:
    g = torch.Generator().manual_seed(n + d)
    # Correlated, non-negative rows like pool3 features, so the spectrum is far from flat.
    x = (torch.randn(n, 4, generator=g) @ torch.randn(4, d, generator=g)).relu() + 0.1 * torch.rand(n, d, generator=g)
    expected = _reference_score_x(x.double().numpy())
    assert 1.0 < expected < min(n, d)
    assert vendi_score(x) == pytest.approx(expected, rel=PARITY_RTOL)


def test_bounds_one_for_copies_n_for_orthogonal_rows() -> None:
    assert vendi_score(torch.ones(7, 5) * torch.arange(1, 8)[:, None]) == pytest.approx(1.0, rel=1e-12)
    assert vendi_score(torch.eye(6)) == pytest.approx(6.0, rel=1e-12)
    two_modes = torch.cat([torch.eye(3)[:1].repeat(5, 1), torch.eye(3)[1:2].repeat(5, 1)])
    assert vendi_score(two_modes) == pytest.approx(2.0, rel=1e-12)  # mode collapse to two modes


def test_streamed_batches_equal_one_shot() -> None:
    x = torch.rand(23, 6, generator=torch.Generator().manual_seed(0))
    sums = GramSums(6)
    for chunk in x.split(5):
        sums.update(chunk)
    assert sums.compute() == pytest.approx(vendi_score(x), rel=1e-12)
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        sums.update(torch.rand(2, 5))


def test_metric_through_the_evaluator_equals_the_definition() -> None:
    from fakes import FakeExtractor

    from lightning_ganeval.evaluator import Evaluator

    network = FakeExtractor()
    metric = VendiScore(feature_extractor=network, layer="pool")
    evaluator = Evaluator([metric], num_samples=11, latent_shape=(4,), batch_size=4, seed=0)

    def generate(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ torch.ones(4, 3 * 8 * 8) * 0.3 + z[:, :1]).view(-1, 3, 8, 8)

    result = evaluator.evaluate(generate)
    values = result.by_metric["vendi"]
    from lightning_ganeval.images import to_uint8_rgb
    from lightning_ganeval.pixel_space import PixelSpace

    images = to_uint8_rgb(generate(evaluator.bank.latents()), PixelSpace.from_value_range(-1.0, 1.0)).images
    features = network(images).pool
    assert values["vendi_num_samples"] == 11
    assert values["vendi"] == pytest.approx(_reference_score_x(features.double().numpy()), rel=PARITY_RTOL)


def test_bad_arguments_are_named() -> None:
    from lightning_ganeval import CMMDCallback, VendiScoreCallback

    with pytest.raises(ValueError, match="num_samples"):
        VendiScoreCallback(num_samples=0)
    with pytest.raises(TypeError, match="feature_extractor"):
        VendiScoreCallback(feature_extractor="clip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="estimator"):
        CMMDCallback(estimator="u-statistic")
    with pytest.raises(ValueError, match="clip_resize"):
        CMMDCallback(clip_resize="tf1")
    with pytest.raises(ValueError, match="max_real"):
        CMMDCallback(max_real=1)
    assert VendiScoreCallback(num_samples=5).state_key == "VendiScoreCallback{'name': 'vendi'}"
    assert CMMDCallback(num_samples=5).state_key == "CMMDCallback{'name': 'cmmd'}"


@pytest.mark.slow
def test_callback_in_a_trainer_with_inception(tmp_path: Path, inception_weights_path: Path, extractor) -> None:
    """VendiScoreCallback on its default Inception pool3 features, together with IS (one generator pass).

    IS rather than FID as the second Inception metric: the same shared pass, without a real pass and the 2048 x 2048
    eigendecompositions of FID (most of this test's time before).
    """
    import lightning.pytorch as pl
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_ganeval import InceptionScoreCallback, VendiScoreCallback
    from lightning_ganeval.images import to_uint8_rgb
    from lightning_ganeval.pixel_space import PixelSpace
    from lightning_ganeval.sampling import LatentBank

    class Gen(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(4, 3 * 8 * 8)
            self.calls = 0

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return torch.tanh(self.net(z)).view(-1, 3, 8, 8)

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            return self.net.weight.sum() * 0

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=0.0)

    real = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    loader = DataLoader(TensorDataset(real), batch_size=3)
    common = {"num_samples": 5, "batch_size": 5, "latent_shape": 4, "inception_weights": inception_weights_path}
    vendi = VendiScoreCallback(progress=False, **common)
    isc = InceptionScoreCallback(splits=1, progress=False, **common)
    torch.manual_seed(0)
    model = Gen()
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[vendi, isc],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, loader)
    # One pre-flight call and one call for the 5 samples (batch of 5), shared by both metrics.
    assert model.calls == 2
    bank = LatentBank(num_samples=5, latent_shape=(4,), seed=0, batch_size=5)
    with torch.no_grad():
        images = to_uint8_rgb(model(bank.latents()), PixelSpace.from_value_range(-1.0, 1.0)).images
    features = extractor(images).pool.double().numpy()
    assert vendi.last_score == pytest.approx(_reference_score_x(features), rel=1e-5)  # float32 Inception batches
    assert "is" in trainer.callback_metrics


@pytest.mark.slow
def test_command_line_vendi(tmp_path: Path, inception_weights_path: Path, extractor) -> None:
    from test_cli import _write_images, run_json

    import lightning_ganeval.cli as cli

    a = _write_images(tmp_path / "A", 4, seed=1)
    result = run_json("vendi", a, "--inception-weights", inception_weights_path, "--workers", 0, "--device", "cpu")
    features = torch.cat([extractor(cli.read_image(p)[None]).pool for p in cli.list_images(a)])
    assert result["vendi"] == pytest.approx(_reference_score_x(features.double().numpy()), rel=1e-5)
    assert result["num_samples"] == 4


@pytest.mark.slow
def test_cmmd_and_vendi_resume_from_a_checkpoint(tmp_path: Path) -> None:
    """The history survives a resume, and the resumed evaluation equals an uninterrupted run's."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from test_cmmd import PooledFeatures
    from test_metrics_callbacks_ddp import TinyGAN
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_ganeval import CMMDCallback, VendiScoreCallback

    real = (torch.rand(9, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1) / 4

    def fit(root: Path, epochs: int, ckpt_path: str | None = None) -> tuple[CMMDCallback, VendiScoreCallback]:
        network = PooledFeatures()
        common = {"num_samples": 6, "batch_size": 3, "progress": False, "feature_extractor": network}
        cmmd = CMMDCallback(real=DataLoader(TensorDataset(real), batch_size=3), cache_dir=root / "c", **common)
        vendi = VendiScoreCallback(**common)
        torch.manual_seed(0)
        trainer = pl.Trainer(
            default_root_dir=root,
            max_epochs=epochs,
            limit_train_batches=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[cmmd, vendi, ModelCheckpoint(dirpath=root / "ckpt", save_last=True)],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(TinyGAN(), DataLoader(TensorDataset(real), batch_size=3), ckpt_path=ckpt_path)
        return cmmd, vendi

    fit(tmp_path / "a", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cmmd, vendi = fit(tmp_path / "a", 2, ckpt_path=str(tmp_path / "a" / "ckpt" / "last.ckpt"))
    assert not [w for w in caught if "has no state for" in str(w.message)]
    straight_cmmd, straight_vendi = fit(tmp_path / "b", 2)
    assert [h["epoch"] for h in cmmd.history] == [h["epoch"] for h in vendi.history] == [0, 1]
    assert cmmd.history == straight_cmmd.history  # TinyGAN trains with lr 0: the same scores every epoch
    assert vendi.history == straight_vendi.history
