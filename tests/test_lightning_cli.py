"""The metric callbacks configured from YAML through ``LightningCLI`` (jsonargparse reads their type hints).

The training run launches ``tests/cli_app.py`` in a fresh process (`fresh_python`), as a user would start a
training script (``PYTHONPATH`` points at this checkout so that its package is the one imported); parsing and
error messages are checked with the same ``LightningCLI`` in this process, without running a subcommand.
"""

from __future__ import annotations

import csv
import inspect
import math
import re
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import yaml
from fresh_python import script_env

from lightning_ganeval.feature_network import network_provenance
from lightning_ganeval.frechet import GaussianStats
from lightning_ganeval.stats_files import save_stats

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "tests" / "cli_app.py"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jsonargparse's own deprecations
pytest.importorskip("jsonargparse")


def callbacks_config(tmp_path: Path, weights: Path, real_stats: Path) -> list[dict[str, Any]]:
    """All four callbacks, using every kind of argument a YAML file can hold."""
    cache = str(tmp_path / "cache")
    inception = {"inception_weights": str(weights), "num_samples": 8, "batch_size": 8, "progress": False}
    tiny = {"class_path": "tiny_nets.TinyFeatures", "init_args": {"dim": 8}}
    return [
        {
            "class_path": "lightning_ganeval.FIDCallback",
            "init_args": {
                **inception,
                "real": str(real_stats),  # a path string
                "value_range": [-1, 1],  # a tuple
                "sample_fn": "tiny_nets.sample",  # an import path
                "latent_shape": 8,
                "log_images": 4,
            },
        },
        {
            "class_path": "lightning_ganeval.InceptionScoreCallback",
            "init_args": {**inception, "splits": 2, "value_range": [-1, 1], "sample_fn": "tiny_nets.sample"},
        },
        {
            "class_path": "lightning_ganeval.KIDCallback",
            "init_args": {
                "feature_extractor": tiny,  # an nn.Module by class_path
                "num_samples": 16,
                "subsets": 3,
                "subset_size": 4,
                "normalize": [[0.5], [0.5]],  # per-channel (mean, std): the same space as [-1, 1]
                "real_image_fn": "tiny_nets.first_item",
                "cache_dir": cache,
                "progress": False,
            },
        },
        {
            "class_path": "lightning_ganeval.PrecisionRecallCallback",
            "init_args": {
                "feature_extractor": tiny,
                "num_samples": 16,
                "k": 2,
                "latent_shape": [8],
                "real_value_range": [-1.0, 1.0],
                "value_range": [-1.0, 1.0],
                "cache_dir": cache,
                "progress": False,
            },
        },
    ]


