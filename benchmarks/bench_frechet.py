"""Cost of the Fréchet distance at d = 2048: ours vs pytorch-fid and torchmetrics.

During training the real statistics are fixed, so :class:`~lightning_ganeval.frechet.FrechetReference` computes
the reference square root once and every evaluation costs two matrix products and one symmetric ``eigvalsh``.
The one-shot :func:`~lightning_ganeval.frechet.frechet_distance` (both covariances new) costs a Cholesky
factorisation, two triangular-blocked products and one ``eigvalsh``; it is also compared with the eigh-based
one-shot it replaced (a ``FrechetReference`` built per call). The peers, called as they are used:

* pytorch-fid ``calculate_frechet_distance`` (``scipy.linalg.sqrtm`` of Σ₁Σ₂, numpy float64);
* torchmetrics ``_compute_fid`` (``torch.linalg.eigvals`` of the non-symmetric Σ₁Σ₂) on float64 tensors.

All run in one process on the same statistics (full rank), interleaved repetition by repetition (so that a noisy
neighbour slows all of them alike), and the best time of each is reported (ours: 5 repetitions, the one-shot
methods and the peers: 2, as the peers take minutes per call on a small CPU). The values must agree to 1e-6
relative.

Usage::

    python benchmarks/bench_frechet.py            # d = 2048 from 4000 samples
    python benchmarks/bench_frechet.py --quick    # d = 1024, one repetition of each peer
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from run_all import format_table  # the one table format of benchmarks/

from lightning_ganeval.frechet import FrechetReference, frechet_distance


def _statistics(d: int, n: int, seed: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of n correlated samples with a decaying spectrum, roughly like pool3 features."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -3, d, dtype=torch.float64)
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5 * scales
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing + shift
    return x.mean(dim=0), torch.cov(x.T)


def _timed(fn: Callable[[], float]) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, float(value)


def run(quick: bool = False, threads: int | None = None) -> list[dict[str, Any]]:
    """Time the three Fréchet computations; rows in the ``benchmarks/run_all.py`` format (ratio = speed-up).

    Args:
        quick: d = 1024 and one repetition of each peer.
        threads: Limit torch and the numpy/scipy BLAS to this many threads (default: the libraries' defaults).
            On a shared, oversubscribed machine one thread gives far steadier timings.
    """
    if threads is None:
        return _run(quick)
    from threadpoolctl import threadpool_limits

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            return _run(quick, suffix=f", {threads} thread{'s' if threads > 1 else ''}")
    finally:
        torch.set_num_threads(saved)


def _run(quick: bool, suffix: str = "") -> list[dict[str, Any]]:
    from pytorch_fid.fid_score import calculate_frechet_distance
    from torchmetrics.image.fid import _compute_fid

    # The peers take minutes per call at d=2048 on a small CPU: fewer repetitions for them, no warm-up needed.
    d, n, repeats, peer_repeats = (1024, 2000, 3, 1) if quick else (2048, 4000, 5, 2)
    mu_ref, sigma_ref = _statistics(d, n, seed=0, shift=0.0)
    mu_gen, sigma_gen = _statistics(d, n, seed=1, shift=0.01)
    np_args = [t.numpy() for t in (mu_gen, sigma_gen, mu_ref, sigma_ref)]

    start = time.perf_counter()
    reference = FrechetReference(mu_ref, sigma_ref)
    setup_time = time.perf_counter() - start

    def pytorch_fid() -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's `disp` deprecation, raised inside pytorch-fid
            return float(calculate_frechet_distance(*np_args))

    methods: dict[str, Callable[[], float]] = {
        "ours": lambda: reference.distance(mu_gen, sigma_gen),
        "ours_one_shot": lambda: frechet_distance(mu_gen, sigma_gen, mu_ref, sigma_ref),
        "eigh_one_shot": lambda: FrechetReference(mu_ref, sigma_ref).distance(mu_gen, sigma_gen),
        "pytorch_fid": pytorch_fid,
        "torchmetrics": lambda: float(_compute_fid(mu_gen, sigma_gen, mu_ref, sigma_ref)),
    }
    counts = dict.fromkeys(methods, peer_repeats) | {"ours": repeats}
    times: dict[str, list[float]] = {name: [] for name in methods}
    values: dict[str, float] = {"ours": methods["ours"]()}  # warm-up: thread pools, first-call allocations
    for round_ in range(max(counts.values())):
        for name, fn in methods.items():  # interleaved, so that a noisy neighbour slows every method alike
            if round_ < counts[name]:
                elapsed, values[name] = _timed(fn)
                times[name].append(elapsed)
    for name, value in values.items():
        if abs(value - values["pytorch_fid"]) > 1e-6 * abs(values["pytorch_fid"]):
            raise RuntimeError(f"{name} gives {value!r}, pytorch-fid {values['pytorch_fid']!r}: not the same FID")

    best = {name: min(ts) for name, ts in times.items()}
    size = f"d={d}, stats from {n} samples{suffix}"

    def one_shot_row(peer_key: str, peer: str, target: str) -> dict[str, Any]:
        return {
            "benchmark": f"Frechet one-shot (no cached reference), {size}",
            "ours": best["ours_one_shot"],
            "peer": peer,
            "peer_value": best[peer_key],
            "unit": "s",
            "ratio": best[peer_key] / best["ours_one_shot"],
            "target": target,
        }

    return [
        {
            "benchmark": f"Frechet per evaluation, cached reference, {size}",
            "ours": best["ours"],
            "peer": "pytorch-fid calculate_frechet_distance (scipy sqrtm)",
            "peer_value": best["pytorch_fid"],
            "unit": "s",
            "ratio": best["pytorch_fid"] / best["ours"],
            "target": ">= 20x faster",
        },
        {
            "benchmark": f"Frechet per evaluation, cached reference, {size}",
            "ours": best["ours"],
            "peer": "torchmetrics _compute_fid (eigvals, float64)",
            "peer_value": best["torchmetrics"],
            "unit": "s",
            "ratio": best["torchmetrics"] / best["ours"],
            "target": ">= 4x faster",
        },
        one_shot_row("pytorch_fid", "pytorch-fid calculate_frechet_distance (scipy sqrtm)", ">= 8x faster"),
        one_shot_row("torchmetrics", "torchmetrics _compute_fid (eigvals, float64)", ">= 2x faster"),
        one_shot_row("eigh_one_shot", "eigh-based one-shot (FrechetReference per call, before)", "-"),
        {
            "benchmark": f"FrechetReference setup (once per training run), {size}",
            "ours": setup_time,
            "peer": "-",
            "peer_value": float("nan"),
            "unit": "s",
            "ratio": float("nan"),
            "target": "-",
        },
    ]


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="d=1024 and fewer repetitions")
    parser.add_argument("--threads", type=int, default=None, help="limit torch and BLAS threads (default: all)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads")
    rows = run(quick=args.quick, threads=args.threads)
    print(format_table(rows))


if __name__ == "__main__":
    _main()
