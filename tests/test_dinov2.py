"""Tests for the FD_DINOv2 extractor: layout, parity with a float64 reference forward, preprocessing, weights.

ViT-S/14 random weights (same code path as ViT-L/14, 22 M parameters) keep the CPU cost down: about 0.5-1 s per
image on two cores. The ViT-L/14 tests are marked slow (a 1.2 GB random file and ~5 s per image).
"""

from __future__ import annotations

import hashlib
import http.server
import math
import re
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("timm")

from lightning_ganeval import dinov2, weights
from lightning_ganeval.dinov2 import (
    DINOV2_SPEC,
    DINOV2_WEIGHTS_ENV_VAR,
    DINOv2Extractor,
    dinov2_weights_spec,
    interpolate_pos_embed,
    official_state_dict_shapes,
    resolve_dinov2_weights,
)
from lightning_ganeval.testing import build_random_dinov2_state_dict, write_random_dinov2_weights
from lightning_ganeval.weights import WeightsHashError, WeightsNotFoundError, file_sha256

SMALL = "vits14"
SMALL_ENV_VAR = "LIGHTNING_GANEVAL_DINOV2_VITS14_WEIGHTS"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer cache or weights variables; random weights warn once per digest, which is not under test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for name in (DINOV2_WEIGHTS_ENV_VAR, SMALL_ENV_VAR, "LIGHTNING_GANEVAL_DINOV2_VITB14_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    warnings.filterwarnings("ignore", message=".*not comparable with published ones", category=UserWarning)
    # Warn-once bookkeeping is per process: keep ours from silencing another module's expected warning.
    monkeypatch.setattr(weights, "_WARNED_DIGESTS", set())


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_dinov2_weights(tmp_path_factory.mktemp("dinov2") / "vits14-seed0.pth", seed=0, size=SMALL)


@pytest.fixture(scope="module")
def small(small_weights: Path) -> DINOv2Extractor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DINOv2Extractor(small_weights, model=SMALL, device="cpu")


def _images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    """Smooth uint8 noise images (an 8 x 8 field upsampled), seeded."""
    low = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    smooth = torch.nn.functional.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)
    return (smooth * 255).round().to(torch.uint8)


# --------------------------------------------------------------------------------------------- reference


