"""Real multi-process merging on CPU (gloo): FIDMoments, ISMarginals and the real pass on 2 and 3 ranks.

Each rank feeds a disjoint part of the same samples (sizes not divisible by the world size, so the parts are
uneven), every rank calls ``compute()``, and the parent checks that all ranks got identical results equal to the
single-process ones within 1e-9 relative.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fakes import counted_collectives
from torch.utils.data import DataLoader, TensorDataset

from lightning_ganeval.accumulators import FIDMoments, ISMarginals
from lightning_ganeval.frechet import FrechetReference
from lightning_ganeval.inception import InceptionFeatures
from lightning_ganeval.inception_score_math import inception_score
from lightning_ganeval.metrics import FID, KID
from lightning_ganeval.real_pass import prepare_real_data

pytestmark = [pytest.mark.ddp, pytest.mark.slow]  # runs in the 2 and 3 processes of tests/ddp_runs.py

RTOL = 1e-9  # merged over ranks vs one process: only the floating-point summation order differs
N_FID, D_FID = 101, 64
N_IS, SPLITS = 103, 10
N_REAL = 23


class _FakeExtractor:
    """A cheap stand-in for Inception: a fixed random projection of the uint8 pixels."""

    identity = "fake-extractor/v1"
    num_features = 8
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.projection = torch.randn(3 * 8 * 8, self.num_features, generator=torch.Generator().manual_seed(7))
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> InceptionFeatures:
        self.calls += 1
        pool = images.float().flatten(1) @ self.projection / 255
        return InceptionFeatures(pool=pool, logits=pool)


def _real_pass(cache_dir: str | None) -> tuple[Any, torch.Tensor, int]:
    """The live real pass for FID moments and 10 KID rows: (stats, rows, network calls on this rank)."""
    network, fid, kid = _FakeExtractor(), FID(), KID(subset_size=2, max_real=10)
    out = prepare_real_data(
        _real_loader(),
        [(network, fid), (network, kid)],
        space=(-1, 1),
        cache_dir=cache_dir,
        cache=cache_dir is not None,
    )
    return out[fid].stats, out[kid].features, network.calls


def _fid_features() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(D_FID, D_FID, generator=g) / 8 + torch.eye(D_FID)
    return (torch.randn(N_FID, D_FID, generator=g) @ mixing + 5.0).float()


def _reference() -> FrechetReference:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, D_FID, generator=g, dtype=torch.float64) + 4.5
    return FrechetReference(x.mean(0), torch.cov(x.T))


def _logits() -> torch.Tensor:
    return torch.randn(N_IS, 1008, generator=torch.Generator().manual_seed(2)) * 4


def _real_loader() -> DataLoader:
    images = torch.rand(N_REAL, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    return DataLoader(TensorDataset(images, torch.arange(N_REAL)), batch_size=4, shuffle=True)


def _big_features() -> torch.Tensor:
    return torch.randn(30, 2048, generator=torch.Generator().manual_seed(4)) + 2.0


def ddp_job(rank: int, world_size: int, workdir: Path, inputs: Any) -> dict[str, Any]:
    """One rank's results (tests/ddp_runs.py runs it on 2 and 3 processes)."""
    big = world_size == 2  # one run with pool3-sized (d=2048) states, few samples
    out: dict[str, Any] = {}
    # FID: contiguous, uneven parts, small batches.
    part = np.array_split(np.arange(N_FID), world_size)[rank]
    fid = FIDMoments(num_features=D_FID)
    for chunk in _fid_features()[torch.from_numpy(part)].split(7):
        fid.update(chunk)
    stats = fid.compute()
    with counted_collectives() as calls:
        out["merged_state"] = fid.synced().moments.clone()
    out["fid_collectives"] = list(calls)
    out["local_n"] = int(fid.n.item())  # synced() and compute() leave this rank's own state
    out["fid_n"], out["fid_mean"], out["fid_cov"] = stats.n, stats.mean, stats.cov
    out["fid"] = _reference().distance(stats.mean, stats.cov)

    # IS: interleaved global indices (the sampling.py layout), batches of 5.
    indices = torch.arange(rank, N_IS, world_size)
    marginals = ISMarginals(num_samples=N_IS, splits=SPLITS)
    logits = _logits()
    for chunk in indices.split(5):
        marginals.update(logits[chunk], indices=chunk)
    with counted_collectives() as calls:
        out["is"] = marginals.compute()
    out["is_collectives"] = list(calls)
    try:  # a per-process counter cannot give global indices
        ISMarginals(num_samples=N_IS, splits=SPLITS).update(logits[:3])
    except ValueError as err:
        out["no_indices_error"] = str(err)

    # The real pass through a shuffled loader: resharded by index, merged by the metric's sync; rank 0 writes
    # the cache, and the second call hits it on every rank (rank 0's decision, broadcast) with no network call.
    cache = os.path.join(workdir, "cache")
    real, rows, out["real_calls"] = _real_pass(cache)
    out["real_n"], out["real_mean"], out["real_cov"], out["real_rows"] = real.n, real.mean, real.cov, rows
    cached, cached_rows, out["cached_calls"] = _real_pass(cache)
    out["cached_equal"] = torch.equal(cached.cov, real.cov) and torch.equal(cached_rows, rows)

    if big:
        x = _big_features()
        big_metric = FIDMoments(num_features=2048)
        big_metric.update(x[rank::world_size])
        big_stats = big_metric.compute()
        reference = np.cov(x.double().numpy(), rowvar=False)
        out["big_n"] = big_stats.n
        out["big_cov_rel"] = float(np.abs(big_stats.cov.numpy() - reference).max() / np.abs(reference).max())
        out["big_cov_checksum"] = float(big_stats.cov.sum())
    return out


