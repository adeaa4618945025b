"""Running a command: folders -> datasets -> loaders -> the real pass and the Evaluator -> the metric's ``compute()``.

A metric command is one function for every registered metric (:func:`run_metric`): the reference folder B goes
through :meth:`Evaluator.prepare_real <lightning_ganeval.evaluator.Evaluator.prepare_real>` (the callbacks' one
real pass; a ``.npz`` stands for moments), the evaluated folder A through
:meth:`Evaluator.evaluate_images <lightning_ganeval.evaluator.Evaluator.evaluate_images>` (the per-batch step of
:meth:`~lightning_ganeval.evaluator.Evaluator.evaluate`: conversion, one forward per network, the metric's
``update``), and the registered unit's ``compute()`` gives the numbers. Sharding under torchrun, the merge over
ranks and "fail on every rank if one failed" are theirs. ``stats`` is the real pass alone.

The checks here answer before torch is imported: the folders exist and hold images, and each metric gets enough
of them for its options (:data:`_CHECKS`), in the flags' terms.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_ganeval.cli import setup
from lightning_ganeval.cli.folders import (
    IMAGE_SUFFIXES,
    FolderImages,
    ImageFolderDataset,
    ImageListing,
    as_list,
    describe_skipped,
    scan_images,
)
from lightning_ganeval.cli.messages import InputError, translate
from lightning_ganeval.metrics.registry import MetricEntry

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from lightning_ganeval.pixel_space import PixelSpace

__all__ = ["Session", "Source", "run_metric", "run_stats"]


# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Source:
    """One positional input: an image folder (``files``) or a statistics file (``files`` is None)."""

    text: str
    argument: str
    files: list[Path] | None
    listing: ImageListing | None = None

    @property
    def is_stats(self) -> bool:
        return self.files is None

    def counts(self) -> dict[str, Any]:
        """What was read of the folder and what was skipped, for the ``files`` line and the JSON output."""
        assert self.files is not None
        assert self.listing is not None
        return {
            "read": len(self.files),
            "found": len(self.listing.files),
            "skipped": sum(self.listing.skipped.values()),
            "skipped_by_reason": dict(sorted(self.listing.skipped.items())),
        }


def source(text: str, argument: str, command: str, *, allow_stats: bool, limit: int | None) -> Source:
    """Check one input (exists, a folder with images or, if allowed, a ``.npz``) and list its images."""
    path = Path(text)
    if not path.exists():
        raise InputError(f"{argument}: {text!r} does not exist.")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise InputError(f"{argument}: {text!r} is a file, not an image folder or a .npz statistics file.")
        if not allow_stats:
            raise InputError(
                f"{argument}: {text!r} is a statistics file, but `{command}` compares per-sample features; "
                "give the image folder instead (only `fid` and `stats` read .npz files)."
            )
        return Source(text, argument, None)
    if not path.is_dir():
        raise InputError(f"{argument}: {text!r} is neither a folder nor a .npz statistics file.")
    try:
        listing = scan_images(path)
    except OSError as err:
        raise InputError(f"{argument}: cannot list folder {text!r} ({err}).") from err
    if not listing.files:
        skipped = describe_skipped(listing.skipped)
        raise InputError(
            f"{argument}: no images in folder {text!r} (searched recursively for {', '.join(IMAGE_SUFFIXES)} files"
            f"{'; skipped ' + skipped if skipped else ''})."
        )
    files = listing.files if limit is None else listing.files[:limit]
    return Source(text, argument, files, listing)


def need(source: Source, minimum: int, why: str) -> None:
    """Refuse a folder with fewer than ``minimum`` images, saying ``why`` they are needed."""
    if source.files is not None and len(source.files) < minimum:
        raise InputError(
            f"{source.argument}: {why} needs at least {minimum} images, folder {source.text!r} has {len(source.files)}."
        )


def files_entry(*sources: Source | None) -> dict[str, Any]:
    """The ``files`` entry of a result: read and skipped counts of each folder among ``sources``."""
    folders = {s.argument: s.counts() for s in sources if s is not None and not s.is_stats}
    return {"files": folders} if folders else {}


def option(args: argparse.Namespace, entry: MetricEntry, name: str) -> Any:
    """The value of a metric option: the flag's, else the registered default."""
    value = getattr(args, name, None)
    return next(o.default for o in entry.options if o.name == name) if value is None else value


