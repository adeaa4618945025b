"""The Evaluator in a plain PyTorch loop: no Lightning, one pass per batch, state left as found, exact values.

The feature networks are `FakeExtractor` (the Inception interface: ``pool`` and ``logits``) and `TinyFeatures`
(a one-layer network for ``feature_extractor=``); both count their forward calls. Reference values are computed
here from the same features with :func:`lightning_ganeval.frechet.frechet_distance` and
:func:`lightning_ganeval.inception_score_math.inception_score`.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fakes import FakeExtractor
from tiny_nets import LATENT_DIM, TinyFeatures, TinyGenerator, real_images
from torch.utils.data import DataLoader, TensorDataset

from lightning_ganeval import FID, KID, Evaluator, InceptionScore, PrecisionRecall
from lightning_ganeval.frechet import frechet_distance
from lightning_ganeval.images import to_uint8_rgb
from lightning_ganeval.inception_score_math import inception_score

REPO = Path(__file__).resolve().parents[1]
NUM_SAMPLES, BATCH = 20, 8  # 3 batches: 8, 8, 4
NUM_REAL = 24


def four_metrics(feature_extractor: torch.nn.Module | None = None) -> list[Any]:
    return [
        FID(feature_extractor=feature_extractor),
        InceptionScore(splits=2),
        KID(feature_extractor=feature_extractor, subsets=3, subset_size=4, max_real=NUM_REAL),
        PrecisionRecall(feature_extractor=feature_extractor, k=2, max_real=NUM_REAL),
    ]


def real_loader() -> DataLoader:
    return DataLoader(TensorDataset(real_images(NUM_REAL, seed=1)), batch_size=BATCH)


def make_evaluator(metrics: list[Any], inception: torch.nn.Module | None, **kwargs: Any) -> Evaluator:
    options = {"num_samples": NUM_SAMPLES, "latent_shape": LATENT_DIM, "batch_size": BATCH, "seed": 3}
    return Evaluator(metrics, inception=inception, **{**options, **kwargs})


def trained_generator() -> TinyGenerator:
    """A generator whose BatchNorm statistics are not the initial ones (so restoring them is observable)."""
    torch.manual_seed(0)
    generator = TinyGenerator(LATENT_DIM)
    with torch.no_grad():
        for _ in range(3):
            generator(torch.randn(16, LATENT_DIM))
    generator.calls = 0
    return generator


# ------------------------------------------------------------------------------------------- no Lightning


@pytest.mark.slow
def test_plain_loop_imports_no_lightning(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        from fakes import FakeExtractor
        from tiny_nets import TinyGenerator, real_images
        from lightning_ganeval import FID, KID, Evaluator, InceptionScore, PrecisionRecall

        metrics = [FID(), InceptionScore(splits=2), KID(subsets=2, subset_size=4, max_real=16),
                   PrecisionRecall(k=2, max_real=16)]
        evaluator = Evaluator(metrics, num_samples=8, latent_shape=8, batch_size=4, inception=FakeExtractor())
        evaluator.prepare_real(DataLoader(TensorDataset(real_images(16)), batch_size=8),
                               cache_dir={str(tmp_path)!r})
        values = evaluator.evaluate(TinyGenerator(8)).values
        assert {{"fid", "is", "kid", "precision", "recall"}} <= set(values), values
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {{"lightning", "pytorch_lightning"}})
        assert not loaded, loaded
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


# -------------------------------------------------------------------------------------- one pass per batch


def test_one_generator_call_and_one_network_call_per_batch(tmp_path: Path) -> None:
    inception = FakeExtractor()
    evaluator = make_evaluator(four_metrics(), inception)
    evaluator.prepare_real(real_loader(), cache_dir=tmp_path)
    assert inception.calls == NUM_REAL // BATCH  # the real pass: one forward per real batch for all 4 metrics
    generator = trained_generator()
    inception.calls = 0
    result = evaluator.evaluate(generator)
    batches = -(-NUM_SAMPLES // BATCH)
    assert generator.calls == batches
    assert inception.calls == batches
    assert set(result.by_metric) == {"fid", "is", "kid", "pr"}


def test_two_networks_each_run_once_per_batch(tmp_path: Path) -> None:
    inception, tiny = FakeExtractor(), TinyFeatures()
    # FID and KID on the tiny network, IS and precision/recall on "Inception".
    metrics = [
        FID(feature_extractor=tiny),
        InceptionScore(splits=2),
        KID(feature_extractor=tiny, subsets=3, subset_size=4, max_real=NUM_REAL),
        PrecisionRecall(k=2, max_real=NUM_REAL),
    ]
    evaluator = make_evaluator(metrics, inception)
    assert evaluator.networks == [tiny, inception]
    evaluator.prepare_real(real_loader(), cache_dir=tmp_path)
    generator = trained_generator()
    inception.calls = tiny.calls = 0
    evaluator.evaluate(generator)
    batches = -(-NUM_SAMPLES // BATCH)
    assert (generator.calls, tiny.calls, inception.calls) == (batches, batches, batches)


# ----------------------------------------------------------------------------------------- state restored


def _rng_states() -> tuple[Any, ...]:
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()


def _assert_same_rng(before: tuple[Any, ...], after: tuple[Any, ...]) -> None:
    assert before[0] == after[0]
    assert np.array_equal(before[1], after[1])
    assert torch.equal(before[2], after[2])


@pytest.mark.parametrize("as_module", [True, False], ids=["module", "function"])
def test_global_random_states_untouched(tmp_path: Path, as_module: bool) -> None:
    evaluator = make_evaluator(four_metrics(), FakeExtractor())
    evaluator.prepare_real(real_loader(), cache_dir=tmp_path)
    generator = trained_generator().eval()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    before = _rng_states()
    evaluator.evaluate(generator if as_module else (lambda z: generator(z)))
    _assert_same_rng(before, _rng_states())


def test_generator_modes_norm_stats_and_requires_grad_restored(tmp_path: Path) -> None:
    evaluator = make_evaluator(four_metrics(), FakeExtractor())
    evaluator.prepare_real(real_loader(), cache_dir=tmp_path)
    generator = trained_generator().train()
    generator.net[0].weight.requires_grad_(False)
    generator.net[3].eval()  # a submodule in another mode than its parent: restored as it was, not by train()
    modes = [m.training for m in generator.modules()]
    flags = [p.requires_grad for p in generator.parameters()]
    buffers = {k: v.clone() for k, v in generator.state_dict().items()}

    seen: list[tuple[bool, bool]] = []
    generator.register_forward_hook(lambda module, args, out: seen.append((module.training, torch.is_grad_enabled())))
    evaluator.evaluate(generator)

    assert seen == [(False, False)] * 3  # sampled in eval mode without autograd
    assert [m.training for m in generator.modules()] == modes
    assert [p.requires_grad for p in generator.parameters()] == flags
    for key, value in generator.state_dict().items():
        assert torch.equal(value, buffers[key]), key
    assert torch.is_grad_enabled()


def test_user_feature_network_mode_restored(tmp_path: Path) -> None:
    tiny = TinyFeatures().train()
    evaluator = make_evaluator([FID(feature_extractor=tiny)], None)
    evaluator.prepare_real(real_loader(), cache_dir=tmp_path)
    evaluator.evaluate(trained_generator())
    assert tiny.training


# --------------------------------------------------------------------------------------------- the values


def _direct_features(evaluator: Evaluator, generator: TinyGenerator, network: Any) -> tuple[torch.Tensor, ...]:
    """Pool features and logits of the bank's samples, batch by batch as the evaluator cuts them."""
    generator.eval()
    pools, logits = [], []
    with torch.no_grad():
        for batch in evaluator.bank.shard(0, 1):
            images = to_uint8_rgb(generator(batch.latents), (-1.0, 1.0)).images
            out = network(images)
            pools.append(out.pool)
            logits.append(out.logits)
    real = network(to_uint8_rgb(real_images(NUM_REAL, seed=1), (-1.0, 1.0), side="real").images).pool
    return torch.cat(pools).double(), torch.cat(logits).double(), real.double()


