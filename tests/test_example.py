"""End-to-end runs of ``examples/dcgan_digits.py`` as a user would launch it: a subprocess, then its TensorBoard files.

Only 127.0.0.1 is ever contacted: the offline case runs the example through a wrapper that refuses every other
address at the socket level before the example is imported. The cases that stop before training (``--help``, the
exit status 2 of a missing or unobtainable weights file) run the script as ``__main__`` in this process: a
subprocess would spend seconds importing torch and Lightning for them.
"""

from __future__ import annotations

import math
import os
import re
import runpy
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dcgan_digits.py"

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LIGHTNING_GANEVAL_INCEPTION_WEIGHTS"}
    # One thread: the test suite shares the cores with other processes, and with more threads than free cores the
    # tiny GAN steps slow down ~20x (measured 0.06 s vs 1-1.7 s per step on a loaded 2-core machine).
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra})
    return env


def _run(args: list[str], timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=timeout
    )


def _run_here(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    """``python SCRIPT ARGS...`` (``args[0]`` the script) as ``__main__`` in this process: (exit status, out, err).

    The script must stop with ``sys.exit`` (any other exception fails the test, as a traceback would).
    """
    monkeypatch.setattr(sys, "argv", list(args))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(args[0], run_name="__main__")
    captured = capsys.readouterr()
    code = stopped.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), captured.out, captured.err


