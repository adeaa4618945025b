"""The CMMD feature extractor: CLIP ViT-L/14 at 336 px projected image embeddings of uint8 images.

CMMD (Jayasumana et al., "Rethinking FID: Towards a Better Evaluation Metric for Image Generation", CVPR 2024,
code: google-research ``cmmd/``) compares the CLIP image embeddings of two image sets. The network is OpenAI's
CLIP ViT-L/14 at 336 x 336 (``openai/clip-vit-large-patch14-336`` on the Hugging Face hub), loaded through
Hugging Face ``transformers`` (``CLIPVisionModelWithProjection``; the optional extra ``[clip]``), and the feature is
its projected ``image_embeds`` (768-d), *not* L2-normalised here: :class:`~lightning_ganeval.metrics.CMMD`
normalises every row itself, so that any ``feature_extractor=`` gets the same treatment.

Preprocessing, as the reference's ``io_util.py`` and ``embedding.py``:

* **Centre crop** to a square of side min(H, W) (``top = (H - side) // 2``, ``left = (W - side) // 2``).
* **Resize** to 336 x 336 with bicubic filtering.

  - ``resize="pil"`` (default) is the reference: Pillow's bicubic ``Image.resize`` of the uint8 RGB image
    (antialiased when downsampling, rounded back to uint8). It runs on the CPU, image by image. The reference then
    calls ``jax.image.resize`` to the same size again, which is the identity at equal size.
  - ``resize="bicubic"`` runs ``F.interpolate(mode="bicubic", antialias=True)`` on the float images on the
    network's device: faster on a GPU, not reference-exact (no uint8 rounding, bicubic overshoot kept; about one
    grey level on smooth images, more at sharp edges, as for DINOv2).

* **Scale** to [0, 1] (``x / 255``) and **normalise** with the CLIP mean (0.48145466, 0.4578275, 0.40821073) and
  standard deviation (0.26862954, 0.26130258, 0.27577711), in float32.

Hugging Face's ``CLIPImageProcessor`` resizes the shorter side first and crops afterwards; for square images the
two orders agree, for other aspect ratios they differ by the resampling of the crop. This module follows the CMMD
reference.

Weights follow the same rules as the Inception weights (:func:`lightning_ganeval.weights.resolve_weights`), in
this order: the ``weights=`` argument (a file, or a folder holding ``pytorch_model.bin`` or ``model.safetensors``,
e.g. a hub snapshot or ``save_pretrained`` output), the environment variable ``LIGHTNING_GANEVAL_CLIP_WEIGHTS``,
the Hugging Face hub cache (``HF_HOME`` / ``HF_HUB_CACHE`` honoured: a model fetched earlier by
``from_pretrained`` is found there), the torch hub cache (``<torch hub dir>/checkpoints/clip-vit-large-patch14-336/``)
and a download of ``pytorch_model.bin`` at the pinned hub revision ``ce19dc91...`` into that cache, verified
against its SHA-256 (``c6032c2e...``, 1,711,974,081 bytes, the digest that several unrelated public projects
record for this file). Every file is also checked structurally when it is loaded: the vision tower and the visual
projection in the official key layout (the text tower, present in the official file, is ignored). The architecture
is read from the tensor shapes (hidden size, depth, patch and image size, projection width; 64 channels per head as
in every OpenAI CLIP), so random weights of a small configuration in the official layout load too
(:func:`lightning_ganeval.testing.write_random_clip_weights`); they are not the reference and warn once.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

import lightning_ganeval.feature_network as base
from lightning_ganeval.weights import (
    ResolvedWeights,
    WeightsNotFoundError,
    WeightsSpec,
    file_sha256,
    resolve_weights,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_REPO",
    "CLIP_REVISION",
    "CLIP_SPEC",
    "CLIP_STD",
    "CLIP_WEIGHTS_ENV_VAR",
    "RESIZE_MODES",
    "CLIPExtractor",
    "center_crop_box",
    "get_clip_extractor",
    "resolve_clip_weights",
]

CLIP_REPO = "openai/clip-vit-large-patch14-336"
CLIP_REVISION = "ce19dc912ca5cd21c8a653c79e251e808ccabcd1"
"""The hub commit whose ``pytorch_model.bin`` has the pinned digest."""
CLIP_FILENAME = "pytorch_model.bin"
CLIP_SHA256 = "c6032c2e0caae3dc2d4fba35535fa6307dbb49df59c7e182b1bc4b3329b81801"
CLIP_WEIGHTS_ENV_VAR = "LIGHTNING_GANEVAL_CLIP_WEIGHTS"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("pil", "bicubic")
"""``"pil"``: the CMMD reference, Pillow bicubic on uint8 images (CPU). ``"bicubic"``: torch bicubic with antialias
on float images (any device), not reference-exact."""
_HEAD_DIM = 64  # channels per attention head in every OpenAI CLIP ViT (ViT-L/14: 1024 / 16)
_CACHE_SUBDIR = "clip-vit-large-patch14-336"

CLIP_SPEC = WeightsSpec(
    name="CLIP ViT-L/14-336",
    filename=CLIP_FILENAME,
    url=f"https://huggingface.co/{CLIP_REPO}/resolve/{CLIP_REVISION}/{CLIP_FILENAME}",
    sha256=CLIP_SHA256,
    env_var=CLIP_WEIGHTS_ENV_VAR,
    argument="`weights=` of CLIPExtractor or `clip_weights=` of CMMDCallback",
)
"""The CMMD weights: ``pytorch_model.bin`` of ``openai/clip-vit-large-patch14-336`` at :data:`CLIP_REVISION`."""


def _huggingface_cached_file() -> Path | None:
    """The pinned revision's ``pytorch_model.bin`` in the Hugging Face hub cache, if it is there."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(CLIP_REPO, CLIP_FILENAME, revision=CLIP_REVISION)
    except Exception:  # a malformed cache is no reason to fail: the other sources follow
        return None
    return Path(found) if isinstance(found, (str, os.PathLike)) and Path(found).is_file() else None


