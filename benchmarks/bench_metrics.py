"""KID and precision/recall compute time on stored features: ours vs torch-fidelity's functions.

Both sides get the same random float32 features (n per side, d = 2048, non-negative like Inception pool3):

* KID, 100 subsets of 1000 (quick: 20), degree-3 polynomial kernel: ours
  (:func:`~lightning_ganeval.metrics.kid.kid_from_features`; float32 products of centred rows, float64 kernel
  sums, one Gram matrix of the drawn rows or one per subset, whichever costs less) vs torch-fidelity's
  ``kid_features_to_metric`` (numpy, in the features' dtype: float32, always on the CPU). The subset draws
  differ (torch.Generator vs RandomState), so the values must only agree within 5 combined standard errors;
  our float32 default must agree with our ``dtype=torch.float64`` path within 1e-5 of the mean kernel value.
* Precision/recall with k = 3: ours (``precision_recall_density_coverage``: float32 distances of centred rows,
  lower triangle only for the radii, comparisons within the float32 error bound of a radius redone in float64;
  it also yields density and coverage) vs torch-fidelity's ``prc_features_to_metric`` (float32
  ``torch.cdist`` on the features' device). Our four values must equal those of ``dtype=torch.float64``
  exactly; precision and recall must agree with torch-fidelity's to 0.1% (its float32 rounding can flip a
  sample lying on a ball's edge).

The ``dtype=torch.float64`` rows time our float64 option (the only path before issue 17) against the same peer.
Every method runs ``repeats`` times, interleaved (ours, peer, ours, peer, ...) so that a change of the load of
a shared machine hits both alike, and the best time of each is reported. On CUDA (when available) the same
comparisons run with the features on the GPU; torch-fidelity's KID stays on the CPU (it converts to numpy), so
its row compares our GPU time with its CPU time.

Usage::

    python benchmarks/bench_metrics.py                  # n = 10,000 per side, 3 repeats
    python benchmarks/bench_metrics.py --quick          # n = 2,000 per side, 20 KID subsets, 2 repeats
    python benchmarks/bench_metrics.py --n 5000 --repeats 2
"""

from __future__ import annotations

import argparse
import math
import os
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


