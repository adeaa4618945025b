"""`FreshPython`: run test scripts as ``python script.py args`` would, without paying the imports each time.

The ``fresh_python`` fixture (conftest) holds one `fork_server.py` per test run and worker: a fresh interpreter
that imports torch, Lightning and this package once, then forks one pristine child per script (see there why a
child is as fresh as a new interpreter). The tests that need processes of their own (bit-identical training,
a loader that could hang, a script launched as users launch it) use it; each run still gets its own working
directory, environment, exit code, stdout and stderr, and a timeout that kills it and its children.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# What every script of the suite imports; optional ones (pytorch_lightning) are skipped when missing.
PRELOAD = (
    "numpy",
    "torch",
    "torchvision",
    "lightning.pytorch",
    "pytorch_lightning",
    "lightning_ganeval",
    "lightning_ganeval.callbacks",
    "user_models",
)


@dataclass(frozen=True)
class Result:
    """One finished script: ``returncode`` is None when it was killed at the timeout."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str


def script_env(**overrides: str) -> dict[str, str]:
    """This process's environment for a script: this checkout and ``tests/`` importable, no user weights."""
    env = {k: v for k, v in os.environ.items() if k != "LIGHTNING_GANEVAL_INCEPTION_WEIGHTS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")] if p)
    env.update(overrides)
    return env


class FreshPython:
    """Client of one `fork_server.py`, started on first use.

    Args:
        workdir: Where the runs' stdout and stderr files and the server's own stderr go.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._server: subprocess.Popen[bytes] | None = None
        self._count = 0
        self._pending: Callable[[], list[Result]] | None = None  # runs started and not waited for

    def _readline(self, timeout: float) -> dict[str, Any] | list[Any]:
        assert self._server is not None
        assert self._server.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._server.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout)
        line = self._server.stdout.readline() if ready else b""
        if not line:
            self.close()
            errors = (self.workdir / "server.err").read_text()[-4000:]
            raise RuntimeError(f"the fork server {'timed out' if not ready else 'died'}:\n{errors}")
        return json.loads(line)

    def _ensure_started(self) -> None:
        if self._server is not None and self._server.poll() is None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "server.err", "wb") as errors:
            self._server = subprocess.Popen(
                [sys.executable, str(TESTS / "fork_server.py"), *PRELOAD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                cwd=REPO,
                env=script_env(),
            )
        self._readline(timeout=300)  # {"ready": pid}: the imports are done

    def start(
        self,
        runs: Sequence[Sequence[str | os.PathLike[str]]],
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] = REPO,
        jobs: int | None = None,
    ) -> Callable[[], list[Result]]:
        """Start ``python <argv>`` for every argv in ``runs`` (at most ``jobs`` at a time); returns ``wait()``.

        ``wait()`` returns one `Result` per run, in order, once all have finished or ``timeout`` seconds have
        passed (the runs still alive then are killed, with their process groups). ``env`` defaults to
        `script_env`. Nothing else may be started before ``wait()`` returns.
        """
        if self._pending is not None:  # a test failed between `start` and `wait`: collect its answer first
            self._pending()
        self._ensure_started()
        assert self._server is not None
        assert self._server.stdin is not None
        specs = []
        for argv in runs:
            self._count += 1
            base = self.workdir / f"run{self._count}"
            argv = [str(a) for a in argv]
            specs.append(
                {
                    "argv": argv,
                    "cwd": str(cwd),
                    "env": dict(env if env is not None else script_env()),
                    "stdout": f"{base}.out",
                    "stderr": f"{base}.err",
                }
            )
        request = {"runs": specs, "timeout": timeout, "jobs": jobs}
        self._server.stdin.write(json.dumps(request).encode() + b"\n")
        self._server.stdin.flush()

        def wait() -> list[Result]:
            self._pending = None
            codes = self._readline(timeout=timeout + 120)
            assert isinstance(codes, list)
            return [
                Result(spec["argv"], code, _read(spec["stdout"]), _read(spec["stderr"]))
                for spec, code in zip(specs, codes, strict=True)
            ]

        self._pending = wait
        return wait

    def run(self, runs: Sequence[Sequence[str | os.PathLike[str]]], timeout: float, **kwargs: Any) -> list[Result]:
        """`start` and wait."""
        return self.start(runs, timeout, **kwargs)()

    def close(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        stdin: IO[bytes] | None = server.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()  # end of requests: the server exits
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


def _read(path: str) -> str:
    return Path(path).read_text(errors="replace")