def _weights_file_in(folder: Path) -> Path:
    for name in (CLIP_FILENAME, "model.safetensors"):
        if (folder / name).is_file():
            return folder / name
    raise WeightsNotFoundError(
        f"CLIP weights folder {folder} holds neither {CLIP_FILENAME} nor model.safetensors; pass the file itself."
    )


def resolve_clip_weights(
    path: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> ResolvedWeights:
    """Find, download and verify the CMMD CLIP weights (see the module docstring for the order).

    Args:
        path: A weights file (``pytorch_model.bin`` or ``.safetensors`` in the official layout) or a folder holding
            one; loaded as given (a non-reference digest warns once).
        cache_dir: Directory of the downloaded file; default ``<torch hub dir>/checkpoints/clip-vit-large-patch14-336``.
            When given, the Hugging Face cache is not searched.
        progress: Show a progress bar while downloading.

    Returns:
        The resolved file.

    Raises:
        lightning_ganeval.weights.WeightsNotFoundError: nothing found and the download failed (the message says
            where to put the file, which variable to set and which argument to pass).
        lightning_ganeval.weights.WeightsHashError: a downloaded or cached file with the wrong digest.
    """
    env = os.environ.get(CLIP_WEIGHTS_ENV_VAR)
    if path is None and env and Path(env).expanduser().is_dir():
        path = _weights_file_in(Path(env).expanduser())  # a folder: its file, as if passed as the argument
    if isinstance(path, (str, os.PathLike)) and os.fspath(path) and Path(path).expanduser().is_dir():
        path = _weights_file_in(Path(path).expanduser())
    if path is not None or env:
        return resolve_weights(path, spec=CLIP_SPEC, progress=progress)
    if cache_dir is None:
        cached = _huggingface_cached_file()
        if cached is not None:
            digest = file_sha256(cached)
            if digest == CLIP_SHA256:
                return ResolvedWeights(cached.absolute(), digest, "cache", True)
            warnings.warn(
                f"The Hugging Face cache holds {CLIP_REPO}/{CLIP_FILENAME} at {cached} with sha256 {digest}, not"
                f" {CLIP_SHA256}; ignoring it.",
                stacklevel=2,
            )
        import torch.hub

        cache_dir = Path(torch.hub.get_dir()) / "checkpoints" / _CACHE_SUBDIR
    return resolve_weights(None, spec=CLIP_SPEC, cache_dir=cache_dir, progress=progress)


def _load_state(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = base.load_tensor_file(path)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} is not a plain state dict of tensors (the official CLIP layout).")
    return state


def _vision_state(state: dict[str, Tensor], path: Path) -> tuple[dict[str, Tensor], dict[str, int]]:
    """The vision tower and projection of an official-layout state dict, and the architecture their shapes give."""
    vision = {k: v for k, v in state.items() if k.startswith("vision_model.") or k == "visual_projection.weight"}
    # Files written by transformers < 4.31 hold the position ids as a buffer; newer versions rebuild them.
    vision.pop("vision_model.embeddings.position_ids", None)
    needed = (
        "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.position_embedding.weight",
        "vision_model.encoder.layers.0.mlp.fc1.weight",
        "visual_projection.weight",
    )
    missing = [k for k in needed if k not in vision]
    if missing:
        raise ValueError(
            f"weights file {path} does not hold a CLIP vision tower in the official Hugging Face layout"
            f" ({CLIP_REPO}/{CLIP_FILENAME}): missing {missing}."
        )
    hidden = vision["vision_model.embeddings.class_embedding"].shape[0]
    patch = vision["vision_model.embeddings.patch_embedding.weight"].shape[-1]
    positions = vision["vision_model.embeddings.position_embedding.weight"].shape[0]
    grid = round((positions - 1) ** 0.5)
    layers = {int(m.group(1)) for k in vision if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))}
    if grid * grid != positions - 1 or (hidden % _HEAD_DIM and hidden >= _HEAD_DIM):
        raise ValueError(f"weights file {path}: {positions} positions or width {hidden} fit no CLIP ViT.")
    arch = {
        "hidden_size": hidden,
        "intermediate_size": vision["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": len(layers),
        "num_attention_heads": max(1, hidden // _HEAD_DIM),
        "image_size": grid * patch,
        "patch_size": patch,
        "projection_dim": vision["visual_projection.weight"].shape[0],
    }
    return vision, arch


def _build_network(weights: ResolvedWeights) -> tuple[nn.Module, dict[str, int]]:
    """transformers' CLIPVisionModelWithProjection loaded strictly from an official-layout file (float32, CPU)."""
    try:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    except ImportError as err:
        raise ImportError(
            "CLIPExtractor needs Hugging Face transformers: pip install 'lightning-ganeval[clip]' or pip install"
            " transformers."
        ) from err
    path = Path(weights.path)
    vision, arch = _vision_state(_load_state(path), path)
    config = CLIPVisionConfig(**arch, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    # On the meta device the random initialisation (seconds for ViT-L) is skipped; the file supplies every
    # parameter (assign=True), and strict loading guarantees none is left uninitialised.
    with torch.device("meta"):
        net = CLIPVisionModelWithProjection(config)
    expected = net.state_dict()
    unexpected = sorted(set(vision) - set(expected))
    missing = sorted(set(expected) - set(vision))
    wrong = sorted(k for k in set(expected) & set(vision) if vision[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"weights file {path} does not hold a CLIP vision tower in the official layout: missing {missing[:3]},"
            f" unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}."
        )
    net.load_state_dict({k: v.float() for k, v in vision.items()}, strict=True, assign=True)
    for name, buffer in list(net.named_buffers()):
        if buffer.is_meta:
            if not name.endswith("position_ids"):
                raise RuntimeError(f"transformers' CLIP vision model has a buffer {name} the file does not provide.")
            owner = net.get_submodule(name.rpartition(".")[0])
            owner.register_buffer("position_ids", torch.arange(buffer.shape[-1]).expand(1, -1), persistent=False)
    return net, arch


def center_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the reference's centre square crop (``io_util._center_crop_and_resize``)."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


class CLIPExtractor(base.FeatureNetwork):
    """CLIP projected image embeddings for CMMD: uint8 images in, float32 N x 768 (ViT-L/14-336) features out.

    See the module docstring for the preprocessing and the weights. The module is always in eval mode (``train()``
    is a no-op), holds no trainable parameters, never records an autograd graph, and runs in float32 with autocast
    off and TF32 off on CUDA (unless ``allow_tf32``), whatever the surrounding Trainer does. The embeddings are
    returned as the network computes them (not normalised).

    Args:
        weights: A weights file or folder in the official layout, an already resolved
            :class:`~lightning_ganeval.weights.ResolvedWeights`, or ``None`` to find or download the official file.
        resize: One of :data:`RESIZE_MODES`: ``"pil"`` (the reference, default) or ``"bicubic"``.
        device: Where the network lives and runs; inputs on other devices are moved. ``None``: the current CUDA
            device if CUDA is available, else the CPU.
        allow_tf32: Allow TF32 matmuls on CUDA (off by default).
        progress: Show a progress bar while downloading the weights.

    Attributes:
        weights: The resolved weights file.
        resize: The resize mode.
        image_size: Input side of the network (336 for the reference weights).
        num_features: Embedding width (768 for the reference weights).
        identity: ``"clip-vit/<sha256[:16]>/<pil-bicubic336|bicubic336>"``, for cache keys and provenance.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | ResolvedWeights | None = None,
        *,
        resize: str = "pil",
        device: str | torch.device | int | None = None,
        allow_tf32: bool = False,
        progress: bool = True,
    ) -> None:
        super().__init__(allow_tf32=allow_tf32)
        base.check_choice("`resize`", resize, RESIZE_MODES)
        self.weights = base.resolve_weights_argument(
            weights, lambda path: resolve_clip_weights(path, progress=progress), name="`weights`"
        )
        self.resize = resize
        target = base.default_device(device)
        self.net, arch = _build_network(self.weights)
        self.image_size = arch["image_size"]
        self.num_features = arch["projection_dim"]
        mode = "pil-bicubic" if resize == "pil" else "bicubic"
        self.identity = f"clip-vit/{self.weights.sha256[:16]}/{mode}{self.image_size}"
        self._register_normalisation(CLIP_MEAN, CLIP_STD)
        self._place(target)

    def preprocess(self, images: Tensor) -> Tensor:
        """Centre crop, resize and normalise: the network's float32 N x 3 x S x S input on :attr:`device`.

        Args:
            images: uint8 N x 3 x H x W, any H and W (see :func:`lightning_ganeval.images.to_uint8_rgb`).
        """
        return self._bicubic_input(images, self.image_size, crop=center_crop_box)

    def forward(self, images: Tensor) -> Tensor:
        """Compute the projected image embeddings.

        Args:
            images: uint8 N x 3 x H x W, any H and W.

        Returns:
            float32 N x :attr:`num_features` embeddings on :attr:`device` (not normalised), without autograd history.
        """
        return self._embed(images, self.preprocess, lambda x: self.net(pixel_values=x).image_embeds, self.num_features)


def get_clip_extractor(
    device: str | torch.device | int | None = None,
    *,
    weights: str | os.PathLike[str] | ResolvedWeights | None = None,
    resize: str = "pil",
    progress: bool = True,
) -> CLIPExtractor:
    """A :class:`CLIPExtractor` shared per process for the same weights file, resize mode and device.

    The callbacks use it so that several metrics (or refits in one process) build the 300 M-parameter network once.
    """
    resolved = weights if isinstance(weights, ResolvedWeights) else resolve_clip_weights(weights, progress=progress)
    target = base.default_device(device)
    key = ("clip", str(target), resolved.sha256, resize)
    return base.shared_network(key, lambda: CLIPExtractor(resolved, resize=resize, device=target))