# --------------------------------------------------------------------------------------------- checks before torch


def _check_fid(args: argparse.Namespace, entry: MetricEntry, sources: list[Source]) -> None:
    for s in sources:
        need(s, 2, "FID (a covariance)")


def _check_is(args: argparse.Namespace, entry: MetricEntry, sources: list[Source]) -> None:
    splits = option(args, entry, "splits")
    need(sources[0], splits, f"--splits {splits} (one image per split at least)")


def _check_pr(args: argparse.Namespace, entry: MetricEntry, sources: list[Source]) -> None:
    k = option(args, entry, "k")
    for s in sources:
        need(s, k + 1, f"--k {k} (a k-th neighbour other than the image itself)")


def _check_kid(args: argparse.Namespace, entry: MetricEntry, sources: list[Source]) -> None:
    # KIDCallback's rule: each subset draws subset_size distinct images per side, and a larger subset_size than
    # there are images is refused, never capped (a capped size makes every subset hold every image: kid_std 0).
    size = option(args, entry, "subset_size")
    given = f"--subset-size {size}" + (" (the default, as KIDCallback's)" if args.subset_size is None else "")
    if size < 2:
        raise InputError(f"{given}: a subset needs at least 2 images per side.")
    counts = [len(s.files) for s in sources if s.files is not None]
    for s in sources:
        if s.files is not None and len(s.files) < size:
            raise InputError(
                f"{given} is more than the {len(s.files)} images of {s.argument} ({s.text!r}): each subset draws "
                f"{size} distinct images per side; pass --subset-size {min(counts)} or less, or use more images."
            )


def _check_cmmd(args: argparse.Namespace, entry: MetricEntry, sources: list[Source]) -> None:
    estimator = option(args, entry, "estimator")
    for s in sources:
        need(s, 2, f"the {estimator} estimator")


def _check_memorization(args: argparse.Namespace, entry: MetricEntry, sources: list[Source]) -> None:
    need(sources[1], 3 if args.test is None else 2, "a nearest other training image (and a test split)")


# What each metric needs of the folders, for its options; a metric without an entry needs what its unit checks.
_CHECKS: dict[str, Callable[[argparse.Namespace, MetricEntry, list[Source]], None]] = {
    "fid": _check_fid,
    "is": _check_is,
    "pr": _check_pr,
    "kid": _check_kid,
    "cmmd": _check_cmmd,
    "memorization": _check_memorization,
}


# --------------------------------------------------------------------------------------------- the session


@dataclass
class Session:
    """What every process of a command shares once the inputs are checked: the network and the reading settings."""

    network: nn.Module
    device: torch.device
    rank: int
    world_size: int
    batch_size: int
    workers: int
    progress: bool

    @property
    def is_inception(self) -> bool:
        from lightning_ganeval.inception import InceptionExtractor

        return isinstance(self.network, InceptionExtractor)

    def loader(self, source: Source) -> DataLoader:
        """A loader over the folder's decoded images, batched as lists (sizes may differ within a folder)."""
        from torch.utils.data import DataLoader

        assert source.files is not None
        return DataLoader(
            ImageFolderDataset(source.files),  # type: ignore[arg-type]
            batch_size=self.batch_size,
            collate_fn=as_list,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )

    def bar(self, source: Source) -> Any:
        """A progress bar over this rank's share of a folder (rank 0 only)."""
        from tqdm.auto import tqdm

        assert source.files is not None
        return tqdm(
            total=len(range(self.rank, len(source.files), self.world_size)),
            desc=f"{source.argument} {source.text}",
            unit="img",
            file=sys.stderr,
            disable=not self.progress or self.rank != 0,
            dynamic_ncols=True,
        )

    def real_data(self, evaluator: Any, source: Source) -> None:
        """The reference side through the one real pass (:meth:`Evaluator.prepare_real`), or its ``.npz``."""
        if source.is_stats:
            try:
                evaluator.prepare_real(source.text)
            except (OSError, ValueError) as err:
                raise InputError(f"{source.argument}: {translate(str(err))}") from None
            return
        with self.bar(source) as bar:
            evaluator.prepare_real(
                self.loader(source),
                image_fn=FolderImages(source.argument),
                cache=False,
                argument=source.argument,
                progress=lambda done, total: bar.update(done - bar.n),
            )


