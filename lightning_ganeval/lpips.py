"""LPIPS with VGG16 (Zhang et al., CVPR 2018, "v0.1" linear heads), as torch-fidelity computes it for PPL.

The network is the ImageNet VGG16 convolution trunk read at ``relu1_2``, ``relu2_2``, ``relu3_3``, ``relu4_3`` and
``relu5_3``; each of the five activations is normalised to unit length along the channels, the squared difference of
the two images' activations is weighted per channel by a learned non-negative 1 × 1 convolution (the "linear
heads") and averaged over the positions, and the five numbers are summed.

Inputs are images with values in [0, 255] (float or uint8), N × 3 × H × W. They are mapped as torch-fidelity's
``SampleSimilarityLPIPS`` maps them (the LPIPS scaling layer, written for [0, 255]: ``(x - (1 + shift) * 255 / 2)
* 2 / (scale * 255)`` with ``shift = (-0.030, -0.088, -0.188)``, ``scale = (0.458, 0.448, 0.450)``), then resized to
``resize`` × ``resize`` (area filter when both sides are larger, bilinear otherwise; torch-fidelity's rule, after
the scaling, as there), which also fixes the cost: 64 by default, as torch-fidelity and torchmetrics.

Weights: two published files, the same two torch-fidelity loads, found by `resolve_lpips_weights` with the rules of
:mod:`lightning_ganeval.weights` (argument, environment variable, torch hub cache, verified download, offline
message):

* the torchvision ImageNet VGG16 (``vgg16-397923af.pth``; only its ``features.*`` tensors are used, the
  classifier is skipped) — the torch hub cache shares it with torchvision;
* the LPIPS v0.1 VGG linear heads as torch-fidelity re-publishes them (``weights-vgg16-lpips.pth``, keys
  ``lin{0..4}.model.1.weight`` of shapes ``1 × C × 1 × 1``).

:func:`lightning_ganeval.testing.write_random_lpips_weights` writes random files in both layouts for tests.

The float32 arithmetic follows torch-fidelity's op for op (same constants, same order of the scaling and the
resize, the same reductions), because PPL divides LPIPS distances of images 1e-4 apart by 1e-8: a different
rounding of the features moves a single distance by ~1e-3 relative.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ganeval.weights import ResolvedWeights, WeightsSpec, resolve_weights

__all__ = [
    "LPIPSVGG16",
    "LPIPS_CHANNELS",
    "LPIPS_ENV_VAR",
    "LPIPS_SPEC",
    "VGG16_ENV_VAR",
    "VGG16_SPEC",
    "resolve_lpips_weights",
    "vgg16_feature_shapes",
]

#: Channels of the five VGG16 layers LPIPS reads (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
LPIPS_CHANNELS = (64, 128, 256, 512, 512)

# torchvision's VGG16 `features`: conv widths, "M" a 2 x 2 max pool. Indices follow torchvision (a conv, then its
# ReLU), so the published file's `features.<i>.weight` keys load as they are. LPIPS stops after relu5_3 (index 29).
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Index of the ReLU after which each LPIPS layer is read.
_TAPS = (3, 8, 15, 22, 29)

# The LPIPS scaling layer (inputs in [-1, 1]): x -> (x - shift) / scale.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_NORM_EPS = 1e-10


def _lpips_file(key: str, name: str, url: str, sha256: str) -> WeightsSpec:
    """One of the two files LPIPS reads: cached under its URL's file name, passed as ``<key>_weights=`` (of
    PPLCallback, PerceptualPathLength and LPIPSVGG16) or in ``LIGHTNING_GANEVAL_<KEY>_WEIGHTS``."""
    return WeightsSpec(
        name=name,
        filename=url.rpartition("/")[2],
        url=url,
        sha256=sha256,
        env_var=f"LIGHTNING_GANEVAL_{key.upper()}_WEIGHTS",
        argument=f"`{key}_weights=` of PPLCallback / PerceptualPathLength / LPIPSVGG16",
    )


VGG16_SPEC = _lpips_file(
    "vgg16",
    "VGG16 (LPIPS trunk)",
    "https://download.pytorch.org/models/vgg16-397923af.pth",
    # torch hub convention: the file name carries the SHA-256 prefix (torchvision checks it the same way).
    "397923af",
)
"""torchvision's ImageNet VGG16 (``VGG16_Weights.IMAGENET1K_V1``), the trunk torch-fidelity's LPIPS uses."""

LPIPS_SPEC = _lpips_file(
    "lpips",
    "LPIPS VGG16 linear heads",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-vgg16-lpips.pth",
    # torch-fidelity publishes no digest; this one is pinned by a third-party download script that verifies the
    # same URL. A file with another digest can still be passed explicitly (it is loaded with a warning).
    "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
)
"""The LPIPS v0.1 VGG linear heads as torch-fidelity re-publishes them (richzhang/PerceptualSimilarity, BSD-2)."""

VGG16_ENV_VAR = VGG16_SPEC.env_var
"""``LIGHTNING_GANEVAL_VGG16_WEIGHTS``: a local copy of the VGG16 file."""
LPIPS_ENV_VAR = LPIPS_SPEC.env_var
"""``LIGHTNING_GANEVAL_LPIPS_WEIGHTS``: a local copy of the linear heads."""


def vgg16_feature_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the ``features.*`` tensors of torchvision's VGG16 that LPIPS reads (indices 0 to 28)."""
    shapes: dict[str, tuple[int, ...]] = {}
    index, channels = 0, 3
    for item in _VGG16_CFG:
        if item == "M":
            index += 1
            continue
        assert isinstance(item, int)
        shapes[f"features.{index}.weight"] = (item, channels, 3, 3)
        shapes[f"features.{index}.bias"] = (item,)
        index, channels = index + 2, item
    return shapes


