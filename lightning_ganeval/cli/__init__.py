"""The command line: FID, KID, IS, precision/recall, CMMD, Vendi and memorization of image folders.

::

    lightning-ganeval stats real/ -o real.npz       # FID statistics of a folder (also read by pytorch-fid)
    lightning-ganeval fid generated/ real.npz       # FID of a folder against a folder or a statistics file
    lightning-ganeval kid generated/ real/          # KID (per-sample features: folders only)
    lightning-ganeval is generated/                 # Inception Score
    lightning-ganeval pr generated/ real/           # precision, recall, density, coverage
    lightning-ganeval cmmd generated/ real/         # CMMD on CLIP ViT-L/14-336 embeddings (needs transformers)
    lightning-ganeval vendi generated/              # Vendi score (diversity) on Inception pool3 features
    lightning-ganeval memorization generated/ train/ --test test/   # AuthPct, C_T, memorised fraction + grid
    torchrun --nproc-per-node=8 -m lightning_ganeval fid generated/ real/

``python -m lightning_ganeval`` is the same program. It is a client of the library: each metric command is a
registered metric (:mod:`lightning_ganeval.metrics.registry`; its constructor options are the command's flags), the
reference folder B goes through the callbacks' one real pass
(:meth:`~lightning_ganeval.evaluator.Evaluator.prepare_real`), the evaluated folder A through the Evaluator's
per-batch step (:meth:`~lightning_ganeval.evaluator.Evaluator.evaluate_images`), and the metric unit's
``compute()`` gives the numbers: the same extractor, conversion, accumulators and math as in training.

Modules: :mod:`~lightning_ganeval.cli.folders` (which files a folder holds, decoding them),
:mod:`~lightning_ganeval.cli.arguments` (the parser, built from the registry), :mod:`~lightning_ganeval.cli.setup`
(device, process group, network, statistics files), :mod:`~lightning_ganeval.cli.commands` (running a command),
:mod:`~lightning_ganeval.cli.program` (``main``), :mod:`~lightning_ganeval.cli.messages` (one-line messages).

Every result has a ``files`` line: the images read from each folder and the entries skipped, by reason. Images of
different sizes may share a folder: a batch is split into groups of one size, each group one forward pass (the
network resizes every image on its own, so the features do not depend on the grouping). Memory stays flat in the
number of images for FID and IS; KID, precision/recall, CMMD and memorization keep the feature rows (N x d float32
on the CPU), as they need them.

Under ``torchrun`` each process reads the files ``rank, rank + W, ...`` (its own share, no duplicates), on
``cuda:LOCAL_RANK`` with NCCL or on the CPU with gloo, and the metrics merge exactly as under DDP training. An
unreadable file on one process stops every process (:func:`lightning_ganeval.distributed.agree`). Only rank 0
prints and writes.

Exit status: 0 on success, 2 on bad input (a missing or empty folder, an unreadable image, a bad option, a
statistics file where per-sample features are needed, a weights or statistics file that cannot be used), reported
as one line on stderr that names the file or the flag. Library messages are translated to the flags of the
command line (``--inception-weights``, not ``inception_weights=``), and library warnings are one line each.

The package imports only the standard library at the top: ``--help`` and the errors found in the arguments and
the folders answer before torch (and numpy, Pillow, torchmetrics, timm) is imported.
"""

from lightning_ganeval.cli.arguments import build_parser
from lightning_ganeval.cli.folders import (
    IMAGE_SUFFIXES,
    ImageFolderDataset,
    ImageListing,
    list_images,
    read_image,
    scan_images,
)
from lightning_ganeval.cli.messages import InputError
from lightning_ganeval.cli.program import main

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFolderDataset",
    "ImageListing",
    "InputError",
    "build_parser",
    "list_images",
    "main",
    "read_image",
    "scan_images",
]