def uint8_space() -> PixelSpace:
    from lightning_ganeval.pixel_space import PixelSpace

    return PixelSpace.from_value_range(0.0, 255.0)  # ignored for uint8 images; named for the record


# --------------------------------------------------------------------------------------------- commands


def run_metric(entry: MetricEntry, args: argparse.Namespace, make_session: Callable[[], Session]) -> dict[str, Any]:
    """A registered metric's command: the evaluated folder against the reference (if the metric reads one)."""
    names = entry.inputs
    allow_stats = entry.real == "moments"
    texts = [args.a] + ([args.b] if len(names) > 1 else [])
    sources = [
        source(t, n, entry.name, allow_stats=allow_stats, limit=args.num_samples)
        for t, n in zip(texts, names, strict=True)
    ]
    test = getattr(args, "test", None)
    test_source = (
        source(test, "--test", entry.name, allow_stats=False, limit=args.num_samples) if test is not None else None
    )
    if entry.name == "is" and args.network != "inception":
        raise InputError("is: the Inception Score reads Inception's class logits; use --network inception.")
    if args.network not in entry.networks:
        raise InputError(f"{entry.name}: --network {args.network} does not apply; use {' or '.join(entry.networks)}.")
    if entry.name in _CHECKS:
        _CHECKS[entry.name](args, entry, sources)
    if all(s.is_stats for s in sources):
        return _fid_of_two_files(sources[0], sources[1])
    for s in sources:
        if s.is_stats:
            setup.check_stats_file(s)
    session = make_session()
    # A statistics file stands for moments only: as B, the real side; as A, scored by the unit's FID.score().
    evaluated, reference = sources[0], (sources[1] if len(sources) > 1 else None)
    from lightning_ganeval.evaluator import Evaluator
    from lightning_ganeval.networks import network_identity

    metric = _build_metric(entry, args, session, reference)
    evaluator = Evaluator(
        [metric],
        num_samples=len(evaluated.files) if evaluated.files is not None else 2,
        latent_shape=1,
        batch_size=args.batch_size,
        space=uint8_space(),
        inception=session.network if session.is_inception else None,
    )
    try:
        if reference is not None:
            session.real_data(evaluator, reference)
        if test_source is not None:
            _set_test(metric, session, test_source)
        if evaluated.is_stats:
            by_metric = metric.score(_evaluated_stats(evaluated, session, metric))
        else:
            with session.bar(evaluated) as bar:
                result = evaluator.evaluate_images(
                    session.loader(evaluated),
                    image_fn=FolderImages(evaluated.argument),
                    max_workers=session.workers,
                    progress=lambda done: bar.update(done - bar.n),
                )
            by_metric = result.by_metric[metric.name]
    except ValueError as err:
        raise InputError(translate(str(err))) from None
    values = {k: v for k, v in by_metric.items() if not k.endswith("num_samples")}
    out: dict[str, Any] = {**values}
    out.update({f"{entry.name}_{o.name}": option(args, entry, o.name) for o in entry.options})
    real = getattr(metric, "real", None)
    if entry.name == "memorization":
        out.update(_memorization_counts(metric, args, evaluated, test_source))
    elif reference is None:
        out["num_samples"] = len(evaluated.files or ())
    else:
        count = by_metric.get(f"{metric.name}_num_samples") if evaluated.is_stats else len(evaluated.files or ())
        out["num_samples_a"] = int(count) if count == count else None  # NaN: a file without a count
        out["num_samples_b"] = real.num_images if real is not None else None
    out["network"] = network_identity(session.network)
    if entry.name == "kid" and len(evaluated.files or ()) == (real.num_images if real else 0) == metric.subset_size:
        out["note"] = (
            f"every subset holds all {metric.subset_size} images of both folders: the {metric.subsets} subsets are"
            " the same and kid_std is 0 by construction; a smaller --subset-size gives a spread"
        )
    out.update(files_entry(*sources, test_source))
    if entry.name == "memorization" and metric.nearest is not None and args.grid and session.rank == 0:
        assert reference is not None
        assert reference.files is not None
        out["grid"] = _write_nearest_grid(args.grid, evaluated.files, reference.files, metric.nearest)
        if args.json:  # which files sit closest to the training set, for scripts
            out["nearest_generated"] = [str(evaluated.files[int(i)]) for i in metric.nearest.generated]
            out["nearest_distance"] = metric.nearest.distance.tolist()
    return out


