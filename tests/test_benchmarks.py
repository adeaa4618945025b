"""benchmarks/run_all.py: malformed or failing benchmarks become error rows, the Markdown table names the loads."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import run_all

ROW = {
    "benchmark": "KID | n=10",
    "ours": 2.0,
    "peer": "peer",
    "peer_value": 3.0,
    "unit": "s",
    "ratio": 1.5,
    "target": "-",
}


def test_a_failing_or_malformed_benchmark_becomes_an_error_row(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(quick: bool = False) -> list[dict]:
        raise RuntimeError("no peer installed")

    monkeypatch.setitem(sys.modules, "bench_broken", types.SimpleNamespace(run=broken))
    monkeypatch.setitem(sys.modules, "bench_malformed", types.SimpleNamespace(run=lambda quick=False: [{"ours": 1}]))
    assert run_all.run_benchmark("bench_broken", quick=True) == [
        {"benchmark": "bench_broken", "error": "RuntimeError: no peer installed"}
    ]
    (row,) = run_all.run_benchmark("bench_malformed", quick=True)
    assert row["benchmark"] == "bench_malformed"
    assert "lacks keys" in row["error"]


def test_markdown_table_states_the_machine_and_each_benchmarks_load() -> None:
    machine = {
        "cpu": "Xeon",
        "cpu_count": 2,
        "torch_threads": 2,
        "torch": "2.14.1",
        "cuda_device": None,
        "python": "3.12",
    }
    text = run_all.format_markdown(
        [ROW, {"benchmark": "bench_x", "error": "boom"}],
        machine,
        {"bench_metrics": 61.2},
        {"bench_metrics": (3.5, 4.25)},
    )
    lines = text.splitlines()
    assert lines[0].startswith("Machine: Xeon, 2 cores (2 torch threads), torch 2.14.1, CUDA: none")
    assert lines[2] == "| benchmark | ours | peer | peer_value | unit | ratio | target |"
    # A "|" inside a cell is escaped, so every row keeps seven cells.
    assert lines[4] == "| KID \\| n=10 | 2 | peer | 3 | s | 1.5 | - |"
    assert lines[5].count(" |") == 7
    assert "ERROR: boom" in lines[5]
    assert lines[-1] == "Wall time: bench_metrics 61 s (load 3.5 -> 4.2)."


def test_load_average_is_a_number() -> None:
    load = run_all.load_average()
    assert math.isnan(load) or load >= 0
