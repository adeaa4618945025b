"""Inception throughput: our extractor (exact and fast mode) vs torch-fidelity's, plus what fast mode costs in FID.

All three extractors see the same uint8 images (smooth random 32x32 images, resized to 299 inside), batch by
batch in rotating order, so that a noisy neighbour on a shared machine slows all of them alike; images/s is the
total number of images over the total time each one spent. Random weights
(:func:`lightning_ganeval.testing.write_random_inception_weights`) cost exactly what the real ones cost; pass
``--weights`` to use a real file.

Fast mode is not reference-exact. Its price is measured as the relative change of FID between two image sets
(each side computed in the same mode, as a user of fast mode would: real statistics cached under the fast
extractor's identity), using float64 mean/covariance and ``scipy.linalg.sqrtm``.

Usage::

    python benchmarks/bench_extractor.py            # 256 images of 32x32, batch 64
    python benchmarks/bench_extractor.py --quick    # 64 images
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from run_all import format_table  # the one table format of benchmarks/

from lightning_ganeval.frechet import frechet_distance
from lightning_ganeval.inception import InceptionExtractor
from lightning_ganeval.testing import cached_random_inception_weights


def _images(n: int, size: int, seed: int, blur: int) -> torch.Tensor:
    """Smooth random uint8 images; ``blur`` (the side of the low-resolution noise) sets their statistics."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, blur, blur, generator=g)
    img = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    img = img + 0.1 * torch.randn(n, 3, size, size, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def _fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets with the package's own float64 statistics and Frechet distance."""
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(
    quick: bool = False, device: str = "cpu", weights: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """Time the extractors and measure fast mode's FID change; rows in the ``benchmarks/run_all.py`` format."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    dev = torch.device(device)
    n, batch = (64, 32) if quick else (256, 64)
    path = Path(weights) if weights is not None else cached_random_inception_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not the reference weights" when running on random weights
        exact = InceptionExtractor(path, device=dev)
        fast = InceptionExtractor(path, device=dev, fast=True)
    peer = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path)
    ).to(dev)

    def peer_pool(x: torch.Tensor) -> torch.Tensor:
        # Same numerics as our exact mode: on CUDA, TF32 convolutions are on by default and would skew the check.
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            with torch.no_grad():
                return peer(x)[0]
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    extractors: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "peer": peer_pool,
        "exact": lambda x: exact(x).pool,
        "fast": lambda x: fast(x).pool,
    }
    generated = _images(n, 32, seed=1, blur=6).to(dev)
    real = _images(n, 32, seed=2, blur=8).to(dev)

    warm = generated[:2]
    for fn in extractors.values():  # thread pools, oneDNN primitive caches, cuDNN autotuning
        fn(warm)
    seconds = dict.fromkeys(extractors, 0.0)
    features: dict[str, list[torch.Tensor]] = {name: [] for name in extractors}
    names = list(extractors)
    for i, chunk in enumerate(generated.split(batch)):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate who goes first
            _sync(dev)
            start = time.perf_counter()
            out = extractors[name](chunk)
            _sync(dev)
            seconds[name] += time.perf_counter() - start
            features[name].append(out.double().cpu())
    rate = {name: n / s for name, s in seconds.items()}
    gen = {name: torch.cat(f).numpy() for name, f in features.items()}
    ref_exact = torch.cat([exact(c).pool.double().cpu() for c in real.split(batch)]).numpy()
    ref_fast = torch.cat([fast(c).pool.double().cpu() for c in real.split(batch)]).numpy()
    fid_exact = _fid(gen["exact"], ref_exact)
    fid_fast = _fid(gen["fast"], ref_fast)
    max_diff = float(np.abs(gen["exact"] - gen["peer"]).max() / np.abs(gen["peer"]).max())

    where = "CUDA" if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    size = f"{n} images 32x32 -> 299, batch {batch}, {where}"
    peer_name = "torch-fidelity FeatureExtractorInceptionV3 (float32)"
    fast_how = f"fast mode ({'bfloat16' if fast.compute_dtype == torch.bfloat16 else 'float32: no fast bf16 here'})"
    return [
        {
            "benchmark": f"extractor exact mode, {size}",
            "ours": rate["exact"],
            "peer": peer_name,
            "peer_value": rate["peer"],
            "unit": "images/s",
            "ratio": rate["exact"] / rate["peer"],
            "target": ">= 1.5x",
        },
        {
            "benchmark": f"extractor {fast_how}, {size}",
            "ours": rate["fast"],
            "peer": peer_name,
            "peer_value": rate["peer"],
            "unit": "images/s",
            "ratio": rate["fast"] / rate["peer"],
            "target": ">= 3.5x",
        },
        {
            "benchmark": f"exact-mode pool3 vs torch-fidelity, max|diff|/max|ref|, {n} images",
            "ours": max_diff,
            "peer": peer_name,
            "peer_value": 0.0,
            "unit": "relative",
            "ratio": float("nan"),
            "target": "<= 5e-4",
        },
        {
            "benchmark": f"FID fast mode vs exact mode, {n} vs {n} images (ratio - 1 = relative change)",
            "ours": fid_fast,
            "peer": "our exact mode, same images",
            "peer_value": fid_exact,
            "unit": "FID",
            "ratio": fid_fast / fid_exact,
            "target": "|ratio - 1| < 0.005",
        },
    ]


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 images instead of 256")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--weights", type=Path, default=None, help="Inception weights file (default: random)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load[0]:.2f}")
    rows = run(quick=args.quick, device=args.device, weights=args.weights)
    print(format_table(rows))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    _main()