def write_config(tmp_path: Path, callbacks: list[dict[str, Any]], epochs: int = 2) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": epochs,
            "enable_progress_bar": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "logs"), "name": "cli"},
            },
            "callbacks": callbacks,
        },
        "model": {"latent_dim": 8},
        "data": {"num_images": 16, "batch_size": 8},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def real_stats(tmp_path: Path, extractor: Any) -> Path:
    # Statistics of 3 random 2048-d vectors, labelled as the random-weight Inception's: the test is about the
    # configuration, so the real side costs no Inception pass.
    features = torch.rand(3, 2048, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stats = GaussianStats(n=3, mean=features.mean(0), cov=features.T.cov())
    return save_stats(tmp_path / "real.npz", stats, network_provenance(extractor, "pool"))


@pytest.mark.slow
def test_fit_from_yaml_logs_every_metric(
    tmp_path: Path, inception_weights_path: Path, real_stats: Path, fresh_python: Any
) -> None:
    config = write_config(tmp_path, callbacks_config(tmp_path, inception_weights_path, real_stats))
    # `python tests/cli_app.py fit --config ...`, in a fresh process; one thread: the suite shares the cores.
    (result,) = fresh_python.run([[APP, "fit", "--config", config]], timeout=240, env=script_env(OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-4000:]

    (log_dir,) = (tmp_path / "logs" / "cli").iterdir()
    with open(log_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    expected = {
        "fid": "fid",
        "is": "is",
        "is_std": "is",
        "kid": "kid",
        "kid_std": "kid",
        "precision": "pr",
        "recall": "pr",
        "density": "pr",
        "coverage": "pr",
    }
    for key in expected:
        values = [float(row[key]) for row in rows if row.get(key)]
        assert len(values) == 2, (key, rows)  # one evaluation per epoch
        assert all(math.isfinite(v) for v in values), (key, values)
    for key in ("fid_num_samples", "is_num_samples"):
        assert {float(row[key]) for row in rows if row.get(key)} == {8.0}
    for key in ("kid_num_samples", "pr_num_samples"):
        assert {float(row[key]) for row in rows if row.get(key)} == {16.0}
    assert sorted(p.name for p in (log_dir / "images").glob("*.png")) == [
        "fid_samples_step_00000001.png",
        "fid_samples_step_00000003.png",
    ]
    # LightningCLI saved the configuration it ran with, callbacks included; it parses back to the same arguments.
    saved = yaml.safe_load((log_dir / "config.yaml").read_text())
    by_class = {c["class_path"]: c["init_args"] for c in saved["trainer"]["callbacks"]}
    assert by_class["lightning_ganeval.FIDCallback"]["real"] == str(real_stats)
    assert by_class["lightning_ganeval.FIDCallback"]["sample_fn"] == "tiny_nets.sample"
    assert by_class["lightning_ganeval.KIDCallback"]["feature_extractor"]["class_path"] == "tiny_nets.TinyFeatures"


def in_process_cli(args: list[str]) -> Any:
    """``LightningCLI`` of ``cli_app`` in this process, without running a subcommand (cheaper than a subprocess)."""
    from cli_app import RealImages, TinyGAN
    from lightning.pytorch.cli import LightningCLI

    # LightningCLI warns when it sees both `args` and command-line arguments (here: pytest's).
    with mock.patch.object(sys, "argv", [str(APP)]):
        return LightningCLI(TinyGAN, RealImages, args=args, run=False)


def test_print_config_normalises_every_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Paths are only read in `setup`: parsing needs neither the weights nor the statistics file.
    config = write_config(tmp_path, callbacks_config(tmp_path, tmp_path / "weights.pth", tmp_path / "real.npz"))
    # One more callback from the command line, the other syntax LightningCLI offers.
    with pytest.raises(SystemExit) as exit_info:
        in_process_cli(
            [
                "--config",
                str(config),
                "--trainer.callbacks+=lightning_ganeval.FIDCallback",
                "--trainer.callbacks.name=fid_small",
                "--trainer.callbacks.normalize=[0.5, 0.5]",
                "--print_config",
            ]
        )
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    assert [c["class_path"].rsplit(".", 1)[1] for c in printed] == [
        "FIDCallback",
        "InceptionScoreCallback",
        "KIDCallback",
        "PrecisionRecallCallback",
        "FIDCallback",
    ]
    fid, isc, kid, pr, small = (c["init_args"] for c in printed)
    assert fid["value_range"] == [-1.0, 1.0]
    assert fid["latent_shape"] == 8
    assert fid["real"] == str(tmp_path / "real.npz")
    assert isc["splits"] == 2
    assert kid["normalize"] == [[0.5], [0.5]]
    assert kid["real_image_fn"] == "tiny_nets.first_item"
    assert kid["feature_extractor"] == {"class_path": "tiny_nets.TinyFeatures", "init_args": {"dim": 8, "seed": 0}}
    assert pr["latent_shape"] == [8]
    assert pr["real_value_range"] == [-1.0, 1.0]
    assert small["name"] == "fid_small"
    assert small["normalize"] == [0.5, 0.5]
    # Every argument of every callback is in the printed config (none was skipped for an unreadable hint).
    import lightning_ganeval as lg

    for entry in printed:
        cls = getattr(lg, entry["class_path"].rsplit(".", 1)[1])
        # The flat signature: the callback's own arguments and the shared ones it takes as **kwargs.
        arguments = set(inspect.signature(cls).parameters)
        assert len(arguments) > 15, arguments
        assert set(entry["init_args"]) == arguments, cls.__name__


def test_instantiated_callbacks_hold_the_parsed_values(tmp_path: Path) -> None:
    import tiny_nets

    from lightning_ganeval import FIDCallback, InceptionScoreCallback, KIDCallback, PrecisionRecallCallback

    real = tmp_path / "real.npz"
    config = write_config(tmp_path, callbacks_config(tmp_path, tmp_path / "weights.pth", real))
    cli = in_process_cli(["--config", str(config)])
    fid, isc, kid, pr = (c for c in cli.trainer.callbacks if hasattr(c, "num_samples"))
    assert (type(fid), type(isc), type(kid), type(pr)) == (
        FIDCallback,
        InceptionScoreCallback,
        KIDCallback,
        PrecisionRecallCallback,
    )
    assert fid.real == str(real)
    assert fid.value_range == (-1.0, 1.0)
    assert fid.sample_fn is tiny_nets.sample
    assert fid.latent_shape == (8,)
    assert fid._log_images == 4
    assert isc.sample_fn is tiny_nets.sample
    assert isinstance(kid.feature_extractor, tiny_nets.TinyFeatures)
    assert kid.feature_extractor.weight.shape == (48, 8)
    assert kid.real_image_fn is tiny_nets.first_item
    assert kid.normalize == ([0.5], [0.5])
    assert pr.real_value_range == (-1.0, 1.0)
    assert pr.latent_shape == (8,)


@pytest.mark.parametrize(
    ("argument", "value", "error", "message"),
    [
        ("value_range", [0, 1, 2], SystemExit, 'Parser key "value_range"'),  # jsonargparse: not a pair of floats
        ("resize", "bicubic", ValueError, "`resize` must be one of 'tf1', 'antialias'"),  # the callback's check
        ("sample_fn", "tiny_nets.no_such_function", ValueError, "`sample_fn` names 'tiny_nets.no_such_function'"),
    ],
)
def test_bad_values_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argument: str, value: Any, error: type, message: str
) -> None:
    callbacks = [{"class_path": "lightning_ganeval.InceptionScoreCallback", "init_args": {argument: value}}]
    with pytest.raises(error) as info:
        in_process_cli(["--config", str(write_config(tmp_path, callbacks))])
    shown = str(info.value) if error is not SystemExit else capsys.readouterr().err
    assert message in shown, shown


@pytest.mark.parametrize("callback", ["InceptionScoreCallback", "KIDCallback", "PPLCallback"])
def test_help_lists_the_shared_arguments_with_type_and_default(
    callback: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The arguments a callback takes as ``**kwargs`` show in ``--help`` as if written out, typed and defaulted."""
    with pytest.raises(SystemExit):
        in_process_cli(["--trainer.callbacks.help", f"lightning_ganeval.{callback}"])
    shown = " ".join(capsys.readouterr().out.split())  # one line: argparse wraps the help to the terminal
    for argument, described in [
        ("every_n_epochs", "(type: int | null, default: null)"),
        ("batch_size", "(type: int, default: 64)"),
        ("value_range", "(type: Optional[tuple[float, float]], default: null)"),
        ("nonfinite", "(type: str, default: exclude)"),
    ]:
        # The description, where the docstring gives one, stands between the name and the type.
        entry = rf"--trainer\.callbacks\.{argument} {argument.upper()} (?:(?!--trainer).)*?{re.escape(described)}"
        assert re.search(entry, shown), (argument, shown)
    # And the callback's own arguments beside them.
    own = {"InceptionScoreCallback": "splits", "KIDCallback": "subset_size", "PPLCallback": "num_pairs"}[callback]
    assert f"--trainer.callbacks.{own} {own.upper()}" in shown