def test_values_equal_a_direct_computation(tmp_path: Path) -> None:
    inception = FakeExtractor()
    evaluator = make_evaluator([FID(), InceptionScore(splits=2)], inception)
    evaluator.prepare_real(real_loader(), cache_dir=tmp_path)
    generator = trained_generator()
    values = evaluator.evaluate(generator).values

    pool, logits, real = _direct_features(evaluator, trained_generator(), inception)
    fid = frechet_distance(pool.mean(0), pool.T.cov(), real.mean(0), real.T.cov())
    is_mean, is_std = inception_score(logits, splits=2)
    # Same features; the float64 moments are accumulated in another order and the trace term comes from another
    # factorisation: 1e-12 relative (measured 2e-15 for FID, 0 for IS).
    assert values["fid"] == pytest.approx(fid, rel=1e-12)
    assert values["is"] == pytest.approx(is_mean, rel=1e-12)
    assert values["is_std"] == pytest.approx(is_std, rel=1e-12, abs=1e-15)
    assert values["fid_num_samples"] == values["is_num_samples"] == NUM_SAMPLES
    assert values["nonfinite"] == 0.0
    # A second evaluation samples the same latents and noise: the very same numbers.
    assert evaluator.evaluate(generator).values == values


# ------------------------------------------------------------------------------------------ bad arguments


