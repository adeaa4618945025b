"""The FD_DINOv2 feature extractor: DINOv2 ViT-L/14 CLS-token embeddings of uint8 images.

FD_DINOv2 (Stein et al., "Exposing flaws of generative model evaluation metrics and their unfair treatment of
diffusion models", NeurIPS 2023, code: ``layer6ai-labs/dgm-eval``; adopted by EDM2, Karras et al. 2024) is the
Fréchet distance computed on the 1024-d features of DINOv2 ViT-L/14 instead of Inception pool3 features.

Preprocessing, as in the two reference implementations:

* **Resize** to 224 x 224 with bicubic interpolation, whatever the input size, aspect ratio not preserved (no crop).

  - ``resize="bicubic"`` (default) is EDM2's default (``calculate_metrics.py``, ``resize_mode='torch'``):
    ``F.interpolate(x.float(), size=(224, 224), mode="bicubic", antialias=True)`` (``align_corners=False``) on
    the 0-255 float images, not rounded or clamped afterwards. Antialiasing matters when downsampling (a 512 x 512
    input); for upsampling (32 x 32) it changes nothing.
  - ``resize="pil"`` is dgm-eval's default path, also EDM2's ``resize_mode='pil'`` ("slow reference
    implementation that matches the original dgm-eval codebase exactly"): torchvision ``Resize((224, 224),
    BICUBIC)`` on a PIL image, i.e. Pillow's bicubic resize of the uint8 RGB image (Pillow antialiases when
    downsampling and rounds back to uint8). It runs on the CPU, image by image. EDM2 calls the two "almost the
    same": both use Keys' cubic with ``a = -0.5`` and the same antialiasing, and on smooth images the resized
    values differ by at most ~1 level (0.3 on average: Pillow rounds each of its two passes to uint8). Near sharp
    saturated edges they differ by up to ~20 levels, because Pillow clips its first (horizontal) pass to
    [0, 255] while the torch path keeps the bicubic overshoot (values below 0 or above 255 reach the network).

* **Scale** to [0, 1] (``x / 255``) and **normalise** with the ImageNet mean (0.485, 0.456, 0.406) and standard
  deviation (0.229, 0.224, 0.225), in float32.

* **Embed**: the CLS token after the final LayerNorm (``x_norm_clstoken`` of the torch hub model, whose ``head``
  is the identity), 1024-d for ViT-L/14.

The network is timm's ``vit_large_patch14_dinov2`` built for 224 x 224 input, loaded from the *official*
checkpoint (``dinov2_vitl14_pretrain.pth`` of facebookresearch/dinov2, the file the torch hub model downloads),
converted with timm's own ``checkpoint_filter_fn`` (which drops ``mask_token``, the only key timm does not use).

Position embeddings: the checkpoint was trained at 518 x 518, a 37 x 37 patch grid; a 224 x 224 input has a
16 x 16 grid. The torch hub model (used by dgm-eval and EDM2) resamples its embeddings at every forward pass with
bicubic interpolation *without* antialiasing and with a historical offset: it passes
``scale_factor = (16 + 0.1) / 37`` instead of ``size=16``, so the sampling positions differ slightly from a plain
resize. timm's checkpoint filter resamples once at load time with ``size=16`` and ``antialias=True``, which gives
different embeddings (and features). This module resamples at load time with the hub model's exact arithmetic
(:func:`interpolate_pos_embed`), so the stored embeddings equal the ones the hub model computes at every call.
Measured on the CPU against the hub model of facebookresearch/dinov2 (August 2025), same random weights in the
official layout, 32, 224 and 512 px inputs: bit-identical features for ViT-S/14 and ViT-L/14. timm's default
conversion instead differs from the hub model by 17-22 % (ViT-S/14) of the feature norm on those random weights,
whose position embeddings are rougher than learned ones; the real weights could not be measured here. On CUDA the
hub model resamples on the GPU (and may use xFormers attention), so agreement there is to float32 rounding.

Weights follow the same rules as the Inception weights (:func:`lightning_ganeval.weights.resolve_weights`): the
``weights=`` argument, the environment variable ``LIGHTNING_GANEVAL_DINOV2_WEIGHTS``, the torch hub cache (the same
file name the hub model uses, so an existing hub download is found), then a download verified against the pinned
SHA-256. The official files publish no digest; the pinned ones are the digests that several unrelated public
projects record for these files (ViT-L/14: 1,217,586,395 bytes, SHA-256 ``d5383ea8...``). Every file is also
checked structurally when it is loaded (exact key set and shapes of the official layout).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import lightning_ganeval.feature_network as base
from lightning_ganeval.weights import ResolvedWeights, WeightsSpec, resolve_weights

__all__ = [
    "DINOV2_MODELS",
    "DINOV2_SPEC",
    "DINOV2_WEIGHTS_ENV_VAR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESIZE_MODES",
    "DINOv2Extractor",
    "dinov2_weights_spec",
    "interpolate_pos_embed",
    "official_state_dict_shapes",
    "resolve_dinov2_weights",
]

INPUT_SIZE = 224
PATCH_SIZE = 14
CHECKPOINT_GRID = 37
"""The official checkpoints' position-embedding grid: 518 / 14 patches per side."""
INTERPOLATE_OFFSET = 0.1
"""The torch hub DINOv2 model's ``interpolate_offset`` (see :func:`interpolate_pos_embed`)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("bicubic", "pil")
"""``"bicubic"``: EDM2's default, torch bicubic with antialias on float images. ``"pil"``: dgm-eval's Pillow bicubic
on uint8 images (CPU). See the module docstring."""
DINOV2_WEIGHTS_ENV_VAR = "LIGHTNING_GANEVAL_DINOV2_WEIGHTS"
_BASE_URL = "https://dl.fbaipublicfiles.com/dinov2"


@dataclass(frozen=True)
class _Arch:
    timm_name: str
    embed_dim: int
    depth: int
    num_heads: int
    sha256: str
    label: str


_ARCHS = {
    "vitl14": _Arch(
        "vit_large_patch14_dinov2",
        1024,
        24,
        16,
        "d5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428",
        "ViT-L/14",
    ),
    "vitb14": _Arch(
        "vit_base_patch14_dinov2",
        768,
        12,
        12,
        "0b8b82f85de91b424aded121c7e1dcc2b7bc6d0adeea651bf73a13307fad8c73",
        "ViT-B/14",
    ),
    "vits14": _Arch(
        "vit_small_patch14_dinov2",
        384,
        12,
        6,
        "b938bf1bc15cd2ec0feacfe3a1bb553fe8ea9ca46a7e1d8d00217f29aef60cd9",
        "ViT-S/14",
    ),
}
DINOV2_MODELS = tuple(_ARCHS)
"""Supported backbones. FD_DINOv2 is defined with ``"vitl14"``; the smaller ones are for tests and experiments."""


def _arch(model: str) -> _Arch:
    try:
        return _ARCHS[model]
    except KeyError:
        raise ValueError(f"model must be one of {', '.join(map(repr, DINOV2_MODELS))}, got {model!r}.") from None


def dinov2_weights_spec(model: str = "vitl14") -> WeightsSpec:
    """The official DINOv2 backbone checkpoint of ``model`` as a :class:`~lightning_ganeval.weights.WeightsSpec`.

    ``"vitl14"`` reads the environment variable ``LIGHTNING_GANEVAL_DINOV2_WEIGHTS``; the other models read
    ``LIGHTNING_GANEVAL_DINOV2_<MODEL>_WEIGHTS`` (e.g. ``..._VITS14_...``), so that one variable never feeds a file
    of the wrong size to another model.
    """
    arch = _arch(model)
    env_var = DINOV2_WEIGHTS_ENV_VAR if model == "vitl14" else f"LIGHTNING_GANEVAL_DINOV2_{model.upper()}_WEIGHTS"
    filename = f"dinov2_{model}_pretrain.pth"
    return WeightsSpec(
        name=f"DINOv2 {arch.label}",
        filename=filename,
        url=f"{_BASE_URL}/dinov2_{model}/{filename}",
        sha256=arch.sha256,
        env_var=env_var,
        argument="`weights=` of DINOv2Extractor",
    )


DINOV2_SPEC = dinov2_weights_spec("vitl14")
"""The FD_DINOv2 weights: ``dinov2_vitl14_pretrain.pth``."""


def resolve_dinov2_weights(
    path: str | os.PathLike[str] | None = None, *, model: str = "vitl14", **kwargs: Any
) -> ResolvedWeights:
    """Find, download and verify the DINOv2 weights of ``model`` (``resolve_weights`` with its spec).

    Args:
        path: A local file in the official checkpoint layout, used as given (a non-reference digest warns once).
        model: One of :data:`DINOV2_MODELS`.
        **kwargs: ``sha256``, ``url``, ``cache_dir``, ``progress`` of
            :func:`~lightning_ganeval.weights.resolve_weights`.

    Returns:
        The resolved file.
    """
    return resolve_weights(path, spec=dinov2_weights_spec(model), **kwargs)


def official_state_dict_shapes(model: str = "vitl14") -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the official ``dinov2_<model>_pretrain.pth`` (facebookresearch/dinov2, no registers).

    Args:
        model: One of :data:`DINOV2_MODELS`.

    Returns:
        ``{key: shape}``, e.g. ``pos_embed: (1, 1370, 1024)`` (CLS + 37 x 37 patches) and ``mask_token: (1, 1024)``
        for ViT-L/14.
    """
    arch = _arch(model)
    d, hidden = arch.embed_dim, 4 * arch.embed_dim
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 1 + CHECKPOINT_GRID**2, d),
        "mask_token": (1, d),
        "patch_embed.proj.weight": (d, 3, PATCH_SIZE, PATCH_SIZE),
        "patch_embed.proj.bias": (d,),
    }
    for i in range(arch.depth):
        block = {
            "norm1.weight": (d,),
            "norm1.bias": (d,),
            "attn.qkv.weight": (3 * d, d),
            "attn.qkv.bias": (3 * d,),
            "attn.proj.weight": (d, d),
            "attn.proj.bias": (d,),
            "ls1.gamma": (d,),
            "norm2.weight": (d,),
            "norm2.bias": (d,),
            "mlp.fc1.weight": (hidden, d),
            "mlp.fc1.bias": (hidden,),
            "mlp.fc2.weight": (d, hidden),
            "mlp.fc2.bias": (d,),
            "ls2.gamma": (d,),
        }
        shapes.update({f"blocks.{i}.{key}": shape for key, shape in block.items()})
    shapes["norm.weight"] = (d,)
    shapes["norm.bias"] = (d,)
    return shapes


