"""Cost of the real-data cache key against reading the real data once, on 50,000 images.

The key (:func:`lightning_ganeval.real_cache.real_cache_key`) reads 64 images at seeded positions spread over the whole
dataset, digests them with the dataset's length and the description of its transforms, ``collate_fn`` and
``image_fn``. It is computed before every real pass, hit or miss, so it must stay negligible next to the pass it
saves. The peer is one full read of the same data through the real pass's reader
(:func:`lightning_ganeval.real_images.iter_real_images`, main process, no network), the floor of any real pass.

Two datasets of 50,000 RGB images of 32 x 32 (CIFAR-10 sized):

* a ``TensorDataset`` of uint8 images in memory;
* a folder of PNG files read by torchvision's ``ImageFolder`` with ``ToTensor()`` (10 class folders).

Usage::

    python benchmarks/bench_real_key.py            # 50,000 images
    python benchmarks/bench_real_key.py --quick    # 5,000 images
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from run_all import format_table  # the one table format of benchmarks/
from torch.utils.data import DataLoader, TensorDataset

from lightning_ganeval.pixel_space import PixelSpace
from lightning_ganeval.real_cache import real_cache_key
from lightning_ganeval.real_images import iter_real_images


def _write_pngs(root: Path, images: np.ndarray) -> None:
    from PIL import Image

    for i, image in enumerate(images):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")


def _time_key(loader: DataLoader, space: PixelSpace, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        real_cache_key(loader, space=space)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _time_full_read(loader: DataLoader) -> float:
    start = time.perf_counter()
    count = sum(len(images) for images, _ in iter_real_images(loader, max_workers=0))
    assert count == len(loader.dataset)
    return time.perf_counter() - start


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Key and full-read times; rows in the ``benchmarks/run_all.py`` format (ratio = full read / key)."""
    from torchvision import datasets, transforms

    n = 5_000 if quick else 50_000
    images = np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    rows = []
    tensors = TensorDataset(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.arange(n) % 10)
    cases = [("TensorDataset uint8", DataLoader(tensors, batch_size=100), PixelSpace.from_value_range(0, 255))]
    with tempfile.TemporaryDirectory() as folder:
        _write_pngs(Path(folder), images)
        pngs = datasets.ImageFolder(folder, transform=transforms.ToTensor())
        cases.append(("PNG folder (ImageFolder)", DataLoader(pngs, batch_size=100), PixelSpace.from_value_range(0, 1)))
        for name, loader, space in cases:
            key = _time_key(loader, space, repeats=5)
            full = _time_full_read(loader)
            rows.append(
                {
                    "benchmark": f"real cache key, {n:,} images, {name}",
                    "ours": f"{key * 1e3:.1f} ms",
                    "peer": "one full read of the data",
                    "peer_value": f"{full:.1f} s",
                    "unit": "time",
                    "ratio": round(full / key, 1),
                    "target": ">= 20x",
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="5,000 images instead of 50,000")
    args = parser.parse_args()
    print(format_table(run(quick=args.quick)))


if __name__ == "__main__":
    main()