def _read_events(logdir: Path) -> tuple[dict[str, list[tuple[int, float]]], EventAccumulator]:
    """The scalars (tag -> [(step, value)]) and the accumulator of the single TensorBoard run under ``logdir``."""
    (run_dir,) = {p.parent for p in logdir.rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def test_help(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    status, out, err = _run_here([str(EXAMPLE), "--help"], capsys, monkeypatch)
    assert status == 0, err
    for option in ("--inception-weights", "--num-samples", "--num-real", "--strategy", "--resize", "--fast"):
        assert option in out
    help_text = " ".join(out.split())
    assert re.search(r"--seed SEED .*\(default: 0\)", help_text)  # a default of 0 is shown, not hidden as falsy
    assert "about 2½ minutes" in help_text  # the docstring's duration, as the README's


def test_trains_logs_and_checkpoints_on_fid(tmp_path: Path, inception_weights_path: Path) -> None:
    epochs = 2
    result = _run([
        str(EXAMPLE), "--inception-weights", str(inception_weights_path), "--epochs", str(epochs),
        "--num-samples", "16", "--num-real", "16", "--splits", "2", "--batch-size", "64",
        "--logdir", str(tmp_path / "logs"), "--accelerator", "cpu", "--devices", "1",
    ], TORCH_HOME=str(tmp_path / "torch_home"))  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "not comparable" in result.stdout.lower()  # a non-reference file is never used silently

    scalars, acc = _read_events(tmp_path / "logs")
    for tag in ("fid", "is", "is_std"):
        assert tag in scalars, f"{tag!r} not logged; scalars: {sorted(scalars)}"
        assert len(scalars[tag]) == epochs, scalars[tag]  # one point per evaluated epoch
        assert all(math.isfinite(value) for _, value in scalars[tag])
    assert all(value > 0 for _, value in scalars["fid"])
    assert all(value >= 1.0 for _, value in scalars["is"])  # IS = exp(E[KL]) >= 1

    texts = [
        event.tensor_proto.string_val[0].decode()
        for tag in acc.Tags()["tensors"]
        if "inception_weights" in tag
        for event in acc.Tensors(tag)
    ]
    assert texts, f"no inception_weights text in TensorBoard; tensor tags: {acc.Tags()['tensors']}"
    assert any("NOT comparable" in text for text in texts), texts

    # The kept checkpoint is the epoch with the lowest logged FID (TensorBoard stores float32: rtol 1e-6).
    epoch_at_step = dict(scalars["epoch"])
    best_step, best_fid = min(scalars["fid"], key=lambda item: item[1])
    checkpoints = list((tmp_path / "logs").rglob("*.ckpt"))
    assert len(checkpoints) == 1, checkpoints
    match = re.search(r"epoch=(\d+)-fid=([\d.]+)\.ckpt$", checkpoints[0].name)
    assert match, checkpoints[0].name
    assert int(match.group(1)) == int(epoch_at_step[best_step])
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    (score,) = [s["best_model_score"] for k, s in state["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert float(score) == pytest.approx(best_fid, rel=1e-6)
    assert f"checkpoint: {checkpoints[0]}" in result.stdout
    assert f"tensorboard --logdir {tmp_path / 'logs'}" in result.stdout


def test_missing_weights_file_gives_actionable_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope" / "pt_inception-2015-12-05-6726825d.pth"
    args = [str(EXAMPLE), "--inception-weights", str(missing), "--logdir", str(tmp_path)]
    status, _, err = _run_here(args, capsys, monkeypatch)
    assert status == 2
    assert str(missing) in err
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("events.out.tfevents.*"))  # stopped before training


@pytest.mark.slow
def test_offline_machine_falls_back_to_random_weights_unless_strict(
    tmp_path: Path, inception_weights_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapper = tmp_path / "offline.py"
    wrapper.write_text(
        textwrap.dedent(
            """
            import runpy, socket, sys

            LOCAL = {"127.0.0.1", "::1", "localhost"}
            real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

            def getaddrinfo(host, *args, **kwargs):
                if host not in LOCAL:
                    raise socket.gaierror(f"test sandbox: no network beyond 127.0.0.1 (asked for {host!r})")
                return real_getaddrinfo(host, *args, **kwargs)

            def connect(self, address):
                if isinstance(address, tuple) and address[0] not in LOCAL:
                    raise OSError(f"test sandbox: no network beyond 127.0.0.1 (asked for {address!r})")
                return real_connect(self, address)

            socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect

            import lightning_ganeval.weights as weights

            # A closed local port: the download fails the way it does on a machine without internet.
            weights.resolve_weights.__kwdefaults__["url"] = "http://127.0.0.1:9/" + weights.INCEPTION_FILENAME
            script = sys.argv[1]
            sys.argv = sys.argv[1:]
            runpy.run_path(script, run_name="__main__")
            """
        )
    )
    torch_home = tmp_path / "torch_home"
    torch_home.mkdir()
    # Strict: --inception-weights reference stops at once with the library's advice and the example's switches.
    # In this process (it stops before training), with what the wrapper patches put back afterwards.
    import lightning_ganeval.weights as weights

    strict = ["--inception-weights", "reference", "--logdir", str(tmp_path / "strict")]
    with monkeypatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", socket.getaddrinfo)
        patch.setattr(socket.socket, "connect", socket.socket.connect)
        patch.setitem(weights.resolve_weights.__kwdefaults__, "url", weights.resolve_weights.__kwdefaults__["url"])
        patch.setenv("TORCH_HOME", str(torch_home))
        status, out, err = _run_here([str(wrapper), str(EXAMPLE), *strict], capsys, patch)
    assert status == 2, out[-2000:] + err[-2000:]
    assert "Traceback" not in err
    assert "LIGHTNING_GANEVAL_INCEPTION_WEIGHTS" in err  # the library's advice
    assert "--inception-weights" in err  # the example's own switches
    assert str(torch_home) in err  # where to place the file
    assert not list((tmp_path / "strict").rglob("events.out.tfevents.*"))

    # Default: the example says so in one block and finishes on seeded random weights, labelled. They come from
    # `cached_random_inception_weights(seed=0)` in the temporary folder: this test's, holding the session's file
    # of the same seed (building it again would cost ~30 s of CPU; the fallback path is the same).
    temp = tmp_path / "temp"
    (temp / "lightning-ganeval-random").mkdir(parents=True)
    shutil.copyfile(inception_weights_path, temp / "lightning-ganeval-random" / "random-inception-seed0.pth")
    quick = ["--epochs", "1", "--num-samples", "16", "--num-real", "16", "--splits", "2", "--batch-size", "64"]
    logdir = tmp_path / "default"
    result = _run(
        [str(wrapper), str(EXAMPLE), *quick, "--logdir", str(logdir)],
        timeout=600,
        TORCH_HOME=str(torch_home),
        TMPDIR=str(temp),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "could not be found or downloaded" in result.stdout
    assert "SEEDED RANDOM WEIGHTS" in result.stdout
    assert "NOT comparable" in result.stdout
    assert list(logdir.rglob("events.out.tfevents.*"))