def _evaluated_stats(source: Source, session: Session, metric: Any) -> Any:
    """A statistics file given as A, checked against the network and layer that B's moments come from."""
    from lightning_ganeval.feature_network import network_provenance

    stats, _ = setup.load_stats_file(source, network_provenance(session.network, metric.resolved_layer()))
    assert metric.real is not None
    width = metric.real.stats.num_features
    if stats.num_features != width:
        raise InputError(
            f"A has {stats.num_features} features per sample and B has {width}: they come from different networks"
            " or layers."
        )
    return stats


def _build_metric(entry: MetricEntry, args: argparse.Namespace, session: Session, reference: Source | None) -> Any:
    """The registered unit with the flags given; per-sample metrics keep every reference row (the whole folder)."""
    from lightning_ganeval.metrics.registry import build_metric

    options = {o.name: getattr(args, o.name) for o in entry.options if getattr(args, o.name, None) is not None}
    if not session.is_inception:
        options["feature_extractor"] = session.network
    if entry.real == "features" and reference is not None and reference.files is not None:
        options["max_real"] = max(2, len(reference.files))
    try:
        return build_metric(entry.name, **options)
    except ValueError as err:
        raise InputError(translate(str(err))) from None


def _set_test(metric: Any, session: Session, test: Source) -> None:
    """Memorization's held-out rows (``--test``): the real pass on that folder, given to ``set_test``."""
    from lightning_ganeval.real_pass import prepare_real_data

    metric.max_real = max(metric.max_real, len(test.files or ()))
    with session.bar(test) as bar:
        data = prepare_real_data(
            session.loader(test),
            [(session.network, metric)],
            space=uint8_space(),
            image_fn=FolderImages(test.argument),
            cache=False,
            argument=test.argument,
            progress=lambda done, total: bar.update(done - bar.n),
        )
    metric.set_test(data[metric])


def _memorization_counts(
    metric: Any, args: argparse.Namespace, generated: Source, test: Source | None
) -> dict[str, Any]:
    num_real = len(metric.real_features())
    num_train = len(metric.train_positions) if metric.train_positions is not None else num_real
    split = test is None and metric.test_fraction > 0
    return {
        "test": args.test
        if test is not None
        else (f"split {metric.test_fraction} seed {metric.split_seed}" if split else None),
        "num_samples_generated": len(generated.files or ()),
        "num_train": num_train,
        "num_test": len(metric.test) if metric.test is not None else num_real - num_train,
    }