def interpolate_pos_embed(pos_embed: Tensor, grid: int, offset: float = INTERPOLATE_OFFSET) -> Tensor:
    """Resample a (1, 1 + M*M, D) position embedding to a ``grid`` x ``grid`` patch grid like the torch hub model.

    This is the arithmetic of ``DinoVisionTransformer.interpolate_pos_encoding`` (facebookresearch/dinov2) with its
    defaults ``interpolate_offset=0.1, interpolate_antialias=False``: float32 bicubic interpolation (``a = -0.75``,
    ``align_corners=False``, no antialias) with ``scale_factor = (grid + offset) / M`` rather than an output size.
    The output has ``floor(M * scale_factor) = grid`` cells, but each one samples the source at
    ``(i + 0.5) * M / (grid + offset) - 0.5``, slightly inside the positions a plain ``size=grid`` resize would use.
    The CLS embedding (index 0) is kept as is.

    Args:
        pos_embed: Embeddings of the CLS token followed by an M x M grid, row-major.
        grid: Patches per side of the target grid (16 for a 224 x 224 input with patch 14).
        offset: The hub model's ``interpolate_offset``; 0 resamples with ``size=grid`` instead.

    Returns:
        A float32 (1, 1 + grid * grid, D) tensor.
    """
    n = pos_embed.shape[1] - 1
    m = round(n**0.5)
    if m * m != n:
        raise ValueError(f"pos_embed must hold a CLS token and a square grid, got shape {tuple(pos_embed.shape)}.")
    pos = pos_embed.float()
    dim = pos.shape[-1]
    if m == grid:
        return pos.clone()
    patches = pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
    if offset:
        scale = (grid + offset) / m
        patches = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    else:
        patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", antialias=False)
    if patches.shape[-2:] != (grid, grid):
        raise ValueError(f"resampling a {m} x {m} grid gave {tuple(patches.shape[-2:])}, not {grid} x {grid}.")
    return torch.cat([pos[:, :1], patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)], dim=1)


