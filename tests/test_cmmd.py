"""CMMD: parity with a NumPy transcription of google-research ``cmmd/distance.py``, the estimators, the blocked
sums, the CLIP extractor (preprocessing of ``cmmd/io_util.py`` + ``embedding.py``, weight rules), the callback in a
Trainer and the command line."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

import lightning_ganeval.metrics.cmmd as cmmd_module
from lightning_ganeval.metrics.cmmd import CMMD, cmmd_from_features, rbf_kernel_sum

PARITY_RTOL = 1e-6  # the bound; measured: 0 to 8e-13 (float64 on both sides, other summation order)

# --------------------------------------------------------------------------------------------- references


def _reference_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """google-research cmmd/distance.py ``mmd(x, y)``, transcribed from JAX to NumPy (float64)."""
    sigma, scale = 10, 1000
    x_sqnorms = np.diag(np.matmul(x, x.T))
    y_sqnorms = np.diag(np.matmul(y, y.T))
    gamma = 1 / (2 * sigma**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * np.matmul(x, x.T) + x_sqnorms[:, None] + x_sqnorms[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * np.matmul(x, y.T) + x_sqnorms[:, None] + y_sqnorms[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * np.matmul(y, y.T) + y_sqnorms[:, None] + y_sqnorms[None, :])))
    return scale * (k_xx + k_yy - 2 * k_xy)


def _reference_embedding_normalisation(x: np.ndarray) -> np.ndarray:
    # The reference's embedding step returns CLIP's unit-norm image embeddings.
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _embeddings(n: int, m: int, d: int = 24, shift: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(n, d, generator=g, dtype=torch.float64) * 3
    fake = torch.randn(m, d, generator=g, dtype=torch.float64) * 2 + shift
    return real, fake


# --------------------------------------------------------------------------------------------- the metric


@pytest.mark.parametrize(("n", "m"), [(40, 40), (57, 33)])
def test_equals_numpy_transcription_of_reference(n: int, m: int) -> None:
    real, fake = _embeddings(n, m)
    expected = _reference_mmd(
        _reference_embedding_normalisation(real.numpy()), _reference_embedding_normalisation(fake.numpy())
    )
    value = cmmd_from_features(real.float(), fake.float())  # float32 inputs, as a network returns them
    expected32 = _reference_mmd(
        _reference_embedding_normalisation(real.float().double().numpy()),
        _reference_embedding_normalisation(fake.float().double().numpy()),
    )
    assert expected > 0.1  # a real difference (typical CMMD values are 0.1-10), not rounding noise
    assert value == pytest.approx(expected32, rel=PARITY_RTOL)
    assert cmmd_from_features(real, fake) == pytest.approx(expected, rel=PARITY_RTOL)
    assert cmmd_from_features(fake, real) == pytest.approx(expected, rel=PARITY_RTOL)  # symmetric


def test_rows_are_normalised_by_the_metric() -> None:
    real, fake = _embeddings(30, 20)
    scales = torch.rand(30, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 9 + 0.1
    assert cmmd_from_features(real * scales, fake) == pytest.approx(cmmd_from_features(real, fake), rel=1e-12)


def test_unbiased_estimator_is_the_u_statistic() -> None:
    real, fake = _embeddings(25, 18, shift=0.05)
    x = _reference_embedding_normalisation(real.numpy())
    y = _reference_embedding_normalisation(fake.numpy())

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / 200)

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    expected = 1000 * (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * k(x, y).mean()
    )
    assert cmmd_from_features(real, fake, estimator="unbiased") == pytest.approx(expected, rel=1e-9)
    # The two estimators differ by the diagonal's weight: the biased one is larger here.
    assert cmmd_from_features(real, fake) > cmmd_from_features(real, fake, estimator="unbiased")


def test_identical_sets_score_zero_and_bad_arguments_are_named() -> None:
    real, _ = _embeddings(10, 10)
    assert cmmd_from_features(real, real) == 0.0
    with pytest.raises(ValueError, match="`estimator`"):
        cmmd_from_features(real, real, estimator="u")
    with pytest.raises(ValueError, match="same width"):
        cmmd_from_features(real, real[:, :3])
    with pytest.raises(ValueError, match="at least 2 rows"):
        cmmd_from_features(real, real[:1], estimator="unbiased")
    with pytest.raises(ValueError, match="`sigma`"):
        CMMD(sigma=0)


def test_kernel_sums_run_in_blocks_never_n_by_n(monkeypatch: pytest.MonkeyPatch) -> None:
    real, fake = _embeddings(50, 37)
    whole = cmmd_from_features(real, fake, estimator="unbiased")
    monkeypatch.setattr(cmmd_module, "_BLOCK_ROWS", 8)
    shapes: list[tuple[int, ...]] = []
    mm = torch.mm

    def spy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = mm(a, b)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "mm", spy)
    blocked = cmmd_from_features(real, fake, estimator="unbiased")
    assert max(s[0] for s in shapes) == 8  # every kernel temporary is 8 x N
    assert blocked == pytest.approx(whole, rel=1e-12)
    _, diagonal = rbf_kernel_sum(real[:20], real[:20], same=True)
    assert diagonal == pytest.approx(20.0, rel=1e-12)  # k(x, x) = 1 up to the reference's arithmetic


# --------------------------------------------------------------------------------------------- CLIP extractor


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from lightning_ganeval.testing import write_random_clip_weights

    return write_random_clip_weights(tmp_path_factory.mktemp("clip") / "pytorch_model.bin", seed=0)


@pytest.fixture(scope="module")
def clip(clip_weights: Path):
    from lightning_ganeval.clip import CLIPExtractor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: "not the reference" is expected
        return CLIPExtractor(clip_weights, device="cpu")


def _reference_preprocess(image: np.ndarray) -> np.ndarray:
    """io_util._center_crop_and_resize + the /255 of compute_embeddings_for_dir + scenic's normalize_image."""
    im = Image.fromarray(image)
    w, h = im.size
    side = min(w, h)
    top = (h - side) // 2
    left = (w - side) // 2
    im = im.crop((left, top, left + side, top + side)).resize((336, 336), resample=Image.BICUBIC)
    x = np.asarray(im).astype(np.float32) / 255.0
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    return ((x - mean) / std).transpose(2, 0, 1)


