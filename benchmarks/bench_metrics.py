"""KID and precision/recall compute time on stored features: ours vs torch-fidelity's functions.

Both sides get the same random float32 features (n per side, d = 2048, non-negative like Inception pool3):

* KID, 100 subsets of 1000 (quick: 20), degree-3 polynomial kernel: ours
  (:func:`~lightning_ganeval.metrics.kid.kid_from_features`, float64) vs torch-fidelity's
  ``kid_features_to_metric`` (numpy, in the features' dtype: float32, always on the CPU). The subset draws
  differ (torch.Generator vs RandomState), so the values must only agree within 5 combined standard errors.
* Precision/recall with k = 3: ours (``precision_recall_density_coverage``, float64 distances, which also
  yields density and coverage) vs torch-fidelity's ``prc_features_to_metric``
  (float32 ``torch.cdist`` on the features' device). Precision and recall must agree to 0.1% (float32 rounding
  can flip a sample lying on a ball's edge).

On CUDA (when available) the same comparisons run with the features on the GPU; torch-fidelity's KID stays on
the CPU (it converts to numpy), so its row compares our GPU time with its CPU time. One timed call per method
at full size (each takes tens of seconds on a small CPU), after an untimed warm-up on a small problem.

Usage::

    python benchmarks/bench_metrics.py            # n = 10,000 per side
    python benchmarks/bench_metrics.py --quick    # n = 2,000 per side, 20 KID subsets
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from run_all import format_table  # the one table format of benchmarks/

from lightning_ganeval.metrics.kid import kid_from_features
from lightning_ganeval.metrics.precision_recall import precision_recall_density_coverage


def _features(n: int, d: int, seed: int, shift: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g) + shift).abs()


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, value


def _row(name: str, ours: float, peer: str, peer_value: float) -> dict[str, Any]:
    return {
        "benchmark": name,
        "ours": ours,
        "peer": peer,
        "peer_value": peer_value,
        "unit": "s",
        "ratio": peer_value / ours,
        "target": "-",
    }


def _run_on(device: torch.device, quick: bool) -> list[dict[str, Any]]:
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    n, d, subsets, subset_size, k = (2000, 2048, 20, 1000, 3) if quick else (10_000, 2048, 100, 1000, 3)
    real = _features(n, d, seed=0, shift=0.0).to(device)
    fake = _features(n, d, seed=1, shift=0.05).to(device)
    where = "CUDA" if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    size = f"n={n} per side, d={d}, {where}"

    # Warm-up: thread pools, cuBLAS handles, first-call allocations.
    small_r, small_f = real[:200], fake[:200]
    kid_from_features(small_r, small_f, subsets=2, subset_size=100)
    precision_recall_density_coverage(small_r, small_f, k=k)
    prc_features_to_metric(small_f, small_r, prc_neighborhood=k, prc_batch_size=10000, verbose=False)

    t_kid, (kid_mean, kid_std) = _timed(
        lambda: kid_from_features(real, fake, subsets=subsets, subset_size=subset_size, seed=0), device
    )
    t_kid_peer, peer_kid = _timed(
        lambda: kid_features_to_metric(
            real, fake, kid_subsets=subsets, kid_subset_size=subset_size, rng_seed=0, verbose=False
        ),
        device,
    )
    t_prdc, ours_pr = _timed(lambda: precision_recall_density_coverage(real, fake, k=k), device)
    t_prc_peer, peer_pr = _timed(
        lambda: prc_features_to_metric(fake, real, prc_neighborhood=k, prc_batch_size=10000, verbose=False), device
    )

    peer_mean, peer_std = peer_kid[KEY_METRIC_KID_MEAN], peer_kid[KEY_METRIC_KID_STD]
    allowed = 5 * math.hypot(kid_std, peer_std) / math.sqrt(subsets)
    if abs(kid_mean - peer_mean) > allowed:
        raise RuntimeError(f"KID {kid_mean!r} vs torch-fidelity {peer_mean!r}: more than 5 standard errors apart")
    for key in ("precision", "recall"):
        if abs(ours_pr[key] - peer_pr[key]) > 1e-3:
            raise RuntimeError(f"{key} {ours_pr[key]!r} vs torch-fidelity {peer_pr[key]!r}: not the same")

    kid_peer = "torch-fidelity kid_features_to_metric (numpy float32"
    kid_peer += ", on the CPU)" if device.type == "cuda" else ")"
    return [
        _row(f"KID {subsets} subsets of {subset_size}, {size}", t_kid, kid_peer, t_kid_peer),
        _row(
            f"Precision/recall k={k} (ours: + density/coverage), {size}",
            t_prdc,
            "torch-fidelity prc_features_to_metric (float32 cdist)",
            t_prc_peer,
        ),
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Time KID and precision/recall, ours vs torch-fidelity, on the CPU and (when available) on CUDA.

    Rows follow the ``benchmarks/run_all.py`` format; ratio = peer time / our time (> 1: we are faster).

    Args:
        quick: n = 2,000 per side and 20 KID subsets instead of 10,000 and 100.
    """
    rows = _run_on(torch.device("cpu"), quick)
    if torch.cuda.is_available():
        rows += [{**row, "benchmark": f"{row['benchmark']} [cuda]"} for row in _run_on(torch.device("cuda"), quick)]
    return rows


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n = 2,000 per side, 20 KID subsets")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(format_table(run(quick=args.quick)))


if __name__ == "__main__":
    _main()
