"""Random Inception and DINOv2 weights for tests and smoke runs.

The real TensorFlow 2015-12-05 weights cannot be fetched everywhere (CI machines, air-gapped clusters). This
module writes a file with the same keys and shapes as ``pt_inception-2015-12-05-6726825d.pth`` but seeded random
values. BatchNorm running statistics are recalibrated on random noise images of many scales so that, in eval mode,
the features vary with the input instead of collapsing or blowing up, and the final layer is projected and scaled
so that the logits have a spread of a few units (:data:`LOGIT_STD`) on such images: the softmax is peaked but
never underflows, so the Inception Score of torch-fidelity and torchmetrics stays finite.

:func:`write_random_dinov2_weights` does the same for the official DINOv2 backbone checkpoints
(``dinov2_vitl14_pretrain.pth`` and its smaller siblings), and :func:`write_random_clip_weights` for the CMMD
CLIP ViT-L/14-336 (``pytorch_model.bin`` of ``openai/clip-vit-large-patch14-336``), also in a tiny configuration.

Scores computed with such a file are **not** comparable with published numbers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from unittest import mock

import torch
from torch import nn

__all__ = [
    "LOGIT_STD",
    "build_random_clip_state_dict",
    "build_random_dinov2_state_dict",
    "build_random_inception_state_dict",
    "build_random_lpips_state_dict",
    "cached_random_inception_weights",
    "write_random_clip_weights",
    "write_random_dinov2_weights",
    "write_random_inception_weights",
    "write_random_lpips_weights",
]


_INPUT_SIZE = 299
_NOISE_GRIDS = (1, 4, 8, 16, 32, 64, 128, 299)
"""Side lengths of the uniform noise that calibration images are made of: 1 is a flat colour, 299 is noise at
every input pixel. Tests and smoke runs feed noise images of all these scales, which the network resizes to 299."""

LOGIT_STD = 3.0
"""Target standard deviation of the random weights' logits on the calibration images."""


