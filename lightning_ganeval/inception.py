"""The shared FID Inception v3: one forward pass gives the pool3 features (FID) and the bias-free logits (IS).

The network is torch-fidelity's ``FeatureExtractorInceptionV3`` (the TensorFlow 2015-12-05 graph ported to
PyTorch, also used by torchmetrics), built from the same weights file, with a few changes that keep its outputs
within float32 rounding of the original (tested to 5e-4 relative; measured 4e-5 to 7e-5 with random test weights
at 8 x 8, 32 x 32 and 299 x 299, the same order as torch-fidelity's own distance to float64) but make it faster:

* each convolution and its BatchNorm are folded into one convolution with a bias (computed in float64);
* the 1x1 convolutions that read the same input inside an Inception block run as one convolution;
* activations use the channels-last memory layout (oneDNN's fast path on CPU, tensor-core layout on GPU);
* on the CPU each convolution and its ReLU are one oneDNN call (a fused post-op) on weights packed once into
  oneDNN's layout, instead of a convolution, a weight reorder and a separate ReLU pass at every call;
* the average-pooling branches pool after their 1x1 convolution (both are linear and commute), which pools 4 to
  11 times fewer channels;
* the input normalisation ``(x - 128) / 128`` is folded into the first convolution (which has no padding);
* the TensorFlow 1.x bilinear resize is computed separably (rows, then columns), which gives bit-identical values
  to torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x`` at a fraction of the cost.

On 2 loaded CPU cores these took the exact mode from 1.9-2.1x torch-fidelity's speed to 2.3-2.8x (see
``benchmarks/bench_extractor.py``); the convolutions themselves (oneDNN's brgemm kernels, float32) are now most
of the time, so more would need fewer or cheaper multiplications, i.e. another precision (``fast=True``).

The default ("exact") mode runs float32 with TF32 and autocast off, whatever the surrounding Trainer does.
``fast=True`` trades reference exactness for speed (bfloat16 on hardware with fast bfloat16, TF32 on CUDA); its
features are *not* reference-exact, so its scores must not be compared with published numbers.

``torch.compile`` is deliberately not used: on CPU it gave 1.13x over the earlier eager path after a ~60 s
compilation (inductor, freezing, bfloat16) and would recompile for every new batch size; its freezing pass emits
the same fused, packed oneDNN convolutions that this module now calls directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ganeval.feature_network import (
    FeatureNetwork,
    check_choice,
    check_images,
    default_device,
    load_tensor_file,
    resolve_weights_argument,
    shared_network,
)
from lightning_ganeval.feature_network import feature_numerics as feature_numerics  # its former home: re-exported
from lightning_ganeval.weights import InceptionWeights, resolve_weights

__all__ = [
    "RESIZE_MODES",
    "InceptionExtractor",
    "InceptionFeatures",
    "fold_conv_bn",
    "get_extractor",
    "resize_tf1",
]

RESIZE_MODES = ("tf1", "antialias")
"""``"tf1"``: TensorFlow 1.x bilinear (``align_corners=False``, no half-pixel centres, no antialias) as in the
reference FID code and torch-fidelity. ``"antialias"``: ``F.interpolate(mode="bilinear", antialias=True,
align_corners=False)``, torchmetrics' default since v1.8; scores differ from the reference when inputs are not
299 x 299."""

INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_LOGITS = 1008


@dataclass(frozen=True)
class InceptionFeatures:
    """Outputs of one :class:`InceptionExtractor` forward pass.

    Attributes:
        pool: N x 2048 float32 pool3 features (FID).
        logits: N x 1008 float32 logits without the fc bias (Inception Score, as in the reference code).
    """

    pool: Tensor
    logits: Tensor


# --------------------------------------------------------------------------------------------- resize


def _tf1_axis(in_size: int, out_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices and weights of TF1 bilinear along one axis, computed exactly as torch-fidelity does."""
    scale = in_size / out_size
    # float32 arange times a float32 scale, truncated: the same arithmetic as the reference implementation.
    grid = torch.arange(0, out_size, 1, dtype=torch.float32, device=device) * torch.tensor(
        scale, dtype=torch.float32, device=device
    )
    lo = grid.long()
    hi = (lo + 1).clamp_max(in_size - 1)
    frac = grid - lo.float()
    return lo, hi, frac