def _check_layout(state: Any, model: str, path: os.PathLike[str] | str) -> dict[str, Tensor]:
    """Refuse anything but a plain state dict with exactly the official keys and shapes."""
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} is not a plain state dict of tensors (the official DINOv2 layout).")
    expected = official_state_dict_shapes(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {len(missing)} keys (first: {missing[:3]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (first: {unexpected[:3]})")
        if wrong:
            details.append(
                "wrong shapes: "
                + ", ".join(f"{k} {tuple(state[k].shape)} != {expected[k]}" for k in wrong[:3])
                + (" ..." if len(wrong) > 3 else "")
            )
        raise ValueError(
            f"weights file {path} does not hold the official DINOv2 {_arch(model).label} checkpoint "
            f"(dinov2_{model}_pretrain.pth layout): {'; '.join(details)}."
        )
    return state


def _build_network(weights: ResolvedWeights, model: str) -> nn.Module:
    """timm's DINOv2 ViT for 224 x 224 input, loaded strictly from an official-layout checkpoint (float32, CPU)."""
    try:
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn
    except ImportError as err:
        raise ImportError(
            "DINOv2Extractor needs timm (>=0.9): pip install 'lightning-ganeval[dinov2]' or pip install timm."
        ) from err
    path = weights.path
    state = base.load_tensor_file(path)
    state = dict(_check_layout(state, model, path))
    state = {k: v.float() for k, v in state.items()}
    # Resample here with the hub model's arithmetic; the filter below then finds a matching grid and keeps it.
    state["pos_embed"] = interpolate_pos_embed(state["pos_embed"], INPUT_SIZE // PATCH_SIZE)
    # On the meta device, timm's random initialisation (~15 s for ViT-L on a CPU) is skipped; the checkpoint
    # then supplies every tensor (assign=True), and strict loading guarantees none is left uninitialised.
    with torch.device("meta"):
        net = timm.create_model(_arch(model).timm_name, pretrained=False, img_size=INPUT_SIZE, num_classes=0)
    converted = checkpoint_filter_fn(state, net)
    net.load_state_dict(converted, strict=True, assign=True)
    if any(t.is_meta for t in [*net.parameters(), *net.buffers()]):
        raise RuntimeError(f"timm's {_arch(model).timm_name} has tensors that the checkpoint does not provide.")
    return net


class DINOv2Extractor(base.FeatureNetwork):
    """DINOv2 CLS-token features for FD_DINOv2: uint8 images in, float32 N x 1024 (ViT-L/14) features out.

    See the module docstring for the preprocessing and the position-embedding convention. The module is always
    in eval mode (``train()`` is a no-op), holds no trainable parameters, never records an autograd graph, and
    runs in float32 with autocast off and TF32 off on CUDA (unless ``allow_tf32``), whatever the surrounding
    Trainer does.

    Args:
        weights: A weights file in the official checkpoint layout, an already resolved
            :class:`~lightning_ganeval.weights.ResolvedWeights`, or ``None`` to find or download the official
            file (argument, ``LIGHTNING_GANEVAL_DINOV2_WEIGHTS``, torch hub cache, verified download).
        model: Backbone, one of :data:`DINOV2_MODELS`; FD_DINOv2 is defined with ``"vitl14"`` (the default).
        resize: One of :data:`RESIZE_MODES`: ``"bicubic"`` (EDM2's default) or ``"pil"`` (dgm-eval's exact path).
        device: Where the network lives and runs; inputs on other devices are moved. ``None``: the current CUDA
            device if CUDA is available, else the CPU.
        allow_tf32: Allow TF32 matmuls on CUDA (off by default: it changes features by ~1e-3 relative).
        progress: Show a progress bar while downloading the weights.

    Attributes:
        weights: The resolved weights file.
        model: The backbone name.
        resize: The resize mode.
        num_features: Feature dimension (1024 for ViT-L/14).
        identity: ``"dinov2-<model>/<sha256[:16]>/<bicubic224|pil-bicubic224>"``, for cache keys and provenance.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | ResolvedWeights | None = None,
        *,
        model: str = "vitl14",
        resize: str = "bicubic",
        device: str | torch.device | int | None = None,
        allow_tf32: bool = False,
        progress: bool = True,
    ) -> None:
        super().__init__(allow_tf32=allow_tf32)
        arch = _arch(model)
        base.check_choice("resize", resize, RESIZE_MODES)
        self.weights = base.resolve_weights_argument(
            weights, lambda path: resolve_dinov2_weights(path, model=model, progress=progress)
        )
        self.model = model
        self.resize = resize
        self.num_features = arch.embed_dim
        self.identity = f"dinov2-{model}/{self.weights.sha256[:16]}/" + (
            "bicubic224" if resize == "bicubic" else "pil-bicubic224"
        )
        target = base.default_device(device)
        self.net = _build_network(self.weights, model)
        self._register_normalisation(IMAGENET_MEAN, IMAGENET_STD)
        self._place(target)

    def preprocess(self, images: Tensor) -> Tensor:
        """Resize to 224 x 224 and normalise: the network's float32 N x 3 x 224 x 224 input on :attr:`device`.

        Args:
            images: uint8 N x 3 x H x W, any H and W (see :func:`lightning_ganeval.images.to_uint8_rgb`).
        """
        # Also at 224 x 224 in "bicubic" mode, as EDM2 does: there it is the identity up to float rounding.
        return self._bicubic_input(images, INPUT_SIZE)

    def forward(self, images: Tensor) -> Tensor:
        """Compute the CLS-token features.

        Args:
            images: uint8 N x 3 x H x W, any H and W (see :func:`lightning_ganeval.images.to_uint8_rgb`).

        Returns:
            float32 N x :attr:`num_features` features on :attr:`device`, without autograd history.
        """
        return self._embed(images, self.preprocess, self.net, self.num_features)