def _interleaved_best(methods: dict[str, Callable[[], Any]], repeats: int, device: torch.device) -> dict:
    """{name: (best seconds, last value)} over ``repeats`` interleaved rounds of every method.

    Each call is printed with the 1-minute load average before and after it (the machine is shared: a ratio
    means something only between calls made under about the same load).
    """
    best: dict[str, float] = dict.fromkeys(methods, math.inf)
    values: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            load = os.getloadavg()[0]
            seconds, values[name] = _timed(fn, device)
            print(f"  {name:8s} {seconds:7.2f} s   load {load:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
            best[name] = min(best[name], seconds)
    return {name: (best[name], values[name]) for name in methods}


def _mean_cross_kernel(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The mean of k(x, y) over 1000 x 1000 rows: the scale of the kernel means whose difference is KID."""
    x, y = real[:1000].double(), fake[:1000].double()
    return float(((x @ y.T) / x.shape[1] + 1).pow(3).mean())


def _run_on(
    device: torch.device, quick: bool, n: int | None, repeats: int, only: str | None = None, with_float64: bool = True
) -> list[dict[str, Any]]:
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    d, subset_size, k = 2048, 1000, 3
    n_default, subsets = (2000, 20) if quick else (10_000, 100)
    n = n or n_default
    real = _features(n, d, seed=0, shift=0.0).to(device)
    fake = _features(n, d, seed=1, shift=0.05).to(device)
    where = "CUDA" if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    size = f"n={n} per side, d={d}, {where}"

    # Warm-up: thread pools, cuBLAS handles, first-call allocations.
    small_r, small_f = real[:200], fake[:200]
    kid_from_features(small_r, small_f, subsets=2, subset_size=100)
    precision_recall_density_coverage(small_r, small_f, k=k)
    prc_features_to_metric(small_f, small_r, prc_neighborhood=k, prc_batch_size=10000, verbose=False)

    def ours_kid(dtype: torch.dtype) -> Callable[[], Any]:
        return lambda: kid_from_features(real, fake, subsets=subsets, subset_size=subset_size, seed=0, dtype=dtype)

    def ours_pr(dtype: torch.dtype) -> Callable[[], Any]:
        return lambda: precision_recall_density_coverage(real, fake, k=k, dtype=dtype)

    rows: list[dict[str, Any]] = []
    if only in (None, "kid"):
        kid_methods = {
            "ours": ours_kid(torch.float32),
            "peer": lambda: kid_features_to_metric(
                real, fake, kid_subsets=subsets, kid_subset_size=subset_size, rng_seed=0, verbose=False
            ),
        }
        if with_float64:
            kid_methods["ours64"] = ours_kid(torch.float64)
        print(f"KID, {size}:")
        kid_times = _interleaved_best(kid_methods, repeats, device)
        kid_mean, kid_std = kid_times["ours"][1]
        peer_kid = kid_times["peer"][1]
        peer_mean, peer_std = peer_kid[KEY_METRIC_KID_MEAN], peer_kid[KEY_METRIC_KID_STD]
        allowed = 5 * math.hypot(kid_std, peer_std) / math.sqrt(subsets)
        if abs(kid_mean - peer_mean) > allowed:
            raise RuntimeError(f"KID {kid_mean!r} vs torch-fidelity {peer_mean!r}: more than 5 standard errors apart")
        kid_peer = "torch-fidelity kid_features_to_metric (numpy float32"
        kid_peer += ", on the CPU)" if device.type == "cuda" else ")"
        kid_name = f"KID {subsets} subsets of {subset_size}, {size}"
        rows.append(_row(kid_name, kid_times["ours"][0], kid_peer, kid_times["peer"][0]))
        if with_float64:
            kid64_mean = kid_times["ours64"][1][0]
            scale = _mean_cross_kernel(real, fake)
            if abs(kid_mean - kid64_mean) > 1e-5 * scale:
                raise RuntimeError(f"KID float32 {kid_mean!r} vs float64 {kid64_mean!r}: beyond 1e-5 x {scale:.4g}")
            print(
                f"  KID float32 - float64 = {kid_mean - kid64_mean:.3g}"
                f" ({(kid_mean - kid64_mean) / scale:.2g} of the kernel scale {scale:.4g})"
            )
            rows.append(
                _row(f"  {kid_name}, ours dtype=float64", kid_times["ours64"][0], kid_peer, kid_times["peer"][0])
            )
    if only in (None, "pr"):
        pr_methods = {
            "ours": ours_pr(torch.float32),
            "peer": lambda: prc_features_to_metric(fake, real, prc_neighborhood=k, prc_batch_size=10000, verbose=False),
        }
        if with_float64:
            pr_methods["ours64"] = ours_pr(torch.float64)
        print(f"Precision/recall, {size}:")
        pr_times = _interleaved_best(pr_methods, repeats, device)
        ours_pr_value, peer_pr = pr_times["ours"][1], pr_times["peer"][1]
        if with_float64 and ours_pr_value != pr_times["ours64"][1]:
            raise RuntimeError(f"precision/recall float32 {ours_pr_value} vs float64 {pr_times['ours64'][1]}: differ")
        for key in ("precision", "recall"):
            if abs(ours_pr_value[key] - peer_pr[key]) > 1e-3:
                raise RuntimeError(f"{key} {ours_pr_value[key]!r} vs torch-fidelity {peer_pr[key]!r}: not the same")
        pr_peer = "torch-fidelity prc_features_to_metric (float32 cdist)"
        pr_name = f"Precision/recall k={k} (ours: + density/coverage), {size}"
        rows.append(_row(pr_name, pr_times["ours"][0], pr_peer, pr_times["peer"][0]))
        if with_float64:
            rows.append(_row(f"  {pr_name}, ours dtype=float64", pr_times["ours64"][0], pr_peer, pr_times["peer"][0]))
    return rows


def run(
    quick: bool = False,
    n: int | None = None,
    repeats: int | None = None,
    only: str | None = None,
    with_float64: bool = True,
) -> list[dict[str, Any]]:
    """Time KID and precision/recall, ours vs torch-fidelity, on the CPU and (when available) on CUDA.

    Rows follow the ``benchmarks/run_all.py`` format; ratio = peer time / our time (> 1: we are faster).

    Args:
        quick: n = 2,000 per side, 20 KID subsets and 2 repeats instead of 10,000, 100 and 3.
        n: Rows per side instead of the default of the mode.
        repeats: Interleaved timed calls of each method (the best is reported).
        only: ``"kid"`` or ``"pr"`` for one of the two benchmarks.
        with_float64: Also time (and check against) our ``dtype=torch.float64`` path.
    """
    repeats = repeats or (2 if quick else 3)
    rows = _run_on(torch.device("cpu"), quick, n, repeats, only, with_float64)
    if torch.cuda.is_available():
        cuda_rows = _run_on(torch.device("cuda"), quick, n, repeats, only, with_float64)
        rows += [{**row, "benchmark": f"{row['benchmark']} [cuda]"} for row in cuda_rows]
    return rows


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n = 2,000 per side, 20 KID subsets, 2 repeats")
    parser.add_argument("--n", type=int, default=None, help="rows per side (default 10,000; quick 2,000)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved timed calls (default 3; quick 2)")
    parser.add_argument("--only", choices=("kid", "pr"), default=None, help="one of the two benchmarks")
    parser.add_argument("--no-float64", action="store_true", help="skip our dtype=torch.float64 path")
    args = parser.parse_args()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average before: {load}")
    rows = run(quick=args.quick, n=args.n, repeats=args.repeats, only=args.only, with_float64=not args.no_float64)
    print(format_table(rows))
    print(f"load average after: {', '.join(f'{value:.1f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    _main()
