"""Perceptual path length: LPIPS-VGG16 and PPL against torch-fidelity, DDP, weights, the Lightning callback.

Random LPIPS weights in the two official layouts (``weights-vgg16-lpips.pth``, ``vgg16-397923af.pth``) stand in for
the published files; torch-fidelity is made to load the same ones by patching its two loaders. Images are kept small
(LPIPS resize 16 or 32) because VGG16 is the cost on this CPU.
"""

from __future__ import annotations

import dataclasses
import http.server
import math
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from fakes import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_ganeval.lpips as lpips_module
from lightning_ganeval import PPLCallback
from lightning_ganeval.lpips import LPIPS_ENV_VAR, LPIPSVGG16, VGG16_ENV_VAR, resolve_lpips_weights
from lightning_ganeval.metrics.ppl import (
    PerceptualPathLength,
    interpolate,
    path_endpoints,
    percentile_bounds,
    reduce_path_lengths,
)
from lightning_ganeval.testing import build_random_lpips_state_dict
from lightning_ganeval.weights import WeightsHashError, WeightsNotFoundError, file_sha256

LATENT_DIM = 8


@pytest.fixture(autouse=True)
def _no_lpips_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(LPIPS_ENV_VAR, raising=False)
    monkeypatch.delenv(VGG16_ENV_VAR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not the reference.*")
        return fn(*args, **kwargs)


def _lpips(files: tuple[Path, Path], resize: int | None = 16) -> LPIPSVGG16:
    return _quiet(LPIPSVGG16, files[0], files[1], resize=resize)


class Generator(nn.Module):
    """``z -> images`` in [0, 255] (float), smooth in z; a 16 x 16 output resized for LPIPS."""

    def __init__(self, size: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.size = size
        self.net = nn.Sequential(nn.Linear(LATENT_DIM, 64), nn.Tanh(), nn.Linear(64, 3 * size * size))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(self.net(z)).view(-1, 3, self.size, self.size) + 1) * 127.5


# ------------------------------------------------------------------------------------------- math


def test_interpolation_equals_torch_fidelity_bit_for_bit() -> None:
    from torch_fidelity.noise import batch_lerp, batch_slerp_any

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(64, 16, generator=generator)
    b = torch.randn(64, 16, generator=generator)
    b[0], b[1], a[2] = a[0], -2 * a[1], 0.0  # parallel, anti-parallel, zero: the lerp fallback
    for t in (1e-4, 0.3, 1.0):
        assert torch.equal(interpolate(a, b, t, "slerp"), batch_slerp_any(a, b, t)), t
        assert torch.equal(interpolate(a, b, t, "lerp"), batch_lerp(a, b, t)), t
    # Endpoints: t = 0 gives a, t = 1 gives b (to rounding), norms interpolate along the arc.
    torch.testing.assert_close(interpolate(a, b, 0.0, "slerp"), a)
    torch.testing.assert_close(interpolate(a[3:], b[3:], 1.0, "slerp"), b[3:], rtol=1e-5, atol=1e-5)
    # Latents of any shape: one flat vector per sample.
    shaped = interpolate(a.view(64, 4, 2, 2), b.view(64, 4, 2, 2), 0.3, "slerp")
    assert torch.equal(shaped.view(64, 16), interpolate(a, b, 0.3, "slerp"))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 50, 99, 100, 101, 257])