@pytest.mark.parametrize("size", [(40, 52), (52, 40), (400, 361), (336, 336)])
def test_preprocessing_is_the_reference(clip, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    images = rng.integers(0, 256, (3, *size, 3), dtype=np.uint8)
    ours = clip.preprocess(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    expected = np.stack([_reference_preprocess(a) for a in images])
    assert ours.shape == (3, 3, 336, 336)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)


def test_preprocessing_of_a_square_image_equals_huggingface_processor(clip) -> None:
    # An independent source for the constants: CLIPImageProcessor of the hub model (shortest edge 336, crop 336,
    # bicubic, CLIP mean/std). It resizes before cropping, which agrees with the reference on square images.
    transformers = pytest.importorskip("transformers")
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        resample=3,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    # A uniform image stays uniform through any resize: the scaling and the constants must agree exactly.
    uniform = np.broadcast_to(np.array([10, 128, 250], dtype=np.uint8), (64, 64, 3)).copy()
    expected = processor(images=[uniform], return_tensors="np")["pixel_values"]
    ours = clip.preprocess(torch.from_numpy(uniform).permute(2, 0, 1)[None]).numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    # On noise, transformers' resize rounds differently from Pillow's in < 1 % of the pixels (measured: at most 2
    # grey levels, in 0.8 % of the values), so the two agree to that.
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    expected = processor(images=[image], return_tensors="np")["pixel_values"]
    ours = clip.preprocess(torch.from_numpy(image).permute(2, 0, 1)[None]).numpy()
    levels = np.abs(ours - expected) * np.array([0.26862954, 0.26130258, 0.27577711])[None, :, None, None] * 255
    assert levels.max() <= 2.0 + 1e-3
    assert (levels > 1e-3).mean() < 0.01


def test_extractor_equals_the_transformers_model(clip, clip_weights: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    # The tiny layout written by write_random_clip_weights, described by hand (64 wide, 2 layers, 1 head).
    config = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        image_size=336,
        patch_size=14,
        projection_dim=32,
        hidden_act="quick_gelu",
    )
    model = CLIPVisionModelWithProjection(config).eval()
    state = torch.load(clip_weights, weights_only=True)
    vision = {k: v for k, v in state.items() if k.startswith(("vision_model.", "visual_projection."))}
    model.load_state_dict(vision, strict=False)
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(pixel_values=clip.preprocess(images)).image_embeds
    features = clip(images)
    assert features.shape == (2, clip.num_features) == (2, 32)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-6)
    assert clip.identity.startswith("clip-vit/")
    assert clip.identity.endswith("/pil-bicubic336")
    clip.train()
    assert not clip.training