def resize_tf1(images: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """Resize float N x C x H x W images to ``size`` x ``size`` like TensorFlow 1.x ``resize_bilinear``.

    Bit-identical to ``torch_fidelity.interpolate_compat_tensorflow.interpolate_bilinear_2d_like_tensorflow1x(x,
    size=(size, size), align_corners=False)`` on CPU: the reference computes, per output pixel,
    ``top = a + (b - a) * dx``, ``bottom = c + (d - c) * dx``, ``out = top + (bottom - top) * dy``; ``top`` and
    ``bottom`` only depend on the source row and the output column, so they are computed once per source row
    (H x size values instead of size x size four times) and then gathered by row.

    The result is returned in channels-last memory layout (a plain N x C x size x size view), which is what the
    convolutions want.
    """
    _, _, h, w = images.shape
    x_lo, x_hi, dx = _tf1_axis(w, size, images.device)
    y_lo, y_hi, dy = _tf1_axis(h, size, images.device)
    # Work in N x H x W x C so that the result is channels-last without an extra copy.
    nhwc = images.permute(0, 2, 3, 1)
    left = nhwc.index_select(2, x_lo)
    rows = nhwc.index_select(2, x_hi).sub_(left).mul_(dx.view(1, 1, size, 1)).add_(left)
    top = rows.index_select(1, y_lo)
    out = rows.index_select(1, y_hi).sub_(top).mul_(dy.view(1, size, 1, 1)).add_(top)
    return out.permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------- network


def _onednn(x: Tensor) -> bool:
    """Whether ``x`` goes through oneDNN's fused convolution (CPU tensors, oneDNN present and not switched off)."""
    return x.device.type == "cpu" and torch.backends.mkldnn.enabled and torch.backends.mkldnn.is_available()


class _ConvReLU(nn.Module):
    """A convolution with bias followed by ReLU: a BasicConv2d (conv, BatchNorm, ReLU) with the BatchNorm folded.

    On CPU the ReLU runs inside oneDNN's convolution (a post-op: the output is written once, not read back and
    rewritten by a separate ReLU) on weights reordered once into oneDNN's blocked layout, instead of at every
    call. The values are those of ``relu(conv(x))``: the same kernel, the ReLU applied to its float32 result.

    Args:
        conv: The folded convolution.
        relu: ``False`` for a plain convolution (the pooling branches pool before their ReLU).
    """

    def __init__(self, conv: nn.Conv2d, relu: bool = True) -> None:
        super().__init__()
        self.conv = conv
        self.relu = relu
        # (source weight's storage, version, dtype) -> oneDNN-packed weight; rebuilt when .to() moves or casts.
        self._packed: tuple[tuple[int, int, torch.dtype], Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # An opaque oneDNN tensor neither pickles nor deep-copies; it is rebuilt on the next CPU call.
        state = self.__dict__.copy()
        state["_packed"] = None
        return state

    def _packed_weight(self, x: Tensor) -> Tensor:
        weight = self.conv.weight
        key = (weight.data_ptr(), weight._version, weight.dtype)
        if self._packed is None or self._packed[0] != key:
            # The layout is chosen for the first input's shape; other batch sizes use it as is (same values).
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                weight.detach(),
                self.conv.padding,
                self.conv.stride,
                self.conv.dilation,
                self.conv.groups,
                list(x.shape),
            )
            self._packed = (key, packed)
        return self._packed[1]

    def forward(self, x: Tensor) -> Tensor:
        if _onednn(x):
            conv = self.conv
            return torch.ops.mkldnn._convolution_pointwise(
                x,
                self._packed_weight(x),
                conv.bias,
                conv.padding,
                conv.stride,
                conv.dilation,
                conv.groups,
                "relu" if self.relu else "none",
                [],
                "",
            )
        y = self.conv(x)
        return F.relu(y, inplace=True) if self.relu else y


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a new convolution equal to ``bn(conv(x))`` in eval mode (computed in float64, stored as ``conv``'s dtype).

    Args:
        conv: Convolution (with or without bias).
        bn: BatchNorm with running statistics.

    Returns:
        A new :class:`torch.nn.Conv2d` with a bias; ``conv`` and ``bn`` are not modified.
    """
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    folded = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        folded.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
        folded.bias.copy_((bias - bn.running_mean.double()) * scale + bn.bias.double())
    return folded.requires_grad_(False)


def _fold(basic: nn.Module, relu: bool = True) -> _ConvReLU:
    return _ConvReLU(fold_conv_bn(basic.conv, basic.bn), relu=relu)


def _fold_input_normalisation(conv: nn.Conv2d) -> nn.Conv2d:
    """Fold the TF graph's input normalisation ``(x - 128) / 128`` into the first convolution, in place.

    ``conv((x - 128) / 128) = (w / 128) * x + (b - sum(w))``: an identity because this convolution has no padding
    (every output reads real pixels only). Dividing by a power of two is exact and the bias is computed in float64
    from the stored weights, so the only change is float32 rounding; it saves two passes over the resized input.
    """
    if conv.padding not in ((0, 0), 0, "valid"):
        raise ValueError("the input normalisation can only be folded into a convolution without padding")
    with torch.no_grad():
        shift = conv.weight.double().sum(dim=(1, 2, 3))
        conv.bias.copy_(conv.bias.double() - shift)
        conv.weight.div_(128)
    return conv


def _pool_branch(conv: _ConvReLU, x: Tensor) -> Tensor:
    """``relu(conv(avg_pool(x)))`` computed as ``relu(avg_pool(conv(x)))``.

    A 1x1 convolution commutes with the 3x3 average (both are linear, and the average's weights sum to one even
    where TF excludes the zero padding, so the bias passes through): pooling the convolution's output pools 4 to
    11 times fewer channels. Equal up to float32 rounding.
    """
    pooled = F.avg_pool2d(conv(x), kernel_size=3, stride=1, padding=1, count_include_pad=False)
    return F.relu(pooled, inplace=True)


def _concat_convs(convs: list[_ConvReLU]) -> tuple[_ConvReLU, list[int]]:
    """One 1x1 convolution computing the outputs of several 1x1 convolutions of the same input, concatenated."""
    first = convs[0].conv
    merged = nn.Conv2d(first.in_channels, sum(c.conv.out_channels for c in convs), 1, bias=True)
    with torch.no_grad():
        merged.weight.copy_(torch.cat([c.conv.weight for c in convs]))
        merged.bias.copy_(torch.cat([c.conv.bias for c in convs]))
    return _ConvReLU(merged.requires_grad_(False)), [c.conv.out_channels for c in convs]


class _BlockA(nn.Module):
    """InceptionA (Mixed_5b-d) with the three 1x1 convolutions on the block input merged."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.stem, self.splits = _concat_convs(
            [_fold(block.branch1x1), _fold(block.branch5x5_1), _fold(block.branch3x3dbl_1)]
        )
        self.branch5x5_2 = _fold(block.branch5x5_2)
        self.branch3x3dbl_2 = _fold(block.branch3x3dbl_2)
        self.branch3x3dbl_3 = _fold(block.branch3x3dbl_3)
        self.branch_pool = _fold(block.branch_pool, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        b1, b5, b3 = self.stem(x).split(self.splits, dim=1)
        b5 = self.branch5x5_2(b5)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(b3))
        return torch.cat([b1, b5, b3, _pool_branch(self.branch_pool, x)], 1)


class _BlockB(nn.Module):
    """InceptionB (Mixed_6a), unchanged apart from the folding."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.branch3x3 = _fold(block.branch3x3)
        self.branch3x3dbl_1 = _fold(block.branch3x3dbl_1)
        self.branch3x3dbl_2 = _fold(block.branch3x3dbl_2)
        self.branch3x3dbl_3 = _fold(block.branch3x3dbl_3)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class _BlockC(nn.Module):
    """InceptionC (Mixed_6b-e) with the three 1x1 convolutions on the block input merged."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.stem, self.splits = _concat_convs(
            [_fold(block.branch1x1), _fold(block.branch7x7_1), _fold(block.branch7x7dbl_1)]
        )
        self.branch7x7_2 = _fold(block.branch7x7_2)
        self.branch7x7_3 = _fold(block.branch7x7_3)
        self.branch7x7dbl_2 = _fold(block.branch7x7dbl_2)
        self.branch7x7dbl_3 = _fold(block.branch7x7dbl_3)
        self.branch7x7dbl_4 = _fold(block.branch7x7dbl_4)
        self.branch7x7dbl_5 = _fold(block.branch7x7dbl_5)
        self.branch_pool = _fold(block.branch_pool, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        b1, b7, bd = self.stem(x).split(self.splits, dim=1)
        b7 = self.branch7x7_3(self.branch7x7_2(b7))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(bd))))
        return torch.cat([b1, b7, bd, _pool_branch(self.branch_pool, x)], 1)


