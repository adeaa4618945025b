"""A fresh interpreter that imports the heavy modules once, then runs scripts in forked children.

Starting ``python script.py`` costs 5-10 s of CPU on the test machine, nearly all of it importing torch and
Lightning. This server is started once (see `FreshPython`), imports them, and from then on only forks: each child
is the state of a fresh interpreter right after those imports (the server itself runs nothing else, so no cache,
module global or RNG draw of one run can reach another), and runs its script as ``python script.py args`` would:
``__main__``, ``sys.argv``, ``sys.path[0]``, working directory, environment, its own process group.

Protocol, one JSON object per line: the client writes ``{"runs": [run, ...], "timeout": seconds, "jobs": n}``
with ``run = {"argv": [script, *args], "cwd": ..., "env": {...}, "stdout": path, "stderr": path}``; the server
answers one line, the exit codes in the order of the runs (``null`` for a run killed at the timeout, with its
process group). At most ``jobs`` runs are alive at once.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import signal
import sys
import time
import traceback
from typing import Any


def _child(run: dict[str, Any]) -> int:
    """Run one script in this (forked) process, as ``python <argv>`` in ``cwd`` with ``env`` would; its exit code."""
    os.setpgid(0, 0)  # a group of its own: a timeout kills its loader workers and launched ranks with it
    for fd, key, flags in ((1, "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), (2, "stderr", None)):
        target = os.open(run[key], flags or os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the protocol's stdin is the server's, not the script's
    os.chdir(run["cwd"])
    os.environ.clear()
    os.environ.update(run["env"])
    threads = run["env"].get("OMP_NUM_THREADS")
    if threads:  # torch read the variable at import, in the server: apply the run's own value
        import torch

        torch.set_num_threads(int(threads))
    script = os.path.abspath(run["argv"][0])
    extra = [p for p in run["env"].get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[:] = [os.path.dirname(script), *extra, *sys.path[1:]]
    sys.argv = [script, *run["argv"][1:]]
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if exit_.code is not None and not isinstance(exit_.code, int):
            print(exit_.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _serve(request: dict[str, Any]) -> list[int | None]:
    runs, jobs = request["runs"], max(1, int(request.get("jobs") or len(request["runs"])))
    deadline = time.monotonic() + float(request["timeout"])
    codes: list[int | None] = [None] * len(runs)
    alive: dict[int, int] = {}  # pid -> index of its run
    waiting = list(range(len(runs)))
    while waiting or alive:
        while waiting and len(alive) < jobs:
            index = waiting.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _child(runs[index])
                finally:
                    os._exit(code)
            alive[pid] = index
        if time.monotonic() > deadline:
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            break  # the killed and the never started keep `None`
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            time.sleep(0.02)
            continue
        if pid in alive:
            codes[alive.pop(pid)] = os.waitstatus_to_exitcode(status)
    return codes


def main() -> None:
    for name in sys.argv[1:]:
        # An optional package (pytorch_lightning) may be missing: the scripts that need it will say so.
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(_serve(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