@pytest.mark.parametrize("size", [(40, 52), (52, 40)])
def test_bicubic_mode_is_the_centre_square_resized_by_torch(clip_weights: Path, size: tuple[int, int]) -> None:
    # resize="bicubic": the reference's centre square, then torch's antialiased bicubic instead of Pillow's, then
    # the CLIP normalisation; written out by hand. Tolerance 1e-6: float32 rounding of the same operations.
    from lightning_ganeval.clip import CLIP_MEAN, CLIP_STD, CLIPExtractor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: "not the reference" is expected
        bicubic = CLIPExtractor(clip_weights, resize="bicubic", device="cpu")
    images = torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    top, left = (size[0] - 40) // 2, (size[1] - 40) // 2
    square = images[..., top : top + 40, left : left + 40].float()
    x = torch.nn.functional.interpolate(square, size=(336, 336), mode="bicubic", antialias=True) / 255
    expected = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(bicubic.preprocess(images), expected, rtol=0, atol=1e-6)
    assert bicubic.identity.endswith("/bicubic336")
    assert bicubic(images[:0]).shape == (0, bicubic.num_features)  # an empty batch never reaches the network


def test_clip_is_a_feature_network_with_one_provenance(clip) -> None:
    from lightning_ganeval.feature_network import FeatureNetwork, network_provenance
    from lightning_ganeval.stats_files import extractor_provenance

    assert isinstance(clip, FeatureNetwork)
    clip.train()
    assert not clip.training
    assert not any(p.requires_grad for p in clip.parameters())
    assert clip.device == torch.device("cpu")
    expected = {"extractor": clip.identity, "weights_sha256": clip.weights.sha256, "resize": "pil", "layer": "features"}
    # extractor_provenance used to call every network's layer "pool3".
    assert clip.provenance() == network_provenance(clip, "features") == extractor_provenance(clip) == expected


