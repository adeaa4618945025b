"""Tests for lightning_ganeval.inception against torch-fidelity, torchmetrics and pytorch-fid on the same weights.

Tolerances: features are compared as max|ours - ref| / max|ref| ("relative" below). The bound for the exact mode is
5e-4; measured values are ~1e-6 at 299 x 299 and up to ~6e-5 on tiny upsampled inputs, where the random test weights
give small, cancellation-prone features (torch-fidelity's own float32 result is ~1e-4 away from float64 there).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_ganeval.inception import (
    RESIZE_MODES,
    InceptionExtractor,
    InceptionFeatures,
    fold_conv_bn,
    get_extractor,
    resize_tf1,
)
from lightning_ganeval.weights import file_sha256, resolve_weights

EXACT = 5e-4  # relative bound of the exact mode against the reference implementations
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="Requires: CUDA")


def relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.detach().double().cpu(), ref.detach().double().cpu()
    return float((ours - ref).abs().max() / ref.abs().max())


def uint8_images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


@pytest.fixture(scope="module")
def fidelity(inception_weights_path: Path) -> nn.Module:
    """torch-fidelity's extractor (the reference implementation) on the same weights file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(inception_weights_path)
    )


# --------------------------------------------------------------------------------------------- resize


@pytest.mark.parametrize(
    "size", [(1, 1), (8, 8), (7, 300), (32, 32), (40, 64), (299, 299), (300, 7), (512, 512), (1000, 20)]
)
def test_resize_tf1_is_bit_identical_to_torch_fidelity(size: tuple[int, int]) -> None:
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = uint8_images(2, *size).float()
    expected = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    out = resize_tf1(x, 299)
    assert out.shape == (2, 3, 299, 299)
    assert torch.equal(out, expected)  # bit-exact on CPU


# --------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("size", [(8, 8), (28, 28), (32, 32), (64, 64), (128, 128), (512, 512), (40, 64), (64, 40)])
def test_matches_torch_fidelity(extractor: InceptionExtractor, fidelity: nn.Module, size: tuple[int, int]) -> None:
    x = uint8_images(2, *size, seed=sum(size))
    ours = extractor(x)
    with torch.no_grad():
        pool, logits = fidelity(x)
    assert ours.pool.shape == (2, 2048)
    assert ours.logits.shape == (2, 1008)
    assert ours.pool.dtype == ours.logits.dtype == torch.float32
    assert relative(ours.pool, pool) <= EXACT
    assert relative(ours.logits, logits) <= EXACT


def test_matches_pytorch_fid_at_299(
    extractor: InceptionExtractor, inception_weights_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytorch_fid.inception as pfi

    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *args, **kwargs: torch.load(inception_weights_path))
    model = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
    x = uint8_images(2, 299, 299, seed=1)
    # At 299 x 299 pytorch-fid's resize is the identity. Its normalisation is 2 * y - 1 on [0, 1] input, the TF
    # graph's is (x - 128) / 128 on uint8: y = x / 256 makes both exactly equal (x / 255 would scale by 256/255).
    with torch.no_grad():
        pool = model(x.float() / 256)[0].flatten(1)
    assert relative(extractor(x).pool, pool) <= EXACT