class _BlockD(nn.Module):
    """InceptionD (Mixed_7a) with the two 1x1 convolutions on the block input merged."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.stem, self.splits = _concat_convs([_fold(block.branch3x3_1), _fold(block.branch7x7x3_1)])
        self.branch3x3_2 = _fold(block.branch3x3_2)
        self.branch7x7x3_2 = _fold(block.branch7x7x3_2)
        self.branch7x7x3_3 = _fold(block.branch7x7x3_3)
        self.branch7x7x3_4 = _fold(block.branch7x7x3_4)

    def forward(self, x: Tensor) -> Tensor:
        b3, b7 = self.stem(x).split(self.splits, dim=1)
        b3 = self.branch3x3_2(b3)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class _BlockE(nn.Module):
    """InceptionE (Mixed_7b average pool, Mixed_7c max pool) with the three 1x1 convolutions merged."""

    def __init__(self, block: nn.Module, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.stem, self.splits = _concat_convs(
            [_fold(block.branch1x1), _fold(block.branch3x3_1), _fold(block.branch3x3dbl_1)]
        )
        self.branch3x3_2a = _fold(block.branch3x3_2a)
        self.branch3x3_2b = _fold(block.branch3x3_2b)
        self.branch3x3dbl_2 = _fold(block.branch3x3dbl_2)
        self.branch3x3dbl_3a = _fold(block.branch3x3dbl_3a)
        self.branch3x3dbl_3b = _fold(block.branch3x3dbl_3b)
        # The average-pooling branch pools after its convolution (see _pool_branch); max does not commute.
        self.branch_pool = _fold(block.branch_pool, relu=max_pool)

    def forward(self, x: Tensor) -> Tensor:
        b1, b3, bd = self.stem(x).split(self.splits, dim=1)
        # Two convolutions read this channel slice: make it contiguous once rather than once in each.
        b3 = b3.contiguous(memory_format=torch.channels_last)
        bd = self.branch3x3dbl_2(bd)
        if self.max_pool:
            # The TF graph's last block max-pools here (pytorch-fid's FIDInceptionE_2).
            bp = self.branch_pool(F.max_pool2d(x, kernel_size=3, stride=1, padding=1))
        else:
            bp = _pool_branch(self.branch_pool, x)
        # One concatenation in the original channel order (b1, [3x3_2a, 3x3_2b], [dbl_3a, dbl_3b], pool).
        return torch.cat(
            [
                b1,
                self.branch3x3_2a(b3),
                self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(bd),
                self.branch3x3dbl_3b(bd),
                bp,
            ],
            1,
        )


class _FoldedInception(nn.Module):
    """The layers of torch-fidelity's FeatureExtractorInceptionV3 with BatchNorm folded and 1x1 convolutions merged.

    Takes the 299 x 299 input in [0, 255] (float, not normalised: the TF graph's ``(x - 128) / 128`` is folded
    into the first convolution) and returns the 2048-d pool3 features.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _ConvReLU(_fold_input_normalisation(fold_conv_bn(net.Conv2d_1a_3x3.conv, net.Conv2d_1a_3x3.bn))),
            _fold(net.Conv2d_2a_3x3),
            _fold(net.Conv2d_2b_3x3),
            nn.MaxPool2d(kernel_size=3, stride=2),
            _fold(net.Conv2d_3b_1x1),
            _fold(net.Conv2d_4a_3x3),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.blocks = nn.Sequential(
            _BlockA(net.Mixed_5b),
            _BlockA(net.Mixed_5c),
            _BlockA(net.Mixed_5d),
            _BlockB(net.Mixed_6a),
            _BlockC(net.Mixed_6b),
            _BlockC(net.Mixed_6c),
            _BlockC(net.Mixed_6d),
            _BlockC(net.Mixed_6e),
            _BlockD(net.Mixed_7a),
            _BlockE(net.Mixed_7b, max_pool=False),
            _BlockE(net.Mixed_7c, max_pool=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        # Average in float32 even in bfloat16 mode: rounding the features themselves to bf16 would cost 3 digits.
        return F.adaptive_avg_pool2d(x.float(), 1).flatten(1)


# --------------------------------------------------------------------------------------------- extractor


def _cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _resolve(weights: str | os.PathLike[str] | InceptionWeights | None) -> InceptionWeights:
    return resolve_weights_argument(weights, resolve_weights, kind="an InceptionWeights", what="the reference file")


def _load_backbone(weights: InceptionWeights) -> nn.Module:
    """Build torch-fidelity's FeatureExtractorInceptionV3 from ``weights`` (float32, eval, on CPU)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = Path(weights.path)
    # torch-fidelity loads with weights_only=False (arbitrary pickle); refuse anything but tensors first.
    state = load_tensor_file(path)
    # NaN weights make every feature NaN, which would later be reported as a problem of the images.
    nonfinite = [
        key
        for key, value in (state.items() if isinstance(state, dict) else ())
        # The sum is a fast first look (a tenth of isfinite's time); only a non-finite sum is checked element-wise.
        if isinstance(value, Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value.sum()))
        and not bool(torch.isfinite(value).all())
    ]
    if nonfinite:
        shown = ", ".join(nonfinite[:3]) + (", ..." if len(nonfinite) > 3 else "")
        raise ValueError(
            f"weights file {path} holds NaN or Inf in {len(nonfinite)} tensor(s) ({shown}): the file is damaged or"
            " was saved from a diverged network, and every Inception feature would be NaN whatever the images."
            " Replace the file (the cached reference file: delete it and it is downloaded again)."
        )
    try:
        return FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path)
        )
    except RuntimeError as err:
        raise ValueError(
            f"weights file {path} does not hold the FID Inception v3 (pt_inception-2015-12-05 layout): {err}"
        ) from err


class InceptionExtractor(FeatureNetwork):
    """The FID Inception v3 (TensorFlow 2015-12-05 weights): uint8 images in, pool3 features and logits out.

    One forward pass returns both outputs, so FID and IS share it. The module is always in eval mode
    (``train()`` is a no-op), holds no trainable parameters, and never records an autograd graph.

    Args:
        weights: A weights file path, an already resolved :class:`~lightning_ganeval.weights.InceptionWeights`,
            or ``None`` to find or download the reference file (see :func:`~lightning_ganeval.weights.resolve_weights`).
        resize: How inputs that are not 299 x 299 are resized, one of :data:`RESIZE_MODES`. ``"tf1"`` (default)
            is the reference protocol; ``"antialias"`` is torchmetrics' default since v1.8.
        fast: Opt-in speed mode, **not reference-exact**: bfloat16 compute on hardware with fast bfloat16 (CUDA
            with bf16 support, CPUs with AVX512-BF16 or AMX) and TF32 on CUDA; about 2x the exact mode's speed on
            such a CPU. Each block stays within a few bf16 roundings (< 1e-2 relative) of float32; through the
            whole network the error compounds by how much the weights amplify it (0.1 relative on the random test
            weights, whose blocks amplify more than trained ones; the real weights could not be measured
            here). Use it to follow a training run, never to
            compare with published numbers; the ``identity`` ends in ``/fast`` so that caches and statistics files
            never mix the modes. Without fast bfloat16 hardware this runs the exact float32 path.
        device: Where the network lives and runs; inputs on other devices are moved. ``None``: the current CUDA
            device if CUDA is available, else the CPU.
        allow_tf32: Allow TF32 matmuls and convolutions on CUDA in exact mode (off by default: TF32 changes the
            features by ~1e-3 relative). Ignored on CPU; implied by ``fast``.

    Attributes:
        weights: The resolved weights file.
        resize: The resize mode.
        fast: Whether fast mode is on.
        device: The device of the network.
        identity: ``"inception-2015-12-05/<sha256[:16]>/<resize>[/fast]"``, for cache keys and provenance.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | InceptionWeights | None = None,
        *,
        resize: str = "tf1",
        fast: bool = False,
        device: str | torch.device | int | None = None,
        allow_tf32: bool = False,
    ) -> None:
        super().__init__(allow_tf32=allow_tf32)
        check_choice("resize", resize, RESIZE_MODES)
        self.weights = _resolve(weights)
        self.resize = resize
        self.fast = bool(fast)
        target = default_device(device)
        self.identity = f"inception-2015-12-05/{self.weights.sha256[:16]}/{resize}" + ("/fast" if self.fast else "")

        backbone = _load_backbone(self.weights)
        self.net = _FoldedInception(backbone)
        # A buffer, not a parameter: nothing here is trainable, and optimizers must never see it.
        self.register_buffer("fc_weight", backbone.fc.weight.detach().clone(), persistent=False)
        del backbone

        if target.type == "cuda":
            bf16 = self.fast and torch.cuda.is_bf16_supported()
        else:
            bf16 = self.fast and target.type == "cpu" and _cpu_has_fast_bf16()
        # Fast mode stores the convolutions in bfloat16 (no per-call weight casts as with autocast) and runs the
        # activations in bfloat16 too, which also halves the memory traffic of pooling and concatenation.
        self.compute_dtype = torch.bfloat16 if bf16 else torch.float32
        self._place(target, memory_format=torch.channels_last)
        self.net.to(dtype=self.compute_dtype)

    def _tf32(self) -> bool:
        return self.allow_tf32 or self.fast

    def _layer_name(self, layer: str | None) -> str:
        # "pool3" makes load_stats also check d = 2048 (the callbacks call the pool layer "pool").
        return "pool3" if layer in (None, "pool") else layer

    def forward(self, images: Tensor) -> InceptionFeatures:
        """Compute pool3 features and bias-free logits.

        Args:
            images: uint8 N x 3 x H x W, any H and W (see :func:`lightning_ganeval.images.to_uint8_rgb`).

        Returns:
            :class:`InceptionFeatures` with float32 ``pool`` (N x 2048) and ``logits`` (N x 1008) on
            :attr:`device`, without autograd history.
        """
        check_images(images)
        if images.shape[0] == 0:
            empty = torch.empty(0, device=self.device)
            return InceptionFeatures(pool=empty.view(0, NUM_FEATURES), logits=empty.view(0, NUM_LOGITS))
        with self._numerics():
            x = images.to(self.device, non_blocking=True)
            if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
                if self.resize == "tf1":
                    x = resize_tf1(x.float(), INPUT_SIZE)
                else:
                    x = F.interpolate(
                        x.float(), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
                    )
            # Values stay in [0, 255]: the TF graph's (x - 128) / 128 is folded into the first convolution. One
            # copy at most (uint8 to float, layout, bf16), none after the tf1 resize in exact mode.
            x = x.to(dtype=self.compute_dtype, memory_format=torch.channels_last)
            pool = self.net(x).float()
            logits = pool @ self.fc_weight.T
        return InceptionFeatures(pool=pool, logits=logits)


# --------------------------------------------------------------------------------------------- sharing


def get_extractor(
    device: str | torch.device | int | None = None,
    weights: str | os.PathLike[str] | InceptionWeights | None = None,
    *,
    resize: str = "tf1",
    fast: bool = False,
) -> InceptionExtractor:
    """Return this process's shared :class:`InceptionExtractor` for these arguments, building it on first use.

    One instance exists per (device, weights SHA-256, resize, fast): the weights are resolved first, so different
    paths to the same file share an instance, and FID and IS callbacks on one Trainer share one network.

    Args:
        device: See :class:`InceptionExtractor`.
        weights: See :class:`InceptionExtractor`.
        resize: See :class:`InceptionExtractor`.
        fast: See :class:`InceptionExtractor`.

    Returns:
        The shared extractor.
    """
    check_choice("resize", resize, RESIZE_MODES)
    resolved = _resolve(weights)
    dev = default_device(device)
    key = ("inception", str(dev), resolved.sha256, resize, bool(fast))
    return shared_network(key, lambda: InceptionExtractor(resolved, resize=resize, fast=fast, device=dev))
