"""The command line as a user runs it: a fresh Python process, its exit status and its stderr.

Every bad input must end with exit status 2 and ONE line on stderr that names the file or the flag (no traceback).
The errors found in the arguments and the folders must answer before torch is imported (``--help`` too): the
fast cases below run one after the other in one fresh process and check, in it, that none of the heavy packages was
imported. ``python -m lightning_ganeval`` itself runs for ``--help`` (exit 0), a missing folder (exit 2, in
test_cli.py) and one file of each kind that needs torch. The other cases that need torch (a weights or statistics
file's contents) run ``main`` in this process (a torch import takes seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "PIL", "torchvision", "torchmetrics", "torch_fidelity", "timm", "lightning", "scipy")

# Runs main() for each command line given (a JSON list on argv) in this one fresh process, as `python -m
# lightning_ganeval` does, and prints per command: exit status, stdout, stderr and the heavy packages imported so far
# (a command that imports one shows it, and so do the ones after it). One process for all: each start costs ~0.2 s.
_WRAPPER = f"""
import contextlib, io, json, sys, traceback
from lightning_ganeval.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except BaseException:
            status = None
            traceback.print_exc()
    imported = sorted(name for name in {HEAVY!r} if name in sys.modules)
    results.append([status, out.getvalue(), err.getvalue(), imported])
json.dump(results, sys.stdout)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("LIGHTNING_GANEVAL_INCEPTION_WEIGHTS", None)
    return env


def run_wrapped(*argvs: list[str]) -> list[tuple[int | None, str, str, list[str]]]:
    """(exit status, stdout, stderr, heavy packages imported) of each command, in one fresh process."""
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, json.dumps(argvs)], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return [tuple(result) for result in json.loads(proc.stdout)]


def run_module(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lightning_ganeval", *argv],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
    )


def one_line(status: int, out: str, err: str) -> str:
    assert status == 2, (status, err)
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp_path = tmp_path_factory.mktemp("inputs")
    folder = tmp_path / "A"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images")
    (tmp_path / "x.txt").write_text("x")
    (tmp_path / "w0.pth").write_bytes(b"")
    np.savez(tmp_path / "s.npz", mu=np.zeros(3), sigma=np.eye(3))
    paths = {
        "A": folder,
        "empty": empty,
        "txt": tmp_path / "x.txt",
        "npz": tmp_path / "s.npz",
        "w0": tmp_path / "w0.pth",
        "missing": tmp_path / "missing",
    }
    return {key: str(path) for key, path in paths.items()}


# --------------------------------------------------------------------------------------------- fast: no torch


HELP_CASES = [["--help"], ["fid", "--help"], ["kid", "--help"], ["stats", "--help"], ["--version"]]


@pytest.mark.parametrize("argv", HELP_CASES)
def test_help_imports_no_torch(before_torch: dict[str, tuple], argv: list[str]) -> None:
    status, out, err, imported = before_torch[json.dumps(argv)]
    assert status == 0, err
    assert "lightning-ganeval" in out
    assert imported == []