def _fid_of_two_files(a: Source, b: Source) -> dict[str, Any]:
    """FID of two statistics files: no network, but the files must agree with each other."""
    stats_a, provenance = setup.load_stats_file(a, None)
    keys = ("extractor", "weights_sha256", "resize", "fast", "layer")
    stats_b, _ = setup.load_stats_file(b, {k: provenance[k] for k in keys if k in provenance})
    if stats_a.num_features != stats_b.num_features:
        raise InputError(
            f"A has {stats_a.num_features} features per sample and B has {stats_b.num_features}: they come from "
            "different networks or layers."
        )
    from lightning_ganeval.frechet import frechet_distance

    try:
        value = frechet_distance(stats_a.mean, stats_a.cov, stats_b.mean, stats_b.cov)
    except ValueError as err:
        raise InputError(f"cannot compute the Fréchet distance: {translate(str(err))}") from None
    return {
        "fid": value,
        "num_samples_a": stats_a.n,
        "num_samples_b": stats_b.n,
        "network": provenance.get("extractor"),
    }


def run_stats(args: argparse.Namespace, make_session: Callable[[], Session]) -> dict[str, Any]:
    """``stats SRC [-o OUT.npz]``: the moments of a folder through the one real pass (or a summary of a ``.npz``)."""
    src = source(args.src, "SRC", "stats", allow_stats=True, limit=args.num_samples)
    rank = setup.env_int("RANK", 0)
    if src.is_stats:
        stats, provenance = setup.load_stats_file(src, None)
        provenance = {**provenance, "source": str(Path(src.text).resolve())}
    else:
        need(src, 2, "a covariance")
        session = make_session()
        rank = session.rank
        from lightning_ganeval.evaluator import Evaluator
        from lightning_ganeval.feature_network import network_provenance
        from lightning_ganeval.metrics.fid import FID

        metric = FID(feature_extractor=None if session.is_inception else session.network)
        evaluator = Evaluator([metric], num_samples=2, latent_shape=1, space=uint8_space(), inception=session.network)
        session.real_data(evaluator, src)
        assert metric.real is not None
        assert metric.real.stats is not None
        stats = metric.real.stats
        provenance = {
            **network_provenance(session.network, metric.resolved_layer()),
            "source": str(Path(src.text).resolve()),
            "pixel_space": uint8_space().to_json(),
            "count": metric.real.num_images,
        }
    result: dict[str, Any] = {
        "num_samples": stats.n,
        "num_features": stats.num_features,
        "network": provenance.get("extractor"),
    }
    if args.output is not None:
        if rank == 0:
            from lightning_ganeval.stats_files import save_stats

            try:
                written = save_stats(args.output, stats, provenance)
            except OSError as err:
                raise InputError(f"-o: cannot write {args.output!r} ({err}).") from None
        else:
            written = Path(args.output)
        result["output"] = str(written)
    return {**result, **files_entry(src)}


def _write_nearest_grid(path: str, generated: list[Path], train: list[Path], found: Any) -> str:
    """One row per generated image (closest to the training set first), then its nearest training images."""
    import torch
    from PIL import Image
    from torchvision.utils import make_grid

    from lightning_ganeval.cli.folders import read_image

    tiles = []
    for row in range(len(found.generated)):
        shown = read_image(generated[int(found.generated[row])])
        tiles.append(shown)
        for column in found.training[row].tolist():
            image = read_image(train[int(column)])
            if image.shape != shown.shape:
                image = (
                    torch.nn.functional.interpolate(
                        image[None].float(), size=shown.shape[-2:], mode="bilinear", antialias=True
                    )[0]
                    .round()
                    .clamp(0, 255)
                    .to(torch.uint8)
                )
            tiles.append(image)
    grid = make_grid(torch.stack(tiles), nrow=1 + found.training.shape[1], padding=2)
    try:
        Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy()).save(path, format="PNG")
    except (OSError, ValueError) as err:
        raise InputError(f"--grid: cannot write {path!r} ({err}).") from None
    return str(path)