def _reference_features(
    state: dict[str, torch.Tensor], x: torch.Tensor, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """DINOv2's forward as the torch hub model computes it, written out (in ``dtype``) from the official keys.

    Pre-norm ViT blocks with LayerScale, 64-d heads, exact GELU, LayerNorm eps 1e-6; the position embeddings are
    resampled at call time with the hub's ``scale_factor=(grid + 0.1) / 37`` bicubic rule; CLS token after the
    final norm. It shares nothing with timm.
    """
    s = {k: v.to(dtype) for k, v in state.items()}
    x = x.to(dtype)
    n, dim = x.shape[0], s["cls_token"].shape[-1]
    heads, grid = dim // 64, x.shape[-1] // 14
    tokens = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=14).flatten(2).mT
    tokens = torch.cat([s["cls_token"].expand(n, -1, -1), tokens], dim=1)
    side = math.isqrt(s["pos_embed"].shape[1] - 1)
    patches = s["pos_embed"][:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    scale = (grid + 0.1) / side
    patches = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic", antialias=False).to(dtype)
    tokens = tokens + torch.cat([s["pos_embed"][:, :1], patches.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)
    depth = 1 + max(int(k.split(".")[1]) for k in s if k.startswith("blocks."))
    for i in range(depth):
        block = {k.split(".", 2)[2]: v for k, v in s.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(tokens, (dim,), block["norm1.weight"], block["norm1.bias"], eps=1e-6)
        q, k, v = (
            F.linear(h, block["attn.qkv.weight"], block["attn.qkv.bias"])
            .unflatten(-1, (3, heads, 64))
            .permute(2, 0, 3, 1, 4)
        )
        attn = (q @ k.mT / 8.0).softmax(dim=-1)
        h = F.linear((attn @ v).transpose(1, 2).flatten(2), block["attn.proj.weight"], block["attn.proj.bias"])
        tokens = tokens + block["ls1.gamma"] * h
        h = F.layer_norm(tokens, (dim,), block["norm2.weight"], block["norm2.bias"], eps=1e-6)
        h = F.linear(
            F.gelu(F.linear(h, block["mlp.fc1.weight"], block["mlp.fc1.bias"])),
            block["mlp.fc2.weight"],
            block["mlp.fc2.bias"],
        )
        tokens = tokens + block["ls2.gamma"] * h
    return F.layer_norm(tokens, (dim,), s["norm.weight"], s["norm.bias"], eps=1e-6)[:, 0]


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm(dim=1) / b.double().norm(dim=1)).max().item()


# --------------------------------------------------------------------------------------------- layout, loading


# ViT-L/14's layout is checked by test_vitl14_end_to_end, which loads the default-size file strictly.
@pytest.mark.parametrize("size", ["vits14", pytest.param("vitb14", marks=pytest.mark.slow)])
def test_random_weights_have_the_official_layout(size: str) -> None:
    state = build_random_dinov2_state_dict(0, size=size)
    assert {k: tuple(v.shape) for k, v in state.items()} == official_state_dict_shapes(size)
    assert all(v.dtype == torch.float32 for v in state.values())


def test_official_layout_sizes() -> None:
    shapes = official_state_dict_shapes("vitl14")
    assert shapes["pos_embed"] == (1, 1 + 37 * 37, 1024)  # trained at 518 x 518
    assert shapes["blocks.23.mlp.fc2.weight"] == (1024, 4096)
    assert "blocks.24.norm1.weight" not in shapes
    assert sum(math.prod(s) for s in shapes.values()) == 304_368_640  # ViT-L/14 backbone, as published


@pytest.fixture(scope="module")
def batch(small: DINOv2Extractor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images and their features, computed once (a ViT-S/14 forward costs ~1 s per image on two cores)."""
    images = _images(2, 48, seed=3)
    return images, small(images)


@pytest.mark.slow
def test_matches_a_float64_reference_forward(
    small: DINOv2Extractor, small_weights: Path, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, features = batch
    reference = _reference_features(torch.load(small_weights, weights_only=True), small.preprocess(images[:1]))
    # float32 through 12 blocks against float64: measured 3.0e-6 relative (L2).
    assert _max_rel(features[:1], reference) < 5e-5


def test_output_shape_dtype_and_no_grad(small: DINOv2Extractor, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, features = batch
    assert features.shape == (2, 384)
    assert features.dtype == torch.float32
    assert not features.requires_grad
    assert small.num_features == 384
    assert small.device == torch.device("cpu")
    assert not any(p.requires_grad for p in small.parameters())
    small.train()
    assert not small.training
    assert not small.net.training
    assert small(_images(0, 40)).shape == (0, 384)


def test_features_vary_with_the_input(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, features = batch
    # Random weights must not map every image onto one feature vector, or the parity tests prove little.
    assert (features[0] - features[1]).norm() > 0.3 * features[0].norm()


@pytest.mark.slow
def test_deterministic_and_batch_size_invariant(
    small: DINOv2Extractor, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, together = batch
    alone = torch.cat([small(images[i : i + 1]) for i in range(2)])
    # Different batch sizes may pick different matmul blockings: float32 rounding only (measured: bit-identical
    # on this CPU; other backends may differ in the last bits).
    assert _max_rel(together, alone) < 1e-5
    assert torch.equal(small(images[:1]), alone[:1])  # same batch, same bits


def test_rejects_non_uint8_input(small: DINOv2Extractor) -> None:
    with pytest.raises(TypeError, match="uint8"):
        small(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        small(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))


def test_refuses_files_without_the_official_layout(tmp_path: Path, small_weights: Path) -> None:
    state = torch.load(small_weights, weights_only=True)
    broken = dict(state)
    del broken["blocks.3.ls1.gamma"]
    broken["head.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"missing 1 keys.*blocks\.3\.ls1\.gamma.*1 unexpected keys.*head\.weight"):
        DINOv2Extractor(tmp_path / "broken.pth", model=SMALL, device="cpu")
    # A ViT-S file is not a ViT-B file: the shapes say so before anything is built.
    with pytest.raises(ValueError, match=r"ViT-B/14.*wrong shapes: blocks"):
        DINOv2Extractor(small_weights, model="vitb14", device="cpu")
    torch.save({"model": state}, tmp_path / "wrapped.pth")
    with pytest.raises(ValueError, match="not a plain state dict of tensors"):
        DINOv2Extractor(tmp_path / "wrapped.pth", model=SMALL, device="cpu")
    (tmp_path / "junk.pth").write_bytes(b"not a DINOv2 checkpoint")
    with pytest.raises(ValueError, match="not a plain PyTorch state dict"):
        DINOv2Extractor(tmp_path / "junk.pth", model=SMALL, device="cpu")


def test_invalid_arguments(small_weights: Path) -> None:
    with pytest.raises(ValueError, match="model must be one of 'vitl14', 'vitb14', 'vits14', got 'vitg14'"):
        DINOv2Extractor(small_weights, model="vitg14")
    with pytest.raises(ValueError, match="resize must be one of 'bicubic', 'pil', got 'bilinear'"):
        DINOv2Extractor(small_weights, model=SMALL, resize="bilinear")
    with pytest.raises(TypeError, match="weights must be a path"):
        DINOv2Extractor(42, model=SMALL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`weights=` of DINOv2Extractor.*empty string"):
        DINOv2Extractor("", model=SMALL)


# --------------------------------------------------------------------------------------------- position embeddings


def _bicubic_weights(t: float, a: float = -0.75) -> list[float]:
    """Keys' cubic convolution weights of the 4 taps around a sample at fractional offset t (PyTorch's a = -0.75)."""

    def k(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a if x < 2 else 0.0

    return [k(t + 1), k(t), k(1 - t), k(2 - t)]


def _reference_resample(grid: torch.Tensor, out: int, scale: float) -> torch.Tensor:
    """Separable bicubic resampling of an M x M x D grid at src = (i + 0.5) / scale - 0.5, edge taps clamped."""
    m = grid.shape[0]
    matrix = torch.zeros(out, m, dtype=torch.float64)
    for i in range(out):
        src = (i + 0.5) / scale - 0.5
        base = math.floor(src)
        for tap, weight in zip(range(base - 1, base + 3), _bicubic_weights(src - base), strict=True):
            matrix[i, min(max(tap, 0), m - 1)] += weight
    return torch.einsum("ia,jb,abd->ijd", matrix, matrix, grid.double())


def test_position_embeddings_follow_the_hub_rule() -> None:
    generator = torch.Generator().manual_seed(0)
    pos = torch.randn(1, 1 + 37 * 37, 8, generator=generator)
    resampled = interpolate_pos_embed(pos, 16)
    assert resampled.shape == (1, 1 + 16 * 16, 8)
    assert torch.equal(resampled[:, 0], pos[:, 0])  # the CLS embedding is not resampled
    grid = pos[0, 1:].reshape(37, 37, 8)
    # The hub passes scale_factor=(16 + 0.1) / 37 and PyTorch samples with that scale, not with 16 / 37.
    expected = _reference_resample(grid, 16, (16 + 0.1) / 37).reshape(1, 256, 8)
    torch.testing.assert_close(resampled[:, 1:].double(), expected, rtol=0, atol=1e-5)
    plain = _reference_resample(grid, 16, 16 / 37).reshape(1, 256, 8)
    assert (resampled[:, 1:].double() - plain).abs().max() > 1e-2  # the offset matters: the test can tell
    torch.testing.assert_close(interpolate_pos_embed(pos, 16, offset=0)[:, 1:].double(), plain, rtol=0, atol=1e-5)
    assert torch.equal(interpolate_pos_embed(pos, 37), pos)
    with pytest.raises(ValueError, match="square grid"):
        interpolate_pos_embed(pos[:, :-1], 16)


def test_loaded_position_embeddings_are_the_hub_ones(small: DINOv2Extractor, small_weights: Path) -> None:
    official = torch.load(small_weights, weights_only=True)["pos_embed"]
    assert torch.equal(small.net.pos_embed.detach(), interpolate_pos_embed(official, 16))


# --------------------------------------------------------------------------------------------- preprocessing


def _pil_bicubic(images: torch.Tensor) -> np.ndarray:
    from PIL import Image

    arrays = images.permute(0, 2, 3, 1).numpy()
    return np.stack(
        [np.asarray(Image.fromarray(a, "RGB").resize((224, 224), Image.Resampling.BICUBIC)) for a in arrays]
    )


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(dinov2.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(dinov2.IMAGENET_STD).view(1, 3, 1, 1)
    return (x * std + mean) * 255


def _smooth_images(n: int, side: int, seed: int) -> torch.Tensor:
    """Smooth images away from 0 and 255, like most photographs: no clipping in either resize."""
    generator = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(n, 3, 6, 6, generator=generator), size=(side, side), mode="bilinear")
    img = low + 0.03 * torch.randn(n, 3, side, side, generator=generator)
    return (25 + img.clamp(0, 1) * 205).round().to(torch.uint8)


@pytest.mark.parametrize("side", [32, 224, 512])
def test_bicubic_resize_is_close_to_pillow(small: DINOv2Extractor, side: int) -> None:
    """EDM2's torch resize against dgm-eval's Pillow resize, in 0-255 pixel levels, on smooth images.

    Both use Keys' cubic with a = -0.5 and widen the kernel when downsampling (antialias); Pillow rounds each of
    its two passes to uint8. Measured: at most 1.07 levels apart at 32 px (upsampling) and 1.0 at 512 px
    (downsampling), 0.29 on average, i.e. rounding; identical at 224 px, where neither resizes.
    """
    images = _smooth_images(2, side, seed=side)
    ours = _unnormalise(small.preprocess(images)).double()
    pillow = torch.from_numpy(_pil_bicubic(images)).permute(0, 3, 1, 2).double()
    assert ours.shape == (2, 3, 224, 224)
    difference = (ours - pillow).abs()
    if side == 224:
        assert difference.max() < 1e-3
    else:
        assert difference.max() < 1.5
        assert difference.mean() < 0.35


def test_bicubic_resize_neither_clips_nor_rounds(small: DINOv2Extractor) -> None:
    """Like EDM2, the float resize keeps bicubic overshoot at sharp edges; Pillow clips its first pass to uint8.

    On a black/white checkerboard upsampled from 32 px the two differ by tens of levels near the edges, which is
    the largest source of difference between ``resize="bicubic"`` and ``resize="pil"`` (measured up to ~20
    levels on noisy saturated images).
    """
    board = ((torch.arange(32).view(1, -1) // 4 + torch.arange(32).view(-1, 1) // 4) % 2 * 255).to(torch.uint8)
    images = board.expand(1, 3, 32, 32).contiguous()
    ours = _unnormalise(small.preprocess(images))
    assert ours.min() < -5
    assert ours.max() > 260
    assert not torch.equal(ours, ours.round())
    pillow = torch.from_numpy(_pil_bicubic(images)).permute(0, 3, 1, 2).double()
    assert pillow.min() == 0
    assert pillow.max() == 255


def test_pil_mode_is_pillow_bicubic(small_weights: Path) -> None:
    pil = DINOv2Extractor(small_weights, model=SMALL, resize="pil", device="cpu")
    images = _images(2, 512, seed=7)
    expected = torch.from_numpy(_pil_bicubic(images)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(dinov2.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(dinov2.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.equal(pil.preprocess(images), (expected / 255 - mean) / std)
    assert pil.identity.endswith("/pil-bicubic224")


def test_normalisation_constants(small: DINOv2Extractor) -> None:
    # A uniform image of the ImageNet mean colour maps to (almost) zero: the constants are applied per channel.
    colour = torch.tensor([round(0.485 * 255), round(0.456 * 255), round(0.406 * 255)], dtype=torch.uint8)
    x = small.preprocess(colour.view(1, 3, 1, 1).expand(1, 3, 224, 224).contiguous())
    assert x.abs().max() < 0.5 / 255 / 0.224 + 1e-6


# --------------------------------------------------------------------------------------------- identity, weights


@pytest.mark.slow
def test_is_a_feature_network_with_one_provenance(small: DINOv2Extractor) -> None:
    from lightning_ganeval.feature_network import FeatureNetwork, network_provenance
    from lightning_ganeval.stats_files import extractor_provenance

    assert isinstance(small, FeatureNetwork)
    small.train()
    assert not small.training
    assert not any(p.requires_grad for p in small.parameters())
    expected = {
        "extractor": small.identity,
        "weights_sha256": small.weights.sha256,
        "resize": "bicubic",
        "layer": "features",
    }
    # extractor_provenance used to call every network's layer "pool3".
    assert small.provenance() == network_provenance(small, "features") == extractor_provenance(small) == expected


def test_identity_records_model_digest_and_resize(small: DINOv2Extractor, small_weights: Path, tmp_path: Path) -> None:
    digest = file_sha256(small_weights)
    assert small.identity == f"dinov2-vits14/{digest[:16]}/bicubic224"
    other = write_random_dinov2_weights(tmp_path / "seed1.pth", seed=1, size=SMALL)
    other_extractor = DINOv2Extractor(other, model=SMALL, device="cpu")
    assert other_extractor.identity == f"dinov2-vits14/{file_sha256(other)[:16]}/bicubic224"
    assert other_extractor.identity != small.identity


def test_spec_names_the_official_files() -> None:
    assert DINOV2_SPEC.url == "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
    assert DINOV2_SPEC.filename == "dinov2_vitl14_pretrain.pth"  # the torch hub cache name: hub downloads are found
    assert DINOV2_SPEC.env_var == DINOV2_WEIGHTS_ENV_VAR == "LIGHTNING_GANEVAL_DINOV2_WEIGHTS"
    assert re.fullmatch(r"[0-9a-f]{64}", DINOV2_SPEC.sha256 or "")
    small_spec = dinov2_weights_spec(SMALL)
    assert small_spec.url == "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"
    assert small_spec.env_var == SMALL_ENV_VAR


class _FileServer(http.server.ThreadingHTTPServer):
    def __init__(self, payload: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _FileHandler)
        self.payload = payload
        self.requests = 0


class _FileHandler(http.server.BaseHTTPRequestHandler):
    server: _FileServer

    def do_GET(self) -> None:
        self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.payload)))
        self.end_headers()
        self.wfile.write(self.server.payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(small_weights: Path) -> Iterator[_FileServer]:
    srv = _FileServer(small_weights.read_bytes())
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def test_weights_resolution_order(
    small_weights: Path, server: _FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = file_sha256(small_weights)
    url = f"http://127.0.0.1:{server.server_address[1]}/dinov2/dinov2_vits14_pretrain.pth"
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    common = {"model": SMALL, "sha256": digest, "url": url, "progress": False}

    downloaded = resolve_dinov2_weights(**common)
    assert (downloaded.source, downloaded.path, downloaded.is_reference) == (
        "download",
        cache / "dinov2_vits14_pretrain.pth",
        True,
    )
    assert downloaded.path.read_bytes() == small_weights.read_bytes()
    assert resolve_dinov2_weights(**common).source == "cache"
    assert server.requests == 1

    monkeypatch.setenv(SMALL_ENV_VAR, str(small_weights))
    assert resolve_dinov2_weights(**common).source == "environment"
    assert resolve_dinov2_weights(small_weights, **common).source == "argument"
    # The extractor resolves the same way and builds from the environment variable's file.
    monkeypatch.setattr(dinov2, "_BASE_URL", "http://127.0.0.1:9")  # nothing else may be reached
    assert DINOv2Extractor(model=SMALL, device="cpu").weights.source == "environment"
    assert server.requests == 1


def test_download_is_verified_against_the_pin(small_weights: Path, server: _FileServer, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}/dinov2_vits14_pretrain.pth"
    with pytest.raises(WeightsHashError, match=hashlib.sha256(b"x").hexdigest()):
        resolve_dinov2_weights(model=SMALL, sha256=hashlib.sha256(b"x").hexdigest(), url=url, progress=False)
    # The real pinned digest refuses the random file, and nothing is left in the cache.
    with pytest.raises(WeightsHashError, match=dinov2_weights_spec(SMALL).sha256 or "-"):
        resolve_dinov2_weights(model=SMALL, url=url, progress=False)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert {p.name for p in cache.iterdir()} <= {"dinov2_vits14_pretrain.pth.lock"}


def test_offline_message_is_actionable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(dinov2, "_BASE_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(WeightsNotFoundError) as info:
        DINOv2Extractor(device="cpu", progress=False)
    message = str(info.value)
    target = tmp_path / "torch_home" / "hub" / "checkpoints" / "dinov2_vitl14_pretrain.pth"
    for needle in [
        "DINOv2 ViT-L/14",
        f"http://127.0.0.1:{port}/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
        DINOV2_SPEC.sha256 or "-",
        "LIGHTNING_GANEVAL_DINOV2_WEIGHTS=/path/to/dinov2_vitl14_pretrain.pth",
        "`weights=` of DINOv2Extractor",
        str(target),
    ]:
        assert needle in message
    assert not target.exists()


# --------------------------------------------------------------------------------------------- ViT-L/14, GPU


@pytest.mark.slow
def test_vitl14_end_to_end(tmp_path: Path) -> None:
    path = write_random_dinov2_weights(tmp_path / "vitl14.pth", seed=0)  # the default size is ViT-L/14
    extractor = DINOv2Extractor(path, device="cpu")
    images = _images(1, 48, seed=3)
    features = extractor(images)
    assert features.shape == (1, 1024)
    assert features.dtype == torch.float32
    assert extractor.identity == f"dinov2-vitl14/{extractor.weights.sha256[:16]}/bicubic224"
    # The float64 comparison of the forward is ViT-S/14's (test_matches_a_float64_reference_forward); here the
    # written-out forward in float32 (half the cost of float64 on 304 M parameters, no 2.4 GB copy) checks that
    # the ViT-L/14 configuration (24 blocks, 16 heads, 1024 wide) is the one built. Measured 3.7e-6 relative (L2)
    # (3.9e-6 against the float64 forward); a wrong head count or depth is off by O(1).
    state = torch.load(path, weights_only=True, mmap=True)
    reference = _reference_features(state, extractor.preprocess(images), dtype=torch.float32)
    assert _max_rel(features, reference) < 5e-5


@pytest.mark.gpu
def test_cuda_matches_cpu_and_restores_tf32(small: DINOv2Extractor, small_weights: Path) -> None:
    cuda = DINOv2Extractor(small_weights, model=SMALL, device="cuda")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        images = _images(4, 64)
        on_gpu = cuda(images)
        assert on_gpu.device.type == "cuda"
        assert torch.backends.cuda.matmul.allow_tf32  # restored after the call
        # TF32 off inside: float32 on both devices, different kernels (not measured: no GPU was available).
        assert _max_rel(on_gpu.cpu(), small(images)) < 1e-4
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