def test_weight_rules(clip_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_ganeval.clip as clip_module
    from lightning_ganeval.weights import WeightsHashError, WeightsNotFoundError, WeightsSpec, file_sha256

    digest = file_sha256(clip_weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A folder (a hub snapshot or save_pretrained output) resolves to its pytorch_model.bin.
        assert clip_module.resolve_clip_weights(clip_weights.parent).path == clip_weights
        with pytest.raises(WeightsNotFoundError, match=r"holds neither pytorch_model\.bin nor model\.safetensors"):
            clip_module.resolve_clip_weights(tmp_path)
        monkeypatch.setenv(clip_module.CLIP_WEIGHTS_ENV_VAR, str(clip_weights))
        resolved = clip_module.resolve_clip_weights()
        assert (resolved.source, resolved.is_reference) == ("environment", False)
        monkeypatch.delenv(clip_module.CLIP_WEIGHTS_ENV_VAR)

    # The Hugging Face cache at the pinned revision, found where from_pretrained left it.
    hub = tmp_path / "hub"
    snapshot = hub / "models--openai--clip-vit-large-patch14-336" / "snapshots" / clip_module.CLIP_REVISION
    snapshot.mkdir(parents=True)
    (snapshot / "pytorch_model.bin").write_bytes(clip_weights.read_bytes())
    (hub / "models--openai--clip-vit-large-patch14-336" / "refs").mkdir()
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(clip_module, "CLIP_SHA256", digest)
    resolved = clip_module.resolve_clip_weights()
    assert (resolved.source, resolved.is_reference, resolved.path) == ("cache", True, snapshot / "pytorch_model.bin")

    # A verified download into the torch hub cache (a file:// URL stands in for the hub).
    spec = WeightsSpec("CLIP ViT-L/14-336", "pytorch_model.bin", clip_weights.as_uri(), digest, "X", "`weights=`")
    monkeypatch.setattr(clip_module, "CLIP_SPEC", spec)
    downloaded = clip_module.resolve_clip_weights(cache_dir=tmp_path / "torch-hub")
    assert (downloaded.source, downloaded.sha256) == ("download", digest)
    bad = WeightsSpec("CLIP ViT-L/14-336", "pytorch_model.bin", clip_weights.as_uri(), "0" * 64, "X", "`weights=`")
    monkeypatch.setattr(clip_module, "CLIP_SPEC", bad)
    with pytest.raises(WeightsHashError):
        clip_module.resolve_clip_weights(cache_dir=tmp_path / "other")

    # Offline: the message says where to put the file and which variable or argument to use.
    monkeypatch.setattr(
        clip_module, "CLIP_SPEC", clip_module.WeightsSpec(**{**vars(spec), "url": "file:///nonexistent/x"})
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsNotFoundError, match="environment variable X=") as info:
        clip_module.resolve_clip_weights(cache_dir=tmp_path / "offline")
    assert "`weights=`" in str(info.value)


def test_official_layout_is_checked(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from lightning_ganeval.clip import CLIPExtractor
    from lightning_ganeval.testing import build_random_clip_state_dict

    state = build_random_clip_state_dict(0)
    del state["vision_model.post_layernorm.bias"]
    path = tmp_path / "broken.bin"
    torch.save(state, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="official layout"):
            CLIPExtractor(path, device="cpu")


# --------------------------------------------------------------------------------------------- Trainer and CLI


@pytest.mark.slow
def test_callback_in_a_trainer_logs_the_reference_value(clip, clip_weights: Path, tmp_path: Path) -> None:
    """CMMDCallback with its default CLIP network equals the reference formula on the network's embeddings."""
    import lightning.pytorch as pl
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_ganeval import CMMDCallback
    from lightning_ganeval.images import to_uint8_rgb
    from lightning_ganeval.pixel_space import PixelSpace
    from lightning_ganeval.sampling import LatentBank

    class Gen(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(4, 3 * 16 * 16)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.net(z)).view(-1, 3, 16, 16)

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            return self.net.weight.sum() * 0

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=0.0)

    real = torch.rand(7, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    loader = DataLoader(TensorDataset(real), batch_size=4)
    callback = CMMDCallback(
        real=loader, num_samples=6, max_real=7, batch_size=4, latent_shape=4, clip_weights=clip_weights, progress=False
    )
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
        callbacks=[callback],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, loader)
    space = PixelSpace.from_value_range(-1.0, 1.0)
    bank = LatentBank(num_samples=6, latent_shape=(4,), seed=0, batch_size=4)
    with torch.no_grad():
        fake_images = to_uint8_rgb(model(bank.latents()), space).images
    real_images = to_uint8_rgb(real, space).images
    x = clip(real_images).double().numpy()
    y = clip(fake_images).double().numpy()
    expected = _reference_mmd(_reference_embedding_normalisation(x), _reference_embedding_normalisation(y))
    assert callback.last_score == pytest.approx(expected, rel=1e-5)  # float32 CLIP forwards in other batches
    assert float(trainer.callback_metrics["cmmd_num_samples"]) == 6


@pytest.mark.slow
def test_command_line_cmmd(clip, clip_weights: Path, tmp_path: Path) -> None:
    from test_cli import _write_images, run_json

    import lightning_ganeval.cli as cli

    a = _write_images(tmp_path / "A", 4, seed=1, size=(20, 24))
    b = _write_images(tmp_path / "B", 5, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_json("cmmd", a, b, "--clip-weights", clip_weights, "--workers", 0, "--device", "cpu")
    x, y = (torch.cat([clip(cli.read_image(p)[None]) for p in cli.list_images(f)]).double().numpy() for f in (b, a))
    expected = _reference_mmd(_reference_embedding_normalisation(x), _reference_embedding_normalisation(y))
    assert result["cmmd"] == pytest.approx(expected, rel=1e-5)
    assert result["network"] == clip.identity
    assert (result["num_samples_a"], result["num_samples_b"], result["cmmd_estimator"]) == (4, 5, "biased")


def test_command_line_refuses_a_resize_clip_does_not_take(tmp_path: Path) -> None:
    from test_cli import _single_line_error, _write_images, run_cli

    a = _write_images(tmp_path / "A", 2, seed=1)
    line = _single_line_error(*run_cli("cmmd", a, a, "--resize", "tf1", "--no-progress"))
    assert "--resize tf1 does not apply to --network clip" in line
    assert os.environ.get("LIGHTNING_GANEVAL_CLIP_WEIGHTS") is None


# --------------------------------------------------------------------------------------------- DDP


class PooledFeatures(torch.nn.Module):
    """A cheap feature network returning one (N, d) tensor, like CLIPExtractor (importable in spawned workers)."""

    num_features = 12

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(48, 12, generator=torch.Generator().manual_seed(0)))
        self.identity = "pooled-features/v1"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 127.5 - 1, 4).flatten(1)
        return torch.tanh(x @ self.w) + 0.5


class RecordLast(Callback):
    """Writes each rank's callback_metrics and last history entries (importable in spawned workers)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def on_train_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        import json

        values = {k: float(v) for k, v in trainer.callback_metrics.items()}
        for cb in trainer.callbacks:
            if getattr(cb, "history", None):
                values.update({f"history_{k}": v for k, v in cb.history[-1].items()})
        (self.root / f"rank{trainer.global_rank}.json").write_text(json.dumps(values))


def _ddp_run(root: Path, devices: int) -> dict[str, float]:
    """This rank's record of one fit on ``devices`` processes (several: inside a launched group, tests/ddp_runs.py)."""
    import json

    import lightning.pytorch as pl
    from ddp_runs import roundtrip_pickle
    from test_metrics_callbacks_ddp import TinyGAN
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_ganeval import CMMDCallback, VendiScoreCallback

    real = (torch.rand(13, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1) / 4
    network = PooledFeatures()
    common = {"num_samples": 14, "batch_size": 4, "progress": False, "feature_extractor": network}
    callbacks = [
        CMMDCallback(real=DataLoader(TensorDataset(real), batch_size=4), max_real=13, cache_dir=root / "c", **common),
        CMMDCallback(
            real=DataLoader(TensorDataset(real), batch_size=4), max_real=13, estimator="unbiased", name="cmmd_u",
            cache_dir=root / "c", **common,
        ),
        VendiScoreCallback(**common),
        RecordLast(root),
    ]  # fmt: skip
    torch.manual_seed(0)
    model = TinyGAN()
    if devices > 1:
        model, callbacks = roundtrip_pickle((model, callbacks))
    trainer = pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, DataLoader(TensorDataset(real), batch_size=4))
    return json.loads((root / f"rank{trainer.global_rank}.json").read_text())


def ddp_job(rank: int, world_size: int, workdir: Path, inputs: Any) -> dict[str, float]:
    """One rank's record (tests/ddp_runs.py runs it on 2 and 3 processes)."""
    return _ddp_run(workdir, world_size)


@pytest.mark.slow
@pytest.mark.ddp
def test_one_two_and_three_processes_log_the_same_cmmd_and_vendi(tmp_path: Path, ddp_runs: Any) -> None:
    """14 samples in batches of 4 (unequal shares, one rank of 3 gets 1 batch), 13 real images."""
    runs = {1: _ddp_run(tmp_path, 1)}
    for devices in (2, 3):
        ranks = ddp_runs.ranks(devices, ddp_job)
        assert all(rank == ranks[0] for rank in ranks[1:])  # every rank logged the same values
        runs[devices] = ranks[0]
    single = runs[1]
    for key in ("cmmd", "cmmd_u", "vendi"):
        assert single[f"history_{key}"] > 0
    assert single["history_cmmd_num_samples"] == single["history_vendi_num_samples"] == 14
    for devices in (2, 3):
        for key in ("cmmd", "cmmd_u", "vendi"):
            # The generated features are bit for bit those of the same global batches; the real ones come from other
            # real batch compositions and Vendi's Gram sums merge in another order (float64). Measured: CMMD (both
            # estimators) identical at 2 and 3 processes, Vendi 6.9e-16 (2) and 2.3e-16 (3) relative.
            assert runs[devices][f"history_{key}"] == pytest.approx(single[f"history_{key}"], rel=1e-6), (devices, key)
