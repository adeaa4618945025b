"""How fast the command line answers ``--help`` and a bad argument, against the peers' command lines.

A command line that imports torch, torchmetrics and Lightning before it parses its arguments makes every typo
cost seconds. ``python -m lightning_ganeval`` parses with the standard library only (the metric registry names the
metrics and their flags without importing them) and imports torch when a command runs. Timed in fresh
processes (the whole start, as a user waits for it), best of ``repeats`` interleaved runs:

* ``python -m lightning_ganeval --help`` against ``python -m torch_fidelity.fidelity --help`` and
  ``python -m pytorch_fid --help`` (both import torch first);
* ``python -m lightning_ganeval fid --batch-size 0 A B``, which must exit 2 with one line, against the target.

Usage::

    python benchmarks/bench_cli.py              # best of 5
    python benchmarks/bench_cli.py --quick      # best of 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

from run_all import format_table  # the one table format of benchmarks/

COMMANDS = {
    "ours_help": [sys.executable, "-m", "lightning_ganeval", "--help"],
    "ours_bad_argument": [sys.executable, "-m", "lightning_ganeval", "fid", "--batch-size", "0", "A", "B"],
    "torch_fidelity_help": [sys.executable, "-m", "torch_fidelity.fidelity", "--help"],
    "pytorch_fid_help": [sys.executable, "-m", "pytorch_fid", "--help"],
}
EXPECTED_STATUS = {"ours_help": 0, "ours_bad_argument": 2, "torch_fidelity_help": 0, "pytorch_fid_help": 0}


def _timed(command: list[str], expected: int) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != expected:
        raise RuntimeError(f"{' '.join(command[1:])} exited {done.returncode}, expected {expected}: {done.stderr}")
    if expected == 2 and len(done.stderr.strip().splitlines()) != 1:
        raise RuntimeError(f"{' '.join(command[1:])} wrote more than one line: {done.stderr!r}")
    return elapsed


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Best wall time of each command over interleaved fresh-process runs; rows in the ``run_all.py`` format."""
    repeats = 2 if quick else 5
    best = dict.fromkeys(COMMANDS, float("inf"))
    for _ in range(repeats):
        for name, command in COMMANDS.items():
            best[name] = min(best[name], _timed(command, EXPECTED_STATUS[name]))

    def row(what: str, ours: str, peer: str, peer_value: float, target: str) -> dict[str, Any]:
        return {
            "benchmark": what,
            "ours": best[ours],
            "peer": peer,
            "peer_value": peer_value,
            "unit": "s",
            "ratio": peer_value / best[ours],
            "target": target,
        }

    return [
        row(
            "command line --help, fresh process",
            "ours_help",
            "torch-fidelity --help",
            best["torch_fidelity_help"],
            "<= 1.5 s",
        ),
        row(
            "command line --help, fresh process",
            "ours_help",
            "pytorch-fid --help",
            best["pytorch_fid_help"],
            "<= 1.5 s",
        ),
        row(
            "command line bad argument (exit 2, one line), fresh process",
            "ours_bad_argument",
            "target",
            1.5,
            "<= 1.5 s",
        ),
    ]


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="best of 2 instead of 5")
    print(format_table(run(quick=parser.parse_args().quick)))


if __name__ == "__main__":
    _main()