def _save(state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """``torch.save`` through a temporary file in the same folder, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def _random_images(generator: torch.Generator, n: int) -> torch.Tensor:
    """299 x 299 uint8 images of uniform noise on grids from 1 x 1 to 299 x 299, bilinearly upsampled.

    Consecutive images cycle through the grid sizes, so that every batch mixes smooth and rough inputs and the
    BatchNorm statistics (the mean of per-batch statistics) cover all of them.
    """
    images = []
    for i in range(n):
        grid = _NOISE_GRIDS[i % len(_NOISE_GRIDS)]
        low = torch.rand(1, 3, grid, grid, generator=generator)
        images.append(nn.functional.interpolate(low, size=(_INPUT_SIZE, _INPUT_SIZE), mode="bilinear"))
    return (torch.cat(images).clamp(0, 1) * 255).round().to(torch.uint8)


def build_random_inception_state_dict(seed: int = 0, calibration_images: int = 24) -> dict[str, torch.Tensor]:
    """Build a seeded random state dict in the FID Inception v3 key layout.

    Args:
        seed: Seed for the weights and the calibration images.
        calibration_images: Number of random images used to set the BatchNorm running statistics; 16 more set
            the final layer.

    Returns:
        A state dict that ``torch_fidelity``'s ``FeatureExtractorInceptionV3`` and ``pytorch_fid``'s
        ``FIDInceptionV3`` load with ``strict=True``.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    generator = torch.Generator().manual_seed(seed)
    # The torch-fidelity constructor insists on loading weights; build the bare architecture instead.
    with (
        mock.patch.object(tfi, "load_state_dict_from_url", return_value={}),
        mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", return_value=None),
        torch.random.fork_rng(devices=[]),
    ):
        torch.manual_seed(seed)
        model = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                nn.init.uniform_(module.weight, 0.8, 1.2)
                nn.init.normal_(module.bias, 0.0, 0.1)
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the calibration batches

    # Train mode makes every BatchNorm normalise with batch statistics and record them; a single pass thus
    # calibrates layer after layer on activations that are already normalised upstream.
    model.train()
    with torch.no_grad():
        batch = len(_NOISE_GRIDS)
        for start in range(0, calibration_images, batch):
            model(_random_images(generator, min(batch, calibration_images - start)))
        model.eval()
        pool = torch.cat([model(_random_images(generator, batch))[0].double() for _ in range(2)])
        # pool3 features are non-negative averages with a large common part; a random classifier would turn
        # it into the same large logit offsets for every image (std in the hundreds: softmax underflows to
        # exact zeros and the reference IS code returns NaN). Rows orthogonal to the mean feature vector keep
        # only the part that varies with the input; the scale then sets the logits' spread.
        fc_weight = torch.randn(1008, 2048, generator=generator, dtype=torch.float64)
        mean_pool = pool.mean(dim=0)
        fc_weight -= torch.outer(fc_weight @ mean_pool, mean_pool) / mean_pool.dot(mean_pool).clamp_min(1e-300)
        logits = pool @ fc_weight.T
        fc_weight *= LOGIT_STD / logits.std().clamp_min(1e-12)
        model.fc.weight.copy_(fc_weight.float())
        model.fc.bias.copy_(0.1 * torch.randn(1008, generator=generator))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    state = model.state_dict()
    # The published file predates BatchNorm's counter; keep the same key set.
    return {k: v.clone() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def write_random_inception_weights(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a seeded random-weight file in the FID Inception layout and return its path.

    The file is written to a temporary name and renamed, so a reader never sees half a file.

    Args:
        path: Destination file.
        seed: Seed for the weights.

    Returns:
        The destination as a :class:`~pathlib.Path`.
    """
    return _save(build_random_inception_state_dict(seed=seed), path)


def cached_random_inception_weights(seed: int = 0, directory: str | os.PathLike[str] | None = None) -> Path:
    """The random-weight file for ``seed``, written once into ``directory`` and reused afterwards.

    Args:
        seed: Seed for the weights.
        directory: Where the file lives; default ``<tempdir>/lightning-ganeval-random`` (a name that cannot
            shadow the package when a script runs from the temporary directory).

    Returns:
        Path of ``random-inception-seed<seed>.pth`` in ``directory``.
    """
    root = Path(directory) if directory is not None else Path(tempfile.gettempdir()) / "lightning-ganeval-random"
    path = root / f"random-inception-seed{seed}.pth"
    if not path.is_file():
        write_random_inception_weights(path, seed=seed)
    return path


# embed dim, depth of the official DINOv2 backbones (facebookresearch/dinov2 hub models, no registers). Kept here
# rather than imported from lightning_ganeval.dinov2 so that the layout is written from a second description, which
# the tests compare with the extractor's.
_DINOV2_SIZES = {"vits14": (384, 12), "vitb14": (768, 12), "vitl14": (1024, 24)}
_DINOV2_GRID = 37  # 518 / 14: the published checkpoints' position-embedding grid
_DINOV2_PATCH = 14


def build_random_dinov2_state_dict(seed: int = 0, *, size: str = "vitl14") -> dict[str, torch.Tensor]:
    """Build a seeded random state dict in the official DINOv2 checkpoint layout (``dinov2_<size>_pretrain.pth``).

    The values are chosen so that the features vary with the input (two smooth random images give feature vectors
    about as far apart as they are long) while float32 stays within ~1e-5 of float64: query/key weights with
    attention logits of a few units whatever the width, LayerScale factors around 0.5, other
    linear weights with timm's initial scale, and smooth position embeddings (a random 8 x 8 field upsampled to
    37 x 37, as learned embeddings are smooth) comparable in size to the patch embeddings, so that their resampling
    matters.

    Args:
        seed: Seed for the values.
        size: ``"vitl14"`` (the FD_DINOv2 network, 304 M parameters, a 1.2 GB file), ``"vitb14"`` or ``"vits14"``
            (22 M parameters, for fast tests).

    Returns:
        A float32 state dict that the torch hub ``dinov2_<size>`` model loads with ``strict=True``.
    """
    if size not in _DINOV2_SIZES:
        raise ValueError(f"size must be one of {', '.join(map(repr, _DINOV2_SIZES))}, got {size!r}.")
    dim, depth = _DINOV2_SIZES[size]
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std + mean

    field = nn.functional.interpolate(
        normal(1, dim, 8, 8, std=0.5), size=(_DINOV2_GRID, _DINOV2_GRID), mode="bicubic", align_corners=False
    )
    grid = field.permute(0, 2, 3, 1).reshape(1, _DINOV2_GRID**2, dim) + normal(1, _DINOV2_GRID**2, dim, std=0.02)
    patch_fan_in = 3 * _DINOV2_PATCH * _DINOV2_PATCH
    state = {
        "cls_token": normal(1, 1, dim, std=0.02),
        "pos_embed": torch.cat([normal(1, 1, dim, std=0.5), grid], dim=1),
        "mask_token": torch.zeros(1, dim),
        "patch_embed.proj.weight": normal(dim, 3, _DINOV2_PATCH, _DINOV2_PATCH, std=patch_fan_in**-0.5),
        "patch_embed.proj.bias": normal(dim, std=0.02),
    }
    for i in range(depth):
        prefix = f"blocks.{i}."
        state.update({
            prefix + "norm1.weight": normal(dim, std=0.1, mean=1.0),
            prefix + "norm1.bias": normal(dim, std=0.02),
            prefix + "attn.qkv.weight": normal(3 * dim, dim, std=2 * dim**-0.5),
            prefix + "attn.qkv.bias": normal(3 * dim, std=0.02),
            prefix + "attn.proj.weight": normal(dim, dim, std=0.02),
            prefix + "attn.proj.bias": normal(dim, std=0.02),
            prefix + "ls1.gamma": normal(dim, std=0.05, mean=0.5),
            prefix + "norm2.weight": normal(dim, std=0.1, mean=1.0),
            prefix + "norm2.bias": normal(dim, std=0.02),
            prefix + "mlp.fc1.weight": normal(4 * dim, dim, std=0.02),
            prefix + "mlp.fc1.bias": normal(4 * dim, std=0.02),
            prefix + "mlp.fc2.weight": normal(dim, 4 * dim, std=0.02),
            prefix + "mlp.fc2.bias": normal(dim, std=0.02),
            prefix + "ls2.gamma": normal(dim, std=0.05, mean=0.5),
        })  # fmt: skip
    state["norm.weight"] = normal(dim, std=0.1, mean=1.0)
    state["norm.bias"] = normal(dim, std=0.02)
    return state


def write_random_dinov2_weights(path: str | os.PathLike[str], seed: int = 0, *, size: str = "vitl14") -> Path:
    """Write a seeded random-weight file in the official DINOv2 checkpoint layout and return its path.

    The file is written to a temporary name and renamed, so a reader never sees half a file.

    Args:
        path: Destination file.
        seed: Seed for the values.
        size: See :func:`build_random_dinov2_state_dict`; ``"vits14"`` for fast tests.

    Returns:
        The destination as a :class:`~pathlib.Path`.
    """
    return _save(build_random_dinov2_state_dict(seed, size=size), path)


# Vision (width, depth, MLP width, projection), text (width, depth) of the CLIP checkpoints written below; written
# out here rather than read from transformers, so that the layout comes from a second description. 64 channels per
# head, patch 14, 336 x 336 input (577 positions) in both, so that the tiny one exercises the reference resize.
_CLIP_SIZES = {"large": (1024, 24, 4096, 768, 768, 12), "tiny": (64, 2, 128, 32, 32, 1)}
_CLIP_PATCH = 14
_CLIP_POSITIONS = (336 // 14) ** 2 + 1
_CLIP_VOCAB = 49408
_CLIP_CONTEXT = 77


def build_random_clip_state_dict(seed: int = 0, *, size: str = "tiny") -> dict[str, torch.Tensor]:
    """Build a seeded random state dict in the layout of ``openai/clip-vit-large-patch14-336``'s ``pytorch_model.bin``.

    The full ``CLIPModel`` layout as the hub file has it: vision tower, visual projection, text tower, text
    projection, ``logit_scale`` and the ``position_ids`` buffers that transformers < 4.31 saved. Linear weights
    have CLIP's initial scale (std 0.02, attention projections ``width**-0.5``), LayerNorm gains around 1, so that
    the embeddings vary with the input.

    Args:
        seed: Seed for the values.
        size: ``"large"`` (the CMMD network's shapes: ViT-L/14 at 336 px, 768-d projection; a 1.7 GB file) or
            ``"tiny"`` (width 64, 2 layers, 32-d projection, same 336 px input and patch 14; for fast tests).

    Returns:
        A float32 state dict (int64 position ids).
    """
    if size not in _CLIP_SIZES:
        raise ValueError(f"size must be one of {', '.join(map(repr, _CLIP_SIZES))}, got {size!r}.")
    width, depth, mlp, projection, text_width, text_depth = _CLIP_SIZES[size]
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std + mean

    def layers(prefix: str, dim: int, hidden: int, count: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for i in range(count):
            p = f"{prefix}.encoder.layers.{i}."
            for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
                out[p + f"self_attn.{name}.weight"] = normal(dim, dim, std=dim**-0.5)
                out[p + f"self_attn.{name}.bias"] = normal(dim, std=0.02)
            out[p + "layer_norm1.weight"] = normal(dim, std=0.1, mean=1.0)
            out[p + "layer_norm1.bias"] = normal(dim, std=0.02)
            out[p + "mlp.fc1.weight"] = normal(hidden, dim, std=dim**-0.5)
            out[p + "mlp.fc1.bias"] = normal(hidden, std=0.02)
            out[p + "mlp.fc2.weight"] = normal(dim, hidden, std=hidden**-0.5)
            out[p + "mlp.fc2.bias"] = normal(dim, std=0.02)
            out[p + "layer_norm2.weight"] = normal(dim, std=0.1, mean=1.0)
            out[p + "layer_norm2.bias"] = normal(dim, std=0.02)
        return out

    state: dict[str, torch.Tensor] = {
        "logit_scale": torch.tensor(4.6052),
        "text_model.embeddings.position_ids": torch.arange(_CLIP_CONTEXT).unsqueeze(0),
        "text_model.embeddings.token_embedding.weight": normal(_CLIP_VOCAB, text_width, std=0.02),
        "text_model.embeddings.position_embedding.weight": normal(_CLIP_CONTEXT, text_width, std=0.01),
        **layers("text_model", text_width, 4 * text_width, text_depth),
        "text_model.final_layer_norm.weight": normal(text_width, std=0.1, mean=1.0),
        "text_model.final_layer_norm.bias": normal(text_width, std=0.02),
        "vision_model.embeddings.class_embedding": normal(width, std=width**-0.5),
        "vision_model.embeddings.position_ids": torch.arange(_CLIP_POSITIONS).unsqueeze(0),
        "vision_model.embeddings.patch_embedding.weight": normal(
            width, 3, _CLIP_PATCH, _CLIP_PATCH, std=(3 * _CLIP_PATCH * _CLIP_PATCH) ** -0.5
        ),
        "vision_model.embeddings.position_embedding.weight": normal(_CLIP_POSITIONS, width, std=0.02),
        "vision_model.pre_layrnorm.weight": normal(width, std=0.1, mean=1.0),
        "vision_model.pre_layrnorm.bias": normal(width, std=0.02),
        **layers("vision_model", width, mlp, depth),
        "vision_model.post_layernorm.weight": normal(width, std=0.1, mean=1.0),
        "vision_model.post_layernorm.bias": normal(width, std=0.02),
        "visual_projection.weight": normal(projection, width, std=width**-0.5),
        "text_projection.weight": normal(projection, text_width, std=text_width**-0.5),
    }
    return state


def write_random_clip_weights(path: str | os.PathLike[str], seed: int = 0, *, size: str = "tiny") -> Path:
    """Write a seeded random-weight file in the layout of the CMMD CLIP ``pytorch_model.bin`` and return its path.

    :class:`~lightning_ganeval.clip.CLIPExtractor` reads the architecture from the shapes, so the ``"tiny"`` file
    loads as a small CLIP with the reference's 336 px input and preprocessing. Written to a temporary name and
    renamed, so a reader never sees half a file.

    Args:
        path: Destination file.
        seed: Seed for the values.
        size: ``"tiny"`` (default, fast) or ``"large"``; see :func:`build_random_clip_state_dict`.

    Returns:
        The destination as a :class:`~pathlib.Path`.
    """
    return _save(build_random_clip_state_dict(seed, size=size), path)


# torchvision VGG16 `features` index -> (in, out) channels of its 3 x 3 convolutions up to relu5_3, and the widths of
# the LPIPS linear heads. Written here from torchvision's table rather than imported from lightning_ganeval.lpips, so
# that the tests compare two descriptions of the layout.
_VGG16_CONVS = {
    0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256), 14: (256, 256),
    17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512),
}  # fmt: skip
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def build_random_lpips_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Build a seeded random state dict for :class:`~lightning_ganeval.lpips.LPIPSVGG16`.

    The keys are those of the two published files together: ``features.<i>.weight`` / ``.bias`` of torchvision's
    ``vgg16-397923af.pth`` (the convolutions LPIPS reads, indices 0 to 28) and ``lin<k>.model.1.weight`` of
    ``weights-vgg16-lpips.pth``. Convolutions get He-normal weights (activations keep their scale through the 13
    layers, so no ReLU layer goes dead) and small biases; the linear heads get non-negative weights, as the
    published heads (LPIPS clamps them at zero while training them).

    Args:
        seed: Seed for the values.

    Returns:
        A float32 state dict; split it with :func:`write_random_lpips_weights`.
    """
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for index, (c_in, c_out) in _VGG16_CONVS.items():
        fan_in = c_in * 9
        state[f"features.{index}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=generator) * (2.0 / fan_in) ** 0.5
        state[f"features.{index}.bias"] = torch.randn(c_out, generator=generator) * 0.01
    for k, channels in enumerate(_LPIPS_CHANNELS):
        state[f"lin{k}.model.1.weight"] = torch.rand(1, channels, 1, 1, generator=generator) * 0.5
    return state


def write_random_lpips_weights(directory: str | os.PathLike[str], seed: int = 0) -> tuple[Path, Path]:
    """Write seeded random LPIPS-VGG16 weights as the two published files and return ``(lpips, vgg16)`` paths.

    ``weights-vgg16-lpips.pth`` holds the five linear heads as torch-fidelity publishes them; ``vgg16-397923af.pth``
    holds the ``features.*`` tensors of torchvision's VGG16 (the real file also holds the 470 MB classifier, which
    LPIPS never reads and which is left out here). Both are written to temporary names and renamed.

    Args:
        directory: Where to write the two files.
        seed: Seed for the values.
    """
    state = build_random_lpips_state_dict(seed)
    lin, vgg = (
        _save({k: v for k, v in state.items() if k.startswith(prefix)}, Path(directory) / name)
        for name, prefix in (("weights-vgg16-lpips.pth", "lin"), ("vgg16-397923af.pth", "features."))
    )
    return lin, vgg