def test_percentile_bounds_equal_numpy(n: int) -> None:
    values = torch.rand(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    for lower, upper in [(1, 99), (1.0, 99.0), (5, 95), (0.5, 99.5), (33.3, 66.7)]:
        low, high = percentile_bounds(values, lower, upper)
        assert low == np.percentile(values.numpy(), lower, method="lower")
        assert high == np.percentile(values.numpy(), upper, method="higher")


def test_reduction_is_stylegans() -> None:
    """Mean of the values within [P1 (lower), P99 (higher)], bounds included; NaN (non-finite pairs) left out."""
    values = torch.rand(300, generator=torch.Generator().manual_seed(1), dtype=torch.float64) ** 4 * 100
    d = values.numpy()
    lo, hi = np.percentile(d, 1, method="lower"), np.percentile(d, 99, method="higher")
    kept = np.extract(np.logical_and(d >= lo, d <= hi), d)
    mean, std, count = reduce_path_lengths(torch.cat([values, torch.tensor([math.nan])]))
    assert count == len(kept) == 296  # indices floor(299 * 0.01) = 2 to ceil(299 * 0.99) = 297
    assert mean == pytest.approx(kept.mean(), rel=1e-15)
    assert std == pytest.approx(kept.std(), rel=1e-12)


# ------------------------------------------------------------------------------------------ LPIPS


def test_lpips_loads_the_official_layouts(lpips_files: tuple[Path, Path], tmp_path: Path) -> None:
    heads, trunk = lpips_files
    assert set(torch.load(heads)) == {f"lin{k}.model.1.weight" for k in range(5)}
    assert set(torch.load(trunk)) == set(lpips_module.vgg16_feature_shapes())
    net = _lpips(lpips_files)
    reference = LPIPSVGG16(state_dict=build_random_lpips_state_dict(seed=0), resize=16)
    for key, value in reference.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.train().training  # a fixed metric network
    # The published VGG16 file also holds the classifier, which LPIPS skips.
    full = {**torch.load(trunk), "classifier.6.weight": torch.zeros(2, 2)}
    torch.save(full, tmp_path / "with-classifier.pth")
    _lpips((heads, tmp_path / "with-classifier.pth"))
    # Any other file is refused with the layout in the message.
    with pytest.raises(RuntimeError, match=r"missing \['lin0.model.1.weight'"):
        _lpips((trunk, trunk))
    # Environment variables stand in for the arguments.
    with mock.patch.dict("os.environ", {LPIPS_ENV_VAR: str(heads), VGG16_ENV_VAR: str(trunk)}):
        found = _quiet(resolve_lpips_weights)
    assert [w.path for w in found] == [heads, trunk]
    assert [w.source for w in found] == ["environment", "environment"]


def test_lpips_offline_error_names_every_way_to_provide_the_files(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_lpips_weights(
            url=f"http://127.0.0.1:{port}/weights-vgg16-lpips.pth", cache_dir=tmp_path, progress=False
        )
    message = str(info.value)
    for needle in [LPIPS_ENV_VAR, "`lpips_weights=`", "a78928a0", str(tmp_path / "weights-vgg16-lpips.pth")]:
        assert needle in message


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        payload = self.server.payload  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def test_lpips_download_is_verified(
    server: http.server.ThreadingHTTPServer, lpips_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both files come from a loopback server into the torch hub cache, checked against the specs' digests."""
    heads, trunk = lpips_files
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for attribute, path in (("LPIPS_SPEC", heads), ("VGG16_SPEC", trunk)):
        spec = getattr(lpips_module, attribute)
        pinned = dataclasses.replace(spec, url=f"{url}/{spec.filename}", sha256=file_sha256(path))
        monkeypatch.setattr(lpips_module, attribute, pinned)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    server.payload = heads.read_bytes()  # type: ignore[attr-defined]
    with pytest.raises(WeightsHashError):  # the heads' server sends the heads for the VGG16 URL too
        resolve_lpips_weights(progress=False)
    assert (cache / "weights-vgg16-lpips.pth").read_bytes() == heads.read_bytes()
    assert not (cache / "vgg16-397923af.pth").exists()  # a wrong download never reaches the cache
    server.payload = trunk.read_bytes()  # type: ignore[attr-defined]
    found = resolve_lpips_weights(progress=False)
    assert [w.source for w in found] == ["cache", "download"]
    assert all(w.is_reference for w in found)
    net = LPIPSVGG16(resize=16)
    assert torch.equal(net.lin0.model[1].weight, torch.load(heads)["lin0.model.1.weight"])


# ----------------------------------------------------------------------------------- torch-fidelity


@pytest.fixture
def fidelity_lpips(lpips_files: tuple[Path, Path]) -> Iterator[None]:
    """torch-fidelity's LPIPS loads our random files; NumPy 2.4's percentile has lost `interpolation=`."""
    import torchvision
    from torch_fidelity import sample_similarity_lpips

    heads, trunk = lpips_files

    def vgg16() -> nn.Module:
        # torch-fidelity keeps only `.features`: no 138 M random initial values for weights replaced or unused.
        with torch.device("meta"):
            model = torchvision.models.vgg16(weights=None)
        state = {k.removeprefix("features."): v for k, v in torch.load(trunk).items()}
        model.features.load_state_dict(state, assign=True)
        return model

    percentile = np.percentile

    def percentile_compat(a: Any, q: Any, interpolation: str | None = None, **kwargs: Any) -> Any:
        return percentile(a, q, method=interpolation or "linear", **kwargs)

    with (
        mock.patch.object(sample_similarity_lpips, "load_state_dict_from_url", return_value=torch.load(heads)),
        mock.patch.object(sample_similarity_lpips, "torchvision_load_pretrained_vgg16", vgg16),
        mock.patch.object(np, "percentile", percentile_compat),
    ):
        yield


@pytest.mark.slow
@pytest.mark.parametrize("resize", [16, 64])
def test_lpips_equals_torch_fidelity(lpips_files: tuple[Path, Path], fidelity_lpips: None, resize: int) -> None:
    """Same weights, same images: the same float32 distances, bit for bit (resize up, bilinear, and down, area)."""
    from torch_fidelity.sample_similarity_lpips import SampleSimilarityLPIPS

    theirs = SampleSimilarityLPIPS("lpips-vgg16", sample_similarity_resize=resize).eval()
    ours = _lpips(lpips_files, resize=resize)
    generator = torch.Generator().manual_seed(0)
    size = 80 if resize == 64 else 12
    x = torch.rand(4, 3, size, size, generator=generator) * 255
    y = (x + torch.randn(4, 3, size, size, generator=generator) * 20).clamp(0, 255)
    with torch.no_grad():
        assert torch.equal(ours(x, y), theirs(x, y))
        assert torch.equal(ours(x.to(torch.uint8), y.to(torch.uint8)), theirs(x.to(torch.uint8), y.to(torch.uint8)))


@pytest.mark.slow
@pytest.mark.parametrize("quantize", [False, True])
def test_ppl_equals_torch_fidelity(lpips_files: tuple[Path, Path], fidelity_lpips: None, quantize: bool) -> None:
    """torch-fidelity's PPL on our bank's latents (its latent draw patched), same generator, weights and settings.

    Tolerance: the per-pair distances are equal bit for bit; the means differ by float32 (theirs) versus float64
    (ours) summation only: 1e-5 relative.
    """
    import torch_fidelity.metric_ppl as metric_ppl
    from torch_fidelity import calculate_metrics
    from torch_fidelity.generative_model_modulewrapper import GenerativeModelModuleWrapper

    num_pairs, batch = 120, 30  # 120 pairs: the percentile cut drops one value at each end (none below 102)
    g = Generator().eval()
    ours = PerceptualPathLength(
        LATENT_DIM,
        num_pairs=num_pairs,
        batch_size=batch,
        space=(0.0, 255.0),
        resize=16,
        quantize=quantize,
        lpips=_lpips(lpips_files),
    )
    result = ours.evaluate(g)
    bank = ours.bank.latents()

    def as_uint8(z: torch.Tensor) -> torch.Tensor:
        return g(z).round().clamp(0, 255).to(torch.uint8)

    wrapped = GenerativeModelModuleWrapper(_Call(as_uint8) if quantize else g, LATENT_DIM, "normal", 0)
    with mock.patch.object(metric_ppl, "sample_random", side_effect=[bank[:, 0], bank[:, 1]]):
        theirs = calculate_metrics(
            input1=wrapped,
            ppl=True,
            input1_model_num_samples=num_pairs,
            batch_size=batch,
            cuda=False,
            verbose=False,
            ppl_z_interp_mode="slerp_any",
            ppl_sample_similarity_resize=16,
            ppl_sample_similarity_dtype="uint8" if quantize else None,
            ppl_reduction="none",
        )
    kept = result.distances[(result.distances >= percentile_bounds(result.distances, 1, 99)[0])]
    kept = kept[kept <= percentile_bounds(result.distances, 1, 99)[1]]
    assert result.num_kept == len(theirs["perceptual_path_length_raw"])
    # uint8 images: many pairs round to the same image (distance 0), ties at the low bound are all kept.
    assert result.num_kept == (119 if quantize else num_pairs - 2)
    assert np.array_equal(kept.float().numpy(), theirs["perceptual_path_length_raw"])
    assert result.values["ppl"] == pytest.approx(theirs["perceptual_path_length_mean"], rel=1e-5)
    assert result.values["ppl_std"] == pytest.approx(theirs["perceptual_path_length_std"], rel=1e-5)
    assert result.values["ppl"] > 0


class _Call(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)


# ---------------------------------------------------------------------------------------------- DDP


def ddp_evaluator_job(rank: int, world_size: int, workdir: Path, inputs: Any) -> dict[str, Any]:
    """One rank's values and distances (tests/ddp_runs.py runs it on 2 and 3 processes)."""
    # The test process's thread count: VGG16's float32 sums, and so the distances, depend on it.
    threads = torch.get_num_threads()
    torch.set_num_threads(inputs["torch_threads"])
    try:
        metric = PerceptualPathLength(
            LATENT_DIM,
            num_pairs=22,
            batch_size=4,
            space=(0.0, 255.0),
            sampling="full",
            lpips=_lpips(inputs["lpips_files"]),
        )
        result = metric.evaluate(Generator())
    finally:
        torch.set_num_threads(threads)
    return {"values": result.values, "distances": result.distances}


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_is_exact_at_any_world_size(lpips_files: tuple[Path, Path], ddp_runs: Any) -> None:
    """One process (no process group), 2 and 3 gloo processes (6 batches, the last one short): identical per-pair
    distances and values."""
    with torch.random.fork_rng(devices=[]):  # `Generator` seeds the global RNG
        single = PerceptualPathLength(
            LATENT_DIM, num_pairs=22, batch_size=4, space=(0.0, 255.0), sampling="full", lpips=_lpips(lpips_files)
        ).evaluate(Generator())
    for world_size in (2, 3):
        result = ddp_runs.ranks(world_size, ddp_evaluator_job)[0]
        assert torch.equal(result["distances"], single.distances), world_size
        assert result["values"] == single.values, world_size
    assert not torch.isnan(single.distances).any()


# ----------------------------------------------------------------------------------------- Lightning


class TinyGAN(pl.LightningModule):
    """A generator with Dropout and BatchNorm, trained on a loss that draws from the global RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters({"latent_dim": LATENT_DIM})
        self.net = nn.Sequential(
            nn.Linear(LATENT_DIM, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3 * 8 * 8)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(z)).view(-1, 3, 8, 8)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return ((self(torch.randn(len(batch[0]), LATENT_DIM)) - batch[0]) ** 2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _fit(
    root: Path,
    callbacks: list[pl.Callback],
    model: pl.LightningModule,
    *,
    data: torch.Tensor | None = None,
    shuffle: bool = True,
    ckpt_path: str | None = None,
    **kwargs: Any,
) -> pl.Trainer:
    """A quiet CPU fit on ``data`` (default: 16 random 8 x 8 images in (-1, 1)); ``kwargs`` override the Trainer's."""
    if data is None:
        data = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    trainer = quiet_trainer(pl.Trainer, root, callbacks, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, DataLoader(TensorDataset(data), batch_size=8, shuffle=shuffle), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.slow
def test_callback_logs_ppl_and_leaves_training_unchanged(lpips_files: tuple[Path, Path], tmp_path: Path) -> None:
    """Same seed with and without PPLCallback: identical weights; ``ppl`` logged, equal to the plain-torch value."""

    def run(callbacks: list[pl.Callback]) -> tuple[pl.Trainer, TinyGAN]:
        pl.seed_everything(7, verbose=False)
        model = TinyGAN()
        return _fit(tmp_path, callbacks, model), model

    ppl = PPLCallback(num_pairs=12, batch_size=4, resize=16, lpips_weights=lpips_files[0], vgg16_weights=lpips_files[1])
    trainer, model = _quiet(run, [ppl])
    _, reference = run([])
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert all(m.training for m in model.modules())
    assert [h["epoch"] for h in ppl.history] == [0, 1]
    assert set(trainer.callback_metrics) >= {"ppl", "ppl_std", "ppl_nonfinite", "ppl_clamped"}
    expected = PerceptualPathLength(LATENT_DIM, num_pairs=12, batch_size=4, resize=16, lpips=_lpips(lpips_files))
    value = expected.evaluate(model).values["ppl"]
    assert ppl.last_score == pytest.approx(value, rel=1e-12)
    assert float(trainer.callback_metrics["ppl"]) == pytest.approx(value, rel=1e-6)  # logged as float32
    assert ppl.state_dict()["settings"]["interpolation"] == "slerp"


@pytest.mark.slow
def test_callback_w_space_hook(lpips_files: tuple[Path, Path], tmp_path: Path) -> None:
    """``mapping_fn`` + ``sample_fn``: the path is linear in w; the value is that of a plain-torch run in W."""
    calls = {"map": 0, "render": 0}

    def mapping(module: TinyGAN, z: torch.Tensor) -> torch.Tensor:
        calls["map"] += 1
        return module.net[0](z)

    def synthesis(module: TinyGAN, w: torch.Tensor) -> torch.Tensor:
        calls["render"] += 1
        return torch.tanh(module.net[1:](w)).view(-1, 3, 8, 8)

    ppl = PPLCallback(
        num_pairs=8,
        batch_size=4,
        resize=16,
        mapping_fn=mapping,
        sample_fn=synthesis,
        lpips_weights=lpips_files[0],
        vgg16_weights=lpips_files[1],
    )
    model = TinyGAN()
    _quiet(_fit, tmp_path, [ppl], model, max_epochs=1)
    assert calls == {"map": 2, "render": 2}  # one call per batch of 4 pairs (8 latents) each
    metric = PerceptualPathLength(
        LATENT_DIM, num_pairs=8, batch_size=4, resize=16, mapping=True, lpips=_lpips(lpips_files)
    )
    assert metric.interpolation == "lerp"
    value = metric.evaluate(lambda w: synthesis(model, w), mapping_fn=lambda z: mapping(model, z), module=model)
    assert ppl.last_score == pytest.approx(value.values["ppl"], rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_pairs": 0}, ValueError, "`num_pairs`"),
        ({"batch_size": 1.5}, TypeError, "`batch_size`"),
        ({"every_n_epochs": 1, "every_n_train_steps": 5}, ValueError, "`every_n_epochs=1` and `every_n_train_steps"),
        ({"interpolation": "cubic"}, ValueError, "`interpolation`"),
        ({"sampling": "middle"}, ValueError, "`sampling`"),
        ({"epsilon": 0.0}, ValueError, "`epsilon`"),
        ({"epsilon": "1e-4"}, ValueError, "`epsilon`"),
        ({"discard": (99, 1)}, ValueError, "`discard`"),
        ({"discard": (0, 99)}, ValueError, "`discard`"),
        ({"resize": 0}, ValueError, "`resize`"),
        ({"quantize": 1}, TypeError, "`quantize`"),
        ({"lpips_weights": ""}, ValueError, "`lpips_weights`"),
        ({"vgg16_weights": 3}, TypeError, "`vgg16_weights`"),
        ({"lpips": "vgg"}, TypeError, "`lpips`"),
        ({"mapping_fn": lambda m, z: z}, ValueError, "`mapping_fn` needs `sample_fn`"),
        ({"sample_fn": 3}, TypeError, "`sample_fn`"),
        ({"model_weights": "ema"}, ValueError, "`model_weights`"),
        ({"value_range": (1, 0)}, ValueError, "value_range"),
        ({"nonfinite": "skip"}, ValueError, "`nonfinite`"),
        ({"name": " ppl"}, ValueError, "`name`"),
        ({"seed": -1}, ValueError, "`seed`"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match.replace("(", r"\(").replace(")", r"\)")):
        PPLCallback(**kwargs)


@pytest.mark.slow
@pytest.mark.ddp
def test_callback_under_ddp(lpips_files: tuple[Path, Path], ddp_runs: Any) -> None:
    """Two ``ddp`` processes: the logged ``ppl`` is the plain-torch value of the trained weights (float32 log)."""
    record = ddp_runs.ranks(2, ddp_callback_job)[0]
    model = TinyGAN()
    model.load_state_dict(record["state_dict"])  # rank 0's trained weights, as ddp_spawn hands back
    expected = PerceptualPathLength(LATENT_DIM, num_pairs=10, batch_size=4, resize=16, lpips=_lpips(lpips_files))
    value = expected.evaluate(model).values["ppl"]
    assert record["ppl"] == pytest.approx(value, rel=1e-6)


def ddp_callback_job(rank: int, world_size: int, workdir: Path, inputs: Any) -> dict[str, Any]:
    """One rank's logged ``ppl`` and trained weights (tests/ddp_runs.py runs it on 2 processes)."""
    from ddp_runs import roundtrip_pickle

    heads, trunk = inputs["lpips_files"]
    ppl = PPLCallback(num_pairs=10, batch_size=4, resize=16, lpips_weights=heads, vgg16_weights=trunk)
    model, callbacks = roundtrip_pickle((TinyGAN(), [ppl]))  # as ddp_spawn would send them
    trainer = _fit(workdir, callbacks, model, max_epochs=1, strategy="ddp", devices=world_size)
    return {"ppl": float(trainer.callback_metrics["ppl"]), "state_dict": model.state_dict()}


class MeanSquare(nn.Module):
    """A cheap stand-in distance (``lpips=``): mean squared pixel difference, per pair."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a.float() - b.float()) / 255).square().flatten(1).mean(1)


def test_nonfinite_pairs_are_counted_and_left_out() -> None:
    """Pairs whose images hold NaN get NaN distances, are counted, and the value is that of the other pairs."""

    def render(z: torch.Tensor) -> torch.Tensor:
        images = torch.tanh(z[:, :1, None, None] * torch.ones(1, 3, 4, 4) + z[:, 1:2, None, None])
        images[z[:, 2] > 1.0] = math.nan
        return images

    metric = PerceptualPathLength(4, num_pairs=40, batch_size=8, lpips=MeanSquare(), discard=(None, None))
    result = metric.evaluate(render)
    bad = torch.isnan(result.distances)
    latents = metric.bank.latents()
    assert result.num_nonfinite == int(bad.sum()) > 0
    start, end = path_endpoints(latents[:, 0], latents[:, 1], None, metric.epsilon, "slerp")
    assert torch.equal(bad, (start[:, 2] > 1.0) | (end[:, 2] > 1.0))
    assert result.values["ppl"] == pytest.approx(float(result.distances[~bad].mean()), rel=1e-12)
    assert result.num_kept == 40 - result.num_nonfinite


def test_callback_state_and_changed_settings_warning() -> None:
    saved = PPLCallback(num_pairs=8, lpips=MeanSquare())
    saved.history = [{"epoch": 0, "step": 2, "ppl": 1.5}]
    saved.last_score = 1.5
    state = saved.state_dict()
    restored = PPLCallback(num_pairs=8, lpips=MeanSquare())
    restored.load_state_dict(state)
    assert restored.history == saved.history
    assert restored.last_score == 1.5
    assert restored.state_key == "PPLCallback{'name': 'ppl'}"
    with pytest.warns(UserWarning, match=r"other settings \(num_pairs: 8 -> 16\)"):
        PPLCallback(num_pairs=16, lpips=MeanSquare()).load_state_dict(state)


def test_callback_on_a_step_schedule_with_a_custom_distance(tmp_path: Path) -> None:
    """``every_n_train_steps=2`` over 4 steps: two evaluations, at steps 2 and 4; ``lpips=`` replaces LPIPS."""
    ppl = PPLCallback(num_pairs=8, batch_size=4, every_n_train_steps=2, lpips=MeanSquare(), sampling="full")
    _fit(tmp_path, [ppl], TinyGAN())
    assert [h["step"] for h in ppl.history] == [2, 4]
    assert all(h["ppl"] > 0 for h in ppl.history)
    assert ppl.state_dict()["settings"]["sampling"] == "full"


def test_a_key_clash_with_another_metric_callback_is_refused(tmp_path: Path) -> None:
    """Two PPLCallbacks need their own ``name`` (Lightning refuses equal state keys); another metric callback that
    would log one of our keys is refused in ``setup``, naming both."""

    class Other(pl.Callback):
        name = "other"

        def _logged_keys(self) -> list[str]:
            return ["other", "ppl_std"]

    with pytest.raises(ValueError, match=r"and `Other\(name='other'\)` would both log `ppl_std`"):
        _fit(tmp_path, [PPLCallback(num_pairs=4, lpips=MeanSquare()), Other()], TinyGAN())
    ppl_8 = PPLCallback(num_pairs=8, lpips=MeanSquare(), name="ppl_8")
    _fit(tmp_path, [PPLCallback(num_pairs=4, lpips=MeanSquare()), ppl_8], TinyGAN(), max_epochs=1)
    assert len(ppl_8.history) == 1


def test_callback_scores_the_averaged_weights(tmp_path: Path) -> None:
    """Next to ``EMAWeightAveraging``: ``ppl`` is the averaged copy's value, ``ppl_current`` the trained weights'."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    ppl = PPLCallback(num_pairs=8, batch_size=4, lpips=MeanSquare(), model_weights="both")
    averaging = EMAWeightAveraging(decay=0.5)
    model = TinyGAN()
    trainer = _fit(tmp_path, [ppl, averaging], model, max_epochs=1)
    metric = PerceptualPathLength(LATENT_DIM, num_pairs=8, batch_size=4, lpips=MeanSquare())
    # After fit the averaged weights have been copied into `model`; the copy still holds them.
    averaged = metric.evaluate(averaging._average_model.module).values["ppl"]
    assert ppl.history[0]["ppl"] == pytest.approx(averaged, rel=1e-12)
    assert "ppl_current" in trainer.callback_metrics
    assert ppl.history[0]["ppl_current"] != ppl.history[0]["ppl"]


def test_callback_infers_the_pixel_space_of_the_training_data(
    lpips_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``value_range=``, ToTensor-like [0, 1] training data make the generated images read in [0, 1]."""
    import lightning_ganeval.callbacks.ppl as ppl_module

    said: list[str] = []
    monkeypatch.setattr(ppl_module, "rank_zero_info", said.append)
    ppl = PPLCallback(num_pairs=4, batch_size=4, resize=16, lpips_weights=lpips_files[0], vgg16_weights=lpips_files[1])
    data = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    _fit(tmp_path, [ppl], TinyGAN(), data=data, shuffle=False, max_epochs=1)
    (message,) = [m for m in said if "inferred the pixel space" in m]
    assert "value_range=(0.0, 1.0)" in message
    assert len(ppl.history) == 1
    assert ppl.state_dict()["settings"]["pixel_space"] is None  # inferred, not a setting


def test_callback_resumes_its_history_from_a_trainer_checkpoint(tmp_path: Path) -> None:
    """A fit resumed with ``ckpt_path=`` continues the history saved in the checkpoint (and its schedule)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    data = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def run(max_epochs: int, ckpt_path: str | None = None) -> PPLCallback:
        ppl = PPLCallback(num_pairs=8, batch_size=4, lpips=MeanSquare())
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
        _fit(
            tmp_path,
            [ppl, checkpoint],
            TinyGAN(),
            data=data,
            shuffle=False,
            ckpt_path=ckpt_path,
            max_epochs=max_epochs,
            enable_checkpointing=True,
        )
        return ppl

    first = run(1)
    resumed = run(2, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    assert resumed.history[0] == first.history[0]