def test_clashing_keys() -> None:
    with pytest.raises(ValueError, match="Metrics `fid` and `fid` both return `fid`"):
        Evaluator([FID(), FID()], num_samples=8, latent_shape=4, inception=FakeExtractor())
    # Distinct names do not clash.
    Evaluator([FID(), FID(name="fid_b")], num_samples=8, latent_shape=4, inception=FakeExtractor())


def test_num_samples_too_small() -> None:
    with pytest.raises(ValueError, match=r"`num_samples` must be at least 10 for `is`, got 5"):
        Evaluator([InceptionScore(splits=10)], num_samples=5, latent_shape=4, inception=FakeExtractor())
    with pytest.raises(ValueError, match=r"`num_samples` must be at least 10 for `fid`, got 9"):
        Evaluator(
            [FID(extrapolate=True, extrapolation_points=5)], num_samples=9, latent_shape=4, inception=FakeExtractor()
        )


def test_metric_needing_inception_without_one() -> None:
    with pytest.raises(ValueError, match="`is` reads Inception features but the evaluator has no `inception`"):
        Evaluator([FID(feature_extractor=TinyFeatures()), InceptionScore(splits=2)], num_samples=8, latent_shape=4)


def test_other_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`metrics` must hold at least one metric"):
        Evaluator([], num_samples=8, latent_shape=4)
    with pytest.raises(ValueError, match="`nonfinite` must be one of"):
        Evaluator([FID()], num_samples=8, latent_shape=4, inception=FakeExtractor(), nonfinite="drop")
    evaluator = Evaluator([FID()], num_samples=8, latent_shape=4, inception=FakeExtractor(), space=None)
    with pytest.raises(RuntimeError, match="pixel space is unknown"):
        evaluator.evaluate(TinyGenerator(4))


# ---------------------------------------------------------------------------------------- torch.distributed


def _evaluate(workdir: str) -> dict[str, float]:
    """Build, prepare and evaluate one evaluator with the 4 metrics on two networks (every rank does this)."""
    inception, tiny = FakeExtractor(), TinyFeatures()
    metrics = [
        FID(),
        FID(name="fid_tiny", feature_extractor=tiny),
        InceptionScore(splits=2),
        KID(feature_extractor=tiny, subsets=3, subset_size=4, max_real=NUM_REAL),
        PrecisionRecall(k=2, max_real=NUM_REAL),
    ]
    evaluator = make_evaluator(metrics, inception)
    evaluator.prepare_real(real_loader(), cache_dir=os.path.join(workdir, "cache"), cache=False)
    return evaluator.evaluate(trained_generator()).values


def ddp_job(rank: int, world_size: int, workdir: Path, inputs: Any) -> dict[str, float]:
    """One rank's values (tests/ddp_runs.py runs it on 2 processes)."""
    return _evaluate(str(workdir))


@pytest.mark.ddp
@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_values(tmp_path: Path, ddp_runs: Any) -> None:
    ranks = ddp_runs.ranks(2, ddp_job)
    single = _evaluate(str(tmp_path / "single"))
    assert ranks[0] == ranks[1]  # every rank returns the same values
    assert set(ranks[0]) == set(single)
    for key, value in single.items():
        # Every sample's features are bit-identical at any world size; only float64 sums change order.
        assert ranks[0][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_evaluate_images_equals_evaluate_on_the_same_images() -> None:
    """The command line's entry (a loader of images, sizes mixed) scores as a generator returning those images."""
    images = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    real = DataLoader(TensorDataset(torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(6))), batch_size=4)

    def evaluator() -> Evaluator:
        metrics = ["fid", "is", KID(subsets=2, subset_size=4, max_real=10)]
        made = Evaluator(metrics, num_samples=12, latent_shape=1, batch_size=4, space=(0, 1), inception=FakeExtractor())
        made.prepare_real(real, cache=False)
        return made

    position = [0]

    def generate(z: torch.Tensor) -> torch.Tensor:
        out = images[position[0] : position[0] + len(z)]
        position[0] += len(z)
        return out

    expected = evaluator().evaluate(generate, warn=False).values
    got = evaluator().evaluate_images(DataLoader(TensorDataset(images), batch_size=4), warn=False).values
    assert got == expected  # the same batches through the same step: equal
    # A list of images of different sizes (a folder): split by size, each image scored once at its global index.
    mixed = [images[i] if i % 3 else torch.nn.functional.pad(images[i], (0, 2)) for i in range(12)]
    loader = DataLoader(mixed, batch_size=5, collate_fn=list)
    values = evaluator().evaluate_images(loader, warn=False).values
    assert values["fid_num_samples"] == values["is_num_samples"] == 12
    with pytest.raises(ValueError, match=r"Expected 12 images \(`num_samples`\), got 8"):
        evaluator().evaluate_images(DataLoader(TensorDataset(images[:8]), batch_size=4), warn=False)
