"""Random Inception weights for tests and smoke runs.

The real TensorFlow 2015-12-05 weights cannot be fetched everywhere (CI machines, air-gapped clusters). This
module writes a file with the same keys and shapes as ``pt_inception-2015-12-05-6726825d.pth`` but seeded random
values. BatchNorm running statistics are recalibrated on random noise images of many scales so that, in eval mode,
the features vary with the input instead of collapsing or blowing up, and the final layer is projected and scaled
so that the logits have a spread of a few units (:data:`LOGIT_STD`) on such images: the softmax is peaked but
never underflows, so the Inception Score of torch-fidelity and torchmetrics stays finite.

Scores computed with such a file are **not** comparable with published numbers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from unittest import mock

import torch
from torch import nn

__all__ = [
    "LOGIT_STD",
    "build_random_inception_state_dict",
    "cached_random_inception_weights",
    "write_random_inception_weights",
]


_INPUT_SIZE = 299
_NOISE_GRIDS = (1, 4, 8, 16, 32, 64, 128, 299)
"""Side lengths of the uniform noise that calibration images are made of: 1 is a flat colour, 299 is noise at
every input pixel. Tests and smoke runs feed noise images of all these scales, which the network resizes to 299."""

LOGIT_STD = 3.0
"""Target standard deviation of the random weights' logits on the calibration images."""


def _random_images(generator: torch.Generator, n: int) -> torch.Tensor:
    """299 x 299 uint8 images of uniform noise on grids from 1 x 1 to 299 x 299, bilinearly upsampled.

    Consecutive images cycle through the grid sizes, so that every batch mixes smooth and rough inputs and the
    BatchNorm statistics (the mean of per-batch statistics) cover all of them.
    """
    images = []
    for i in range(n):
        grid = _NOISE_GRIDS[i % len(_NOISE_GRIDS)]
        low = torch.rand(1, 3, grid, grid, generator=generator)
        images.append(nn.functional.interpolate(low, size=(_INPUT_SIZE, _INPUT_SIZE), mode="bilinear"))
    return (torch.cat(images).clamp(0, 1) * 255).round().to(torch.uint8)


def build_random_inception_state_dict(seed: int = 0, calibration_images: int = 24) -> dict[str, torch.Tensor]:
    """Build a seeded random state dict in the FID Inception v3 key layout.

    Args:
        seed: Seed for the weights and the calibration images.
        calibration_images: Number of random images used to set the BatchNorm running statistics; 16 more set
            the final layer.

    Returns:
        A state dict that ``torch_fidelity``'s ``FeatureExtractorInceptionV3`` and ``pytorch_fid``'s
        ``FIDInceptionV3`` load with ``strict=True``.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    generator = torch.Generator().manual_seed(seed)
    # The torch-fidelity constructor insists on loading weights; build the bare architecture instead.
    with (
        mock.patch.object(tfi, "load_state_dict_from_url", return_value={}),
        mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", return_value=None),
        torch.random.fork_rng(devices=[]),
    ):
        torch.manual_seed(seed)
        model = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                nn.init.uniform_(module.weight, 0.8, 1.2)
                nn.init.normal_(module.bias, 0.0, 0.1)
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the calibration batches

    # Train mode makes every BatchNorm normalise with batch statistics and record them; a single pass thus
    # calibrates layer after layer on activations that are already normalised upstream.
    model.train()
    with torch.no_grad():
        batch = len(_NOISE_GRIDS)
        for start in range(0, calibration_images, batch):
            model(_random_images(generator, min(batch, calibration_images - start)))
        model.eval()
        pool = torch.cat([model(_random_images(generator, batch))[0].double() for _ in range(2)])
        # pool3 features are non-negative averages with a large common part; a random classifier would turn
        # it into the same large logit offsets for every image (std in the hundreds: softmax underflows to
        # exact zeros and the reference IS code returns NaN). Rows orthogonal to the mean feature vector keep
        # only the part that varies with the input; the scale then sets the logits' spread.
        fc_weight = torch.randn(1008, 2048, generator=generator, dtype=torch.float64)
        mean_pool = pool.mean(dim=0)
        fc_weight -= torch.outer(fc_weight @ mean_pool, mean_pool) / mean_pool.dot(mean_pool).clamp_min(1e-300)
        logits = pool @ fc_weight.T
        fc_weight *= LOGIT_STD / logits.std().clamp_min(1e-12)
        model.fc.weight.copy_(fc_weight.float())
        model.fc.bias.copy_(0.1 * torch.randn(1008, generator=generator))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    state = model.state_dict()
    # The published file predates BatchNorm's counter; keep the same key set.
    return {k: v.clone() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def write_random_inception_weights(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a seeded random-weight file in the FID Inception layout and return its path.

    The file is written to a temporary name and renamed, so a reader never sees half a file.

    Args:
        path: Destination file.
        seed: Seed for the weights.

    Returns:
        The destination as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(build_random_inception_state_dict(seed=seed), tmp)
    os.replace(tmp, path)
    return path


def cached_random_inception_weights(seed: int = 0, directory: str | os.PathLike[str] | None = None) -> Path:
    """The random-weight file for ``seed``, written once into ``directory`` and reused afterwards.

    Args:
        seed: Seed for the weights.
        directory: Where the file lives; default ``<tempdir>/lightning-ganeval-random`` (a name that cannot
            shadow the package when a script runs from the temporary directory).

    Returns:
        Path of ``random-inception-seed<seed>.pth`` in ``directory``.
    """
    root = Path(directory) if directory is not None else Path(tempfile.gettempdir()) / "lightning-ganeval-random"
    path = root / f"random-inception-seed{seed}.pth"
    if not path.is_file():
        write_random_inception_weights(path, seed=seed)
    return path
