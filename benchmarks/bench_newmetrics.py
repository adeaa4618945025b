"""CMMD and Vendi compute time on stored features, ours vs transcriptions of the reference code; CLIP throughput.

* CMMD: :func:`~lightning_ganeval.metrics.cmmd.cmmd_from_features` (rows normalised, float64 RBF sums in blocks of
  4096 rows) vs a NumPy transcription of google-research ``cmmd/distance.py`` (three full n × n float64 kernel
  matrices), n per side, d = 768 (CLIP ViT-L/14 embeddings). The values must agree to 1e-6 relative.
* Vendi: :func:`~lightning_ganeval.metrics.vendi.vendi_score` (d × d dual, ``torch.linalg.eigvalsh``) vs a
  transcription of ``vendi_score.score_X`` (n × n kernel, ``scipy.linalg.eigvalsh``), d = 2048 (Inception pool3,
  non-negative). The values must agree to 1e-6 relative.
* CLIP: images per second of :class:`~lightning_ganeval.clip.CLIPExtractor` on random weights in the official
  layout, reference preprocessing (Pillow resize) included, 64 x 64 uint8 inputs. ``--clip-large`` times the real
  ViT-L/14-336 shapes (writes a 1.7 GB random file to a temporary folder first); the default is the tiny layout,
  which only measures the preprocessing and the framework overhead.

Usage::

    python benchmarks/bench_newmetrics.py             # n = 5,000 per side
    python benchmarks/bench_newmetrics.py --quick     # n = 1,000
    python benchmarks/bench_newmetrics.py --clip-large
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
from run_all import format_table  # the one table format of benchmarks/

from lightning_ganeval.metrics.cmmd import cmmd_from_features
from lightning_ganeval.metrics.vendi import vendi_score


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, value


def _reference_cmmd(x: np.ndarray, y: np.ndarray) -> float:
    """google-research cmmd/distance.py ``mmd`` in NumPy (float64), after the embedding step's normalisation."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    xs, ys = np.diag(x @ x.T), np.diag(y @ y.T)
    gamma = 1 / (2 * 10**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + xs[:, None] + xs[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + xs[:, None] + ys[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + ys[:, None] + ys[None, :])))
    return 1000 * (k_xx + k_yy - 2 * k_xy)


def _reference_vendi(x: np.ndarray) -> float:
    """vendi_score.score_X (q = 1): n x n cosine kernel."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = scipy.linalg.eigvalsh(x @ x.T / x.shape[0])
    p = w[w > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _row(name: str, ours: float, peer: str, peer_value: float, unit: str = "s") -> dict[str, Any]:
    return {
        "benchmark": name,
        "ours": ours,
        "peer": peer,
        "peer_value": peer_value,
        "unit": unit,
        "ratio": peer_value / ours if peer_value == peer_value else float("nan"),
        "target": "-",
    }


def _metrics(device: torch.device, n: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(n, 768, generator=g)
    fake = torch.randn(n, 768, generator=g) + 0.05
    pool = (torch.randn(n, 2048, generator=g) + 0.3).relu()
    where = "CUDA" if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    cmmd_from_features(real[:100].to(device), fake[:100].to(device))  # warm-up
    t_cmmd, value = _timed(lambda: cmmd_from_features(real.to(device), fake.to(device)), device)
    t_ref, expected = _timed(lambda: _reference_cmmd(real.double().numpy(), fake.double().numpy()), torch.device("cpu"))
    if abs(value - expected) > 1e-6 * abs(expected):
        raise RuntimeError(f"CMMD {value!r} vs the reference transcription {expected!r}: not the same")
    t_vendi, v = _timed(lambda: vendi_score(pool.to(device)), device)
    t_vref, v_ref = _timed(lambda: _reference_vendi(pool.double().numpy()), torch.device("cpu"))
    if abs(v - v_ref) > 1e-6 * v_ref:
        raise RuntimeError(f"Vendi {v!r} vs the n x n definition {v_ref!r}: not the same")
    return [
        _row(f"CMMD n={n} per side, d=768, {where}", t_cmmd, "distance.py in NumPy (n x n float64)", t_ref),
        _row(f"Vendi n={n}, d=2048, {where}", t_vendi, "vendi_score.score_X (n x n eigvalsh)", t_vref),
    ]


def _clip(large: bool) -> list[dict[str, Any]]:
    from lightning_ganeval.clip import CLIPExtractor
    from lightning_ganeval.testing import write_random_clip_weights

    size = "large" if large else "tiny"
    count = 4 if large else 32
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = write_random_clip_weights(Path(folder) / "pytorch_model.bin", size=size)
        net = CLIPExtractor(weights, device="cpu")
        images = torch.randint(0, 256, (count, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator())
        net(images[:2])  # warm-up
        seconds, _ = _timed(lambda: net(images), torch.device("cpu"))
        t_pre, _ = _timed(lambda: net.preprocess(images), torch.device("cpu"))
    label = "ViT-L/14-336 shapes" if large else "tiny layout (preprocessing + overhead)"
    threads = torch.get_num_threads()
    return [
        _row(f"CLIPExtractor {label}, 64 px in, CPU {threads} threads", count / seconds, "-", float("nan"), "img/s"),
        _row(
            f"CLIP reference preprocessing alone (Pillow), CPU {threads} threads",
            count / t_pre,
            "-",
            float("nan"),
            "img/s",
        ),
    ]


def run(quick: bool = False, clip_large: bool = False) -> list[dict[str, Any]]:
    """CMMD and Vendi vs the reference transcriptions, on the CPU and (when available) CUDA; CLIP throughput.

    Rows follow the ``benchmarks/run_all.py`` format; ratio = peer time / our time (> 1: we are faster).
    """
    n = 1000 if quick else 5000
    rows = _metrics(torch.device("cpu"), n)
    if torch.cuda.is_available():
        rows += [{**r, "benchmark": f"{r['benchmark']} [cuda]"} for r in _metrics(torch.device("cuda"), n)]
    try:
        rows += _clip(clip_large)
    except ImportError as err:
        rows.append({"benchmark": "CLIPExtractor", "error": f"needs transformers: {err}"})
    return rows


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n = 1,000 instead of 5,000")
    parser.add_argument("--clip-large", action="store_true", help="time CLIP with the ViT-L/14-336 shapes")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(format_table(run(quick=args.quick, clip_large=args.clip_large)))


if __name__ == "__main__":
    _main()