def _single_process() -> dict[str, Any]:
    fid = FIDMoments(num_features=D_FID)
    fid.update(_fid_features())
    stats = fid.compute()
    real, rows, _ = _real_pass(None)
    return {
        "state": fid.moments.clone(),
        "stats": stats,
        "fid": _reference().distance(stats.mean, stats.cov),
        "is": inception_score(_logits(), splits=SPLITS),
        "real": real,
        "real_rows": rows,
    }


def _rel(ours: torch.Tensor | float, ref: torch.Tensor | float) -> float:
    if isinstance(ours, torch.Tensor):
        return float((ours - ref).abs().max() / ref.abs().max())
    return abs(ours - ref) / abs(ref)


@pytest.mark.parametrize("world_size", [2, 3])
def test_merged_results_equal_single_process_on_every_rank(world_size: int, ddp_runs: Any) -> None:
    big = world_size == 2
    results = ddp_runs.ranks(world_size, ddp_job)
    single = _single_process()

    # Each rank saw only its part; the merge restores the whole.
    assert sum(r["local_n"] for r in results) == N_FID
    assert all(r["local_n"] < N_FID for r in results)
    for r in results:
        # One all-gather per accumulator and evaluation (torchmetrics made two per state: sizes, then values).
        assert r["fid_collectives"] == ["all_gather"]
        assert r["is_collectives"] == ["all_gather"]
        assert r["merged_state"][0].item() == N_FID
        assert _rel(r["merged_state"][1:], single["state"][1:]) <= RTOL
        assert r["fid_n"] == N_FID
        assert _rel(r["fid_mean"], single["stats"].mean) <= RTOL
        assert _rel(r["fid_cov"], single["stats"].cov) <= RTOL
        assert _rel(r["fid"], single["fid"]) <= RTOL
        assert _rel(r["is"][0], single["is"][0]) <= RTOL
        assert _rel(r["is"][1], single["is"][1]) <= RTOL
        assert "pass the global sample indices" in r.get("no_indices_error", "")
        assert r["real_n"] == N_REAL  # no DistributedSampler padding, no duplicates
        assert _rel(r["real_cov"], single["real"].cov) <= RTOL
        assert _rel(r["real_mean"], single["real"].mean) <= RTOL
        # The KID rows are a uniform sample chosen by global index: bit-identical for any number of processes.
        assert torch.equal(r["real_rows"], single["real_rows"])
        assert r["real_calls"] > 0
        assert r["cached_calls"] == 0
        assert r["cached_equal"]
        if big:
            assert r["big_n"] == 30
            assert r["big_cov_rel"] <= RTOL

    # Every rank computed from the same gathered states, in rank order: identical bits everywhere.
    first = results[0]
    for r in results[1:]:
        assert torch.equal(r["merged_state"], first["merged_state"])
        assert torch.equal(r["fid_cov"], first["fid_cov"])
        assert r["fid"] == first["fid"]
        assert r["is"] == first["is"]
        assert torch.equal(r["real_cov"], first["real_cov"])
        if big:
            assert r["big_cov_checksum"] == first["big_cov_checksum"]