def test_python_dash_m_help() -> None:
    proc = run_module("--help", timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: lightning-ganeval")
    for command in ("stats", "fid", "kid", "is", "pr"):
        assert command in proc.stdout


ARGUMENT_CASES = [
    (["fid", "{missing}", "{A}"], "A: '{missing}' does not exist."),
    (["fid", "{A}", "{empty}"], "B: no images in folder '{empty}' (searched recursively for .png, .jpg, .jpeg"),
    (["fid", "{txt}", "{A}"], "A: '{txt}' is a file, not an image folder or a .npz statistics file."),
    (["kid", "{A}", "{npz}"], "B: '{npz}' is a statistics file, but `kid` compares per-sample features"),
    (["is", "{A}"], "A: --splits 10 (one image per split at least) needs at least 10 images"),
    (["pr", "{A}", "{A}", "--k", "3"], "A: --k 3 (a k-th neighbour other than the image itself) needs at least 4"),
    (["kid", "{A}", "{A}"], "--subset-size 1000 (the default, as KIDCallback's) is more than the 3 images of A"),
    (["kid", "{A}", "{A}", "--subset-size", "1"], "--subset-size 1: a subset needs at least 2 images per side."),
    (["fid", "{A}", "{A}", "--num-samples", "1"], "A: FID (a covariance) needs at least 2 images"),
    (["fid", "{A}", "{A}", "--batch-size", "0"], "argument --batch-size: expected a positive integer, got '0'"),
    (["fid", "{A}", "{A}", "--workers", "-1"], "argument --workers: expected an integer >= 0, got '-1'"),
    (["kid", "{A}", "{A}", "--seed", "x"], "argument --seed: expected an integer >= 0, got 'x'"),
    (["fid", "{A}", "{A}", "--network", "vgg"], "argument --network: invalid choice: 'vgg'"),
    (["fid", "{A}", "{A}", "--resize", "pil"], "--resize pil does not apply to --network inception"),
    (["fid", "{A}", "{A}", "--device", "gpu0"], "--device: 'gpu0' is not a device (e.g. cpu, cuda, cuda:1)."),
    (["fid", "{A}", "{A}", "--inception-weights", "{missing}"], "--inception-weights: '{missing}' does not exist."),
    (["fid", "{A}", "{A}", "--inception-weights", "{A}"], "--inception-weights: '{A}' is not a file."),
    (["fid", "{A}", "{A}", "--inception-weights", "{w0}"], "--inception-weights: '{w0}' is empty (0 bytes)"),
    (["fid", "{A}", "{A}", "--network", "dinov2", "--dinov2-weights", "{w0}"], "--dinov2-weights: '{w0}' is empty"),
    (["fid", "{A}", "{A}", "--dinov2-weights", "{w0}"], "--dinov2-weights does not apply to --network inception"),
    (["is", "{A}", "--network", "dinov2"], "is: the Inception Score reads Inception's class logits"),
    (["fid", "{A}"], "the following arguments are required: B"),
    (["fid", "{A}", "{A}", "--bogus"], "unrecognized arguments: --bogus"),
    (["frechet", "{A}"], "argument COMMAND: invalid choice: 'frechet'"),
    ([], "the following arguments are required: COMMAND"),
]


@pytest.fixture(scope="module")
def before_torch(inputs: dict[str, str]) -> dict[str, tuple]:
    """The result of every fast case (by its argv template, as JSON), all run in one fresh process."""
    argvs = HELP_CASES + [argv for argv, _ in ARGUMENT_CASES]
    results = run_wrapped(*([a.format(**inputs) for a in argv] for argv in argvs))
    return {json.dumps(argv): result for argv, result in zip(argvs, results, strict=True)}


@pytest.mark.parametrize(("argv", "expected"), ARGUMENT_CASES)
def test_argument_errors_answer_before_torch(
    before_torch: dict[str, tuple], inputs: dict[str, str], argv: list[str], expected: str
) -> None:
    status, out, err, imported = before_torch[json.dumps(argv)]
    line = one_line(status, out, err)
    assert expected.format(**inputs) in line
    assert line.startswith("lightning-ganeval")
    assert imported == []


# --------------------------------------------------------------------------------------------- slow: torch loaded


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "garbage.pth").write_bytes(b"garbage" * 100)
    (tmp_path / "truncated.pth").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    (tmp_path / "bad.npz").write_bytes(b"PK not a zip")
    np.savez(tmp_path / "nokeys.npz", m=np.zeros(3))
    np.savez(tmp_path / "s4.npz", mu=np.zeros(4), sigma=np.eye(4))
    np.savez(tmp_path / "nan.npz", mu=np.full(3, np.nan), sigma=np.eye(3))
    return {path.stem: str(path) for path in tmp_path.iterdir()}


# Each case in this process, through `main` (the same code as `python -m lightning_ganeval`, without a torch import
# of seconds per case); the two below run the two kinds (a weights file, a statistics file) in a fresh process.
BAD_FILE_CASES = [
    (["fid", "{A}", "{A}", "--inception-weights", "{garbage}"], "--inception-weights {garbage}: cannot load the"),
    (["fid", "{A}", "{A}", "--inception-weights", "{truncated}"], "--inception-weights {truncated}: cannot load"),
    (["fid", "{A}", "{A}", "--inception-weights", "{tensor}"], "--inception-weights {tensor}: cannot load the"),
    (["fid", "{A}", "{A}", "--inception-weights", "{other}"], "{other}: cannot load the weights: does not hold"),
    (["fid", "{A}", "{A}", "--network", "dinov2", "--dinov2-weights", "{garbage}"], "--dinov2-weights {garbage}"),
    (["fid", "{A}", "{A}", "--network", "dinov2", "--dinov2-weights", "{other}"], "--dinov2-weights {other}"),
    (["fid", "{A}", "{bad}"], "B: Statistics file '{bad}': cannot be read as .npz"),
    (["fid", "{nokeys}", "{A}"], "A: Statistics file '{nokeys}': missing key(s) ['mu', 'sigma']"),
    (["fid", "{npz}", "{nan}"], "B: Statistics file '{nan}': 'mu' contains NaN or Inf."),
    (["fid", "{npz}", "{s4}"], "A has 3 features per sample and B has 4"),
    (["stats", "{bad}"], "SRC: Statistics file '{bad}': cannot be read as .npz"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_FILE_CASES)
def test_bad_file_contents_exit_2_with_one_line(
    inputs: dict[str, str],
    bad_files: dict[str, str],
    argv: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lightning_ganeval.cli import main

    names = {**inputs, **bad_files}
    status = main([*(a.format(**names) for a in argv), "--no-progress", "--workers", "0"])
    captured = capsys.readouterr()
    line = one_line(status, captured.out, captured.err)
    assert expected.format(**names) in line
    assert line.startswith(f"lightning-ganeval {argv[0]}: error: ")


@pytest.mark.slow
@pytest.mark.parametrize("case", [0, 10], ids=["weights-file", "statistics-file"])
def test_bad_file_contents_exit_2_with_one_line_in_a_fresh_process(
    inputs: dict[str, str], bad_files: dict[str, str], case: int
) -> None:
    # What only a fresh interpreter shows: the exit status of `python -m`, and nothing else on stderr (the warnings
    # of a first torch import or a first torch.load).
    argv, expected = BAD_FILE_CASES[case]
    names = {**inputs, **bad_files}
    proc = run_module(*(a.format(**names) for a in argv), "--no-progress", "--workers", "0")
    line = one_line(proc.returncode, proc.stdout, proc.stderr)
    assert expected.format(**names) in line