def resolve_lpips_weights(
    lpips_weights: str | os.PathLike[str] | None = None,
    vgg16_weights: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    **kwargs: Any,
) -> tuple[ResolvedWeights, ResolvedWeights]:
    """Find (and if needed download and verify) the two LPIPS files: ``(linear heads, VGG16)``.

    Each follows :func:`~lightning_ganeval.weights.resolve_weights`: the argument, then the environment variable
    (:data:`LPIPS_ENV_VAR`, :data:`VGG16_ENV_VAR`), then the torch hub cache, then a verified download.

    Args:
        lpips_weights: Local copy of ``weights-vgg16-lpips.pth``.
        vgg16_weights: Local copy of ``vgg16-397923af.pth``.
        progress: Show a progress bar while downloading.
        **kwargs: Passed to both ``resolve_weights`` calls (``cache_dir=``).
    """
    heads = resolve_weights(lpips_weights, spec=LPIPS_SPEC, progress=progress, **kwargs)
    trunk = resolve_weights(vgg16_weights, spec=VGG16_SPEC, progress=progress, **kwargs)
    return heads, trunk


class _LinearHead(nn.Module):
    """One LPIPS linear head; ``model.1`` is the key layout of the published file (``model.0`` is a dropout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))


class LPIPSVGG16(nn.Module):
    """LPIPS-VGG16 distance between two batches of images in [0, 255], one value per pair.

    The module never leaves eval mode (dropout of the heads off) and its parameters never require gradients.

    Args:
        lpips_weights: The linear heads file (see :func:`resolve_lpips_weights`); ``None`` finds it.
        vgg16_weights: The VGG16 file; ``None`` finds it.
        resize: Side both images are resized to before the network, or ``None`` to keep their size.
        state_dict: Build from this state dict instead (keys ``features.<i>.*`` and ``lin<k>.model.1.weight``);
            the weights arguments are then ignored.
        progress: Progress bar while downloading.

    Raises:
        ValueError: ``resize`` is not a positive int or None.
        WeightsError: The files cannot be found or downloaded (the message says how to provide them).
        RuntimeError: A file does not have the expected keys and shapes.

    Example::

        >>> from lightning_ganeval.testing import build_random_lpips_state_dict
        >>> net = LPIPSVGG16(state_dict=build_random_lpips_state_dict(seed=0), resize=32)
        >>> x = torch.rand(2, 3, 32, 32) * 255
        >>> net(x, x).tolist()
        [0.0, 0.0]
    """

    def __init__(
        self,
        lpips_weights: str | os.PathLike[str] | None = None,
        vgg16_weights: str | os.PathLike[str] | None = None,
        *,
        resize: int | None = 64,
        state_dict: dict[str, Tensor] | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if resize is not None and (isinstance(resize, bool) or not isinstance(resize, int) or resize < 1):
            raise ValueError(f"`resize` must be a positive int or None, got {resize!r}.")
        self.resize = resize
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(item, int)
                layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers)
        for k, c in enumerate(LPIPS_CHANNELS):
            self.add_module(f"lin{k}", _LinearHead(c))
        # Buffers: they follow .to(device); float32 like torch-fidelity's constants, computed the same way.
        shift = torch.tensor(_SHIFT)[None, :, None, None]
        scale = torch.tensor(_SCALE)[None, :, None, None]
        self.register_buffer("center", (1 + shift) * 255 / 2, persistent=False)
        self.register_buffer("inv_scale", 2 / (scale * 255), persistent=False)
        self.weights: tuple[ResolvedWeights, ResolvedWeights] | None = None
        if state_dict is None:
            self.weights = resolve_lpips_weights(lpips_weights, vgg16_weights, progress=progress)
            heads = torch.load(self.weights[0].path, map_location="cpu", weights_only=True)
            trunk = torch.load(self.weights[1].path, map_location="cpu", weights_only=True)
            state_dict = {**_only_features(trunk, self.weights[1].path), **heads}
        self._load(state_dict)
        self.eval()
        self.requires_grad_(False)

    def _load(self, state_dict: dict[str, Tensor]) -> None:
        wanted = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        given = {k: v for k, v in state_dict.items() if not k.startswith("classifier.")}
        missing = sorted(set(wanted) - set(given))
        unexpected = sorted(set(given) - set(wanted))
        wrong = sorted(k for k in set(wanted) & set(given) if tuple(given[k].shape) != wanted[k])
        if missing or unexpected or wrong:
            raise RuntimeError(
                "The LPIPS weights do not have the layout of vgg16-397923af.pth (features.*) plus"
                f" weights-vgg16-lpips.pth (lin<k>.model.1.weight): missing {missing[:6]}, unexpected"
                f" {unexpected[:6]}, wrong shapes {wrong[:6]}."
            )
        self.load_state_dict({k: v.float() for k, v in given.items()})

    def train(self, mode: bool = True) -> LPIPSVGG16:
        # A fixed metric network: a parent's .train() must not switch the heads' dropout on.
        return super().train(False)

    def _prepare(self, images: Tensor) -> Tensor:
        x = (images.float() - self.center) * self.inv_scale
        size = self.resize
        if size is not None:
            if x.shape[-1] > size and x.shape[-2] > size:
                x = F.interpolate(x, (size, size), mode="area")
            else:
                x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False)
        return x

    def _taps(self, x: Tensor) -> list[Tensor]:
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _TAPS:
                out.append(x)
            if index == _TAPS[-1]:
                break
        return out

    def forward(self, images0: Tensor, images1: Tensor) -> Tensor:
        """Per-pair LPIPS distances, float32, shape ``(N,)``.

        Args:
            images0: N × 3 × H × W, values in [0, 255] (uint8 or float).
            images1: Same shape.
        """
        if images0.shape != images1.shape or images0.ndim != 4 or images0.shape[1] != 3:
            raise ValueError(
                "LPIPSVGG16 needs two batches of the same shape N x 3 x H x W, got"
                f" {tuple(images0.shape)} and {tuple(images1.shape)}."
            )
        # Two passes, not one over both batches: the same shapes as torch-fidelity, hence the same float32 rounding.
        taps0 = self._taps(self._prepare(images0))
        taps1 = self._taps(self._prepare(images1))
        total: Tensor | None = None
        for k, (a, b) in enumerate(zip(taps0, taps1, strict=True)):
            a = a / (torch.sqrt(torch.sum(a**2, dim=1, keepdim=True)) + _NORM_EPS)
            b = b / (torch.sqrt(torch.sum(b**2, dim=1, keepdim=True)) + _NORM_EPS)
            head = getattr(self, f"lin{k}").model[1]
            value = head((a - b) ** 2).mean([2, 3]).squeeze(1)
            total = value if total is None else total + value
        assert total is not None
        return total


def _only_features(state: dict[str, Tensor], path: os.PathLike[str] | str) -> dict[str, Tensor]:
    if not isinstance(state, dict):
        raise RuntimeError(f"{path} holds a {type(state).__name__}, not a VGG16 state dict.")
    return {k: v for k, v in state.items() if k.startswith("features.")}