@pytest.fixture(scope="module")
def torchmetrics_antialias(inception_weights_path: Path) -> nn.Module:
    """torchmetrics' NoTrainInceptionV3 with its default antialiased resize, on the same weights file."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(
        "inception-v3-compat",
        ["2048", "logits_unbiased"],
        feature_extractor_weights_path=str(inception_weights_path),
        antialias=True,
    )


@pytest.mark.parametrize("size", [(32, 32), (64, 40), (512, 512)])
def test_antialias_matches_torchmetrics(
    inception_weights_path: Path, torchmetrics_antialias: nn.Module, size: tuple[int, int]
) -> None:
    ours = get_extractor("cpu", weights=inception_weights_path, resize="antialias")
    x = uint8_images(2, *size, seed=3)
    with torch.no_grad():
        pool, logits = torchmetrics_antialias._torch_fidelity_forward(x)
    features = ours(x)
    assert relative(features.pool, pool) <= EXACT
    assert relative(features.logits, logits) <= EXACT


def test_resize_modes_differ_off_299_and_agree_at_299(
    extractor: InceptionExtractor, inception_weights_path: Path
) -> None:
    antialias = get_extractor("cpu", weights=inception_weights_path, resize="antialias")
    small = uint8_images(2, 64, 64, seed=4)
    assert relative(antialias(small).pool, extractor(small).pool) > 1e-3  # the modes are really different
    native = uint8_images(1, 299, 299, seed=4)
    assert torch.equal(antialias(native).pool, extractor(native).pool)  # no resize at all at 299


@pytest.mark.slow
def test_batch_of_one_matches_batch_of_64(extractor: InceptionExtractor) -> None:
    x = uint8_images(64, 16, 16, seed=5)  # tiny inputs: everything is resized to 299 anyway
    batched = extractor(x)
    # Single passes for a spread of positions (first, last, in between) keep the test to ~10 forward passes.
    picks = [0, 1, 17, 31, 32, 50, 63]
    single = [extractor(x[i : i + 1]) for i in picks]
    assert relative(torch.cat([s.pool for s in single]), batched.pool[picks]) <= 1e-5
    assert relative(torch.cat([s.logits for s in single]), batched.logits[picks]) <= 1e-5


@pytest.mark.parametrize("with_bias", [False, True])
def test_fold_conv_bn_matches_conv_then_batchnorm(with_bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, (3, 1), stride=(2, 1), padding=(1, 0), bias=with_bias).double()
    bn = nn.BatchNorm2d(7, eps=1e-3).double().eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.01, 3.0)
    x = torch.randn(3, 5, 9, 6, dtype=torch.float64)
    folded = fold_conv_bn(conv, bn)
    assert folded.bias is not None
    # float64 throughout: the fold is an algebraic identity, equal up to rounding.
    assert relative(folded(x), bn(conv(x))) <= 1e-12
    assert conv.bias is None or conv.bias.requires_grad  # the originals are left alone


def test_folded_network_matches_unfolded_network_at_299(extractor: InceptionExtractor, fidelity: nn.Module) -> None:
    # 299 x 299 skips the resize on both sides: this isolates our folded, merged, channels-last layers from
    # torch-fidelity's unfolded originals (the 299 case of test_matches_torch_fidelity).
    assert not any(isinstance(m, nn.BatchNorm2d) for m in extractor.modules())
    x = uint8_images(2, 299, 299, seed=6)
    ours = extractor(x)
    with torch.no_grad():
        pool, logits = fidelity(x)
    assert relative(ours.pool, pool) <= EXACT
    assert relative(ours.logits, logits) <= EXACT


# --------------------------------------------------------------------------------------------- modes and state


def test_train_cannot_leave_eval_mode(extractor: InceptionExtractor) -> None:
    ours = extractor
    parent = nn.Module()
    parent.inception = ours  # what Lightning's pl_module.train() reaches if someone stores it on a module
    parent.train()
    assert parent.training
    assert not any(m.training for m in ours.modules())
    assert ours.train(True) is ours
    assert not ours.training
    ours.eval()
    assert not any(m.training for m in ours.modules())


def test_no_autograd_graph_even_under_enable_grad(extractor: InceptionExtractor) -> None:
    x = uint8_images(1, 16, 16)
    with torch.enable_grad():
        features = extractor(x)
    for out in (features.pool, features.logits):
        assert out.grad_fn is None
        assert not out.requires_grad
    assert not any(p.requires_grad for p in extractor.parameters())


def test_surrounding_autocast_does_not_change_features(extractor: InceptionExtractor) -> None:
    seen: list[bool] = []
    handle = extractor.net.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    try:
        x = uint8_images(2, 32, 32, seed=7)
        plain = extractor(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = extractor(x)
    finally:
        handle.remove()
    assert seen == [False, False]
    assert mixed.pool.dtype == torch.float32
    assert torch.equal(mixed.pool, plain.pool)
    assert torch.equal(mixed.logits, plain.logits)


def test_identity_and_attributes(extractor: InceptionExtractor, inception_weights_path: Path) -> None:
    digest = file_sha256(inception_weights_path)
    assert extractor.identity == f"inception-2015-12-05/{digest[:16]}/tf1"
    assert extractor.weights.sha256 == digest
    assert extractor.resize == "tf1"
    assert extractor.fast is False
    assert extractor.device == torch.device("cpu")
    assert re.fullmatch(r"inception-2015-12-05/[0-9a-f]{16}/tf1", extractor.identity)


def test_is_a_feature_network_with_one_provenance(extractor: InceptionExtractor) -> None:
    """The three former descriptions of a network (stats_files, real_pass, networks) are now one."""
    import lightning_ganeval.real_pass as real_pass
    from lightning_ganeval.feature_network import FeatureNetwork, network_identity, network_provenance
    from lightning_ganeval.networks import network_identity as networks_identity
    from lightning_ganeval.stats_files import extractor_provenance

    assert isinstance(extractor, FeatureNetwork)
    expected = {
        "extractor": extractor.identity,
        "weights_sha256": extractor.weights.sha256,
        "resize": "tf1",
        "fast": False,
        "layer": "pool3",  # the callbacks' "pool" is pool3, so that load_stats also checks d = 2048
    }
    assert extractor.provenance() == extractor.provenance("pool") == expected
    assert network_provenance(extractor, "pool") == extractor_provenance(extractor) == expected
    assert network_provenance(extractor, "logits") == {**expected, "layer": "logits"}
    assert real_pass.network_provenance is network_provenance
    assert networks_identity is network_identity
    assert network_identity(extractor) == extractor.identity


def test_cpu_convolutions_fuse_relu_and_pack_weights_once(extractor: InceptionExtractor) -> None:
    from torch.profiler import ProfilerActivity, profile

    x = uint8_images(1, 32, 32, seed=9)
    extractor(x)  # packs the weights if no earlier test has
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        extractor(x)
    counts = {event.key: event.count for event in prof.key_averages()}
    # 94 convolutions, run as 75 (1x1 convolutions on one input merged); ReLU inside them except where an average
    # pool comes between a convolution and its ReLU (8 branches); no weight reordered again on a second call.
    assert counts.get("mkldnn::_convolution_pointwise") == 75
    assert counts.get("aten::relu_", 0) == 8
    assert "mkldnn::_reorder_convolution_weight" not in counts


@pytest.mark.slow
def test_onednn_off_gives_the_same_features(extractor: InceptionExtractor) -> None:
    # The plain path (CUDA, or a CPU without oneDNN) computes relu(conv(x)) separately with torch's own kernels,
    # which sum in another order: measured 3.4e-5 (the random weights amplify rounding on upsampled inputs, see
    # the module docstring); a wrong layer, weight or activation would be far beyond 1e-4.
    x = uint8_images(1, 32, 32, seed=10)
    fused = extractor(x)
    with torch.backends.mkldnn.flags(enabled=False):
        plain = extractor(x)
    assert relative(plain.pool, fused.pool) <= 1e-4
    assert relative(plain.logits, fused.logits) <= 1e-4


def test_copies_and_pickles_after_a_cpu_forward(extractor: InceptionExtractor) -> None:
    import copy
    import io

    x = uint8_images(1, 16, 16, seed=11)
    before = extractor(x)  # leaves oneDNN-packed weights behind, which neither pickle nor deep-copy
    twin = copy.deepcopy(extractor)
    buffer = io.BytesIO()
    torch.save(extractor, buffer)
    assert torch.equal(twin(x).pool, before.pool)


def test_fast_mode_is_labelled(extractor: InceptionExtractor, inception_weights_path: Path) -> None:
    fast = get_extractor("cpu", weights=inception_weights_path, fast=True)
    assert fast is not extractor
    assert fast.identity == extractor.identity + "/fast"
    features = fast(uint8_images(2, 64, 64, seed=8))
    assert features.pool.dtype == features.logits.dtype == torch.float32
    assert features.pool.shape == (2, 2048)


@pytest.fixture(scope="module")
def bf16_extractor(inception_weights_path: Path) -> InceptionExtractor:
    """The bfloat16 path forced on, also on CPUs where bf16 is emulated: every machine runs it."""
    import lightning_ganeval.inception as extractor_module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extractor_module, "_cpu_has_fast_bf16", lambda: True)
        fast = InceptionExtractor(inception_weights_path, fast=True, device="cpu")
    assert fast.compute_dtype == torch.bfloat16
    return fast


def test_bf16_path_rounds_each_block_once(extractor: InceptionExtractor, bf16_extractor: InceptionExtractor) -> None:
    # End to end, the random test weights amplify bf16 rounding block after block (measured 0.10 relative on pool3
    # and 0.19 on the logits, the same with oneDNN capped at AVX2, AVX512 or AMX), so the whole network says
    # little about the path. Each block on the same bf16 input must stay within a few bf16 unit roundoffs
    # (2^-8 = 3.9e-3) of float32: it reads rounded weights and input and rounds its output once, which measured
    # 2e-3 to 7.6e-3. A wrong weight, layer, layout or a bf16 accumulation would be far beyond 2e-2.
    # The network's input is in [0, 255]: the normalisation is folded into its first convolution.
    x = uint8_images(2, 299, 299, seed=8).to(torch.bfloat16)
    h = x.contiguous(memory_format=torch.channels_last)
    exact_blocks = [extractor.net.stem, *extractor.net.blocks]
    fast_blocks = [bf16_extractor.net.stem, *bf16_extractor.net.blocks]
    with torch.no_grad():
        for index, (exact_block, fast_block) in enumerate(zip(exact_blocks, fast_blocks, strict=True)):
            out = fast_block(h)
            assert out.dtype == torch.bfloat16
            assert relative(out.float(), exact_block(h.float())) <= 2e-2, f"block {index}"
            h = out


def test_bf16_path_returns_float32_features(extractor: InceptionExtractor, bf16_extractor: InceptionExtractor) -> None:
    x = uint8_images(2, 299, 299, seed=8)
    features, exact = bf16_extractor(x), extractor(x)
    assert features.pool.dtype == features.logits.dtype == torch.float32
    # Loose on purpose (see above: the random weights amplify the rounding); it still catches a wrong layer.
    assert relative(features.pool, exact.pool) <= 0.5


def test_empty_batch(extractor: InceptionExtractor) -> None:
    features = extractor(torch.zeros(0, 3, 32, 32, dtype=torch.uint8))
    assert isinstance(features, InceptionFeatures)
    assert features.pool.shape == (0, 2048)
    assert features.logits.shape == (0, 1008)


# --------------------------------------------------------------------------------------------- sharing


def test_get_extractor_shares_one_instance(
    extractor: InceptionExtractor, inception_weights_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert get_extractor("cpu", weights=inception_weights_path) is extractor
    assert get_extractor(torch.device("cpu"), weights=str(inception_weights_path)) is extractor
    # Equivalent paths resolve to the same digest and share: a relative path and a symlink.
    monkeypatch.chdir(inception_weights_path.parent)
    assert get_extractor("cpu", weights=inception_weights_path.name) is extractor
    link = tmp_path / "link.pth"
    os.symlink(inception_weights_path, link)
    assert get_extractor("cpu", weights=link) is extractor
    # An already resolved InceptionWeights is accepted as is.
    assert get_extractor("cpu", weights=resolve_weights(inception_weights_path)) is extractor
    # Another resize mode is another network.
    assert get_extractor("cpu", weights=inception_weights_path, resize="antialias") is not extractor


# --------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64])
def test_non_uint8_input_points_at_to_uint8_rgb(extractor: InceptionExtractor, dtype: torch.dtype) -> None:
    with pytest.raises(TypeError, match=r"uint8.*to_uint8_rgb"):
        extractor(torch.zeros(1, 3, 8, 8, dtype=dtype))


@pytest.mark.parametrize("shape", [(1, 1, 8, 8), (1, 8, 8, 3), (1, 4, 8, 8), (3, 8, 8), (1, 1, 3, 8, 8)])
def test_bad_layout_points_at_to_uint8_rgb(extractor: InceptionExtractor, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"N x 3 x H x W.*to_uint8_rgb"):
        extractor(torch.zeros(shape, dtype=torch.uint8))


def test_non_tensor_input_is_refused(extractor: InceptionExtractor) -> None:
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        extractor([[0]])  # type: ignore[arg-type]


@pytest.mark.parametrize("resize", ["bilinear", "TF1", "", None])
def test_bad_resize_lists_allowed_values(inception_weights_path: Path, resize: object) -> None:
    for build in (
        lambda: InceptionExtractor(inception_weights_path, resize=resize, device="cpu"),  # type: ignore[arg-type]
        lambda: get_extractor("cpu", weights=inception_weights_path, resize=resize),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError, match="resize must be one of 'tf1', 'antialias'"):
            build()
    assert RESIZE_MODES == ("tf1", "antialias")


def test_bad_weights_type_is_refused() -> None:
    with pytest.raises(TypeError, match="weights must be a path"):
        get_extractor("cpu", weights=123)  # type: ignore[arg-type]


def test_weights_file_that_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="not the reference"), pytest.raises(ValueError, match="not a plain"):
        InceptionExtractor(path, device="cpu")


def test_weights_file_with_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.warns(UserWarning, match="not the reference"), pytest.raises(ValueError, match="does not hold"):
        InceptionExtractor(path, device="cpu")


# --------------------------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@requires_cuda
def test_cuda_matches_cpu(extractor: InceptionExtractor, inception_weights_path: Path) -> None:
    gpu = get_extractor("cuda", weights=inception_weights_path)
    assert gpu.device.type == "cuda"
    x = uint8_images(2, 40, 64, seed=9)
    ours = gpu(x)  # a CPU input is moved to the extractor's device
    assert ours.pool.device.type == "cuda"
    # cuDNN and the GPU resize differ from the CPU by float32 rounding only (no TF32).
    assert relative(ours.pool, extractor(x).pool) <= EXACT


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("outer", [True, False])
def test_cuda_tf32_off_inside_and_restored(inception_weights_path: Path, outer: bool) -> None:
    gpu = get_extractor("cuda", weights=inception_weights_path)
    seen: list[tuple[bool, bool, bool]] = []
    hook = gpu.net.register_forward_pre_hook(
        lambda *_: seen.append(
            (
                torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.allow_tf32,
                torch.is_autocast_enabled("cuda"),
            )
        )
    )
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = outer
        torch.backends.cudnn.allow_tf32 = outer
        with torch.autocast("cuda", dtype=torch.bfloat16):
            gpu(uint8_images(1, 32, 32).cuda())
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (outer, outer)
    finally:
        hook.remove()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert seen == [(False, False, False)]


@pytest.mark.gpu
@requires_cuda
def test_cuda_batch_of_one_matches_batch(inception_weights_path: Path) -> None:
    gpu = get_extractor("cuda", weights=inception_weights_path)
    x = uint8_images(16, 16, 16, seed=10).cuda()
    batched = gpu(x).pool
    single = torch.cat([gpu(x[i : i + 1]).pool for i in range(len(x))])
    # cuDNN may pick other algorithms per batch size; still float32 rounding only.
    assert relative(single, batched) <= 1e-4
