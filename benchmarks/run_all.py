"""Run every benchmark and print one table of our numbers against the peers'.

Usage::

    python benchmarks/run_all.py            # full sizes
    python benchmarks/run_all.py --quick    # small sizes, a minute or two on a laptop CPU
    python benchmarks/run_all.py --json results.json --markdown table.md

The machine is often shared: the load average (1 minute) is read before and after each benchmark and printed
beside its wall time, and ``--markdown`` writes the table with the machine and those loads, as the README shows
it.

Each ``benchmarks/bench_<name>.py`` exposes ``run(quick: bool = False) -> list[dict]`` whose rows are
``{"benchmark", "ours", "peer", "peer_value", "unit", "ratio", "target"}``. The benchmarks run one after the other
(never in parallel, which would skew the timings). A benchmark that fails to import, raises, or returns malformed
rows is reported in the table and makes the script exit with status 1; the others still run.

With CUDA available, the extractor benchmark runs a second time on the GPU (``run(quick, device="cuda")``), and its
rows (images/s on the GPU among them) are marked ``[cuda]``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

BENCHMARKS = ("bench_extractor", "bench_frechet", "bench_callback", "bench_metrics", "bench_real_key", "bench_cli")
# Full-size settings that keep one run under 10 minutes on 2 idle cores (8.5 min measured): KID and
# precision/recall at n = 10k, best of 2 interleaved rounds; the float64 paths' agreement is checked by
# tests/test_kid.py and tests/test_precision_recall.py.
FULL_RUN_OPTIONS: dict[str, dict[str, Any]] = {"bench_metrics": {"repeats": 2, "with_float64": False}}
ROW_KEYS = ("benchmark", "ours", "peer", "peer_value", "unit", "ratio", "target")
COLUMNS = ("benchmark", "ours", "peer", "peer_value", "unit", "ratio", "target")


def machine_description() -> dict[str, Any]:
    """CPU model, core counts, library versions and the CUDA device, for the header of the table and the JSON."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # not Linux: keep platform's answer
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import lightning_ganeval

        info["lightning_ganeval"] = lightning_ganeval.__version__
    except ImportError:
        info["lightning_ganeval"] = None
    return info


def _error(name: str, err: BaseException) -> dict[str, Any]:
    return {"benchmark": name, "error": f"{type(err).__name__}: {err}".splitlines()[0]}


def _check_rows(name: str, rows: Any) -> list[dict[str, Any]]:
    """Validate a benchmark's return value; a malformed row becomes an error row instead of breaking the table."""
    if not isinstance(rows, list) or not rows:
        return [{"benchmark": name, "error": f"run() must return a non-empty list of dicts, got {rows!r:.80}"}]
    checked = []
    for row in rows:
        missing = [key for key in ROW_KEYS if not isinstance(row, dict) or key not in row]
        if missing:
            checked.append({"benchmark": name, "error": f"row {row!r:.80} lacks keys {missing}"})
        else:
            checked.append(dict(row))
    return checked


def run_benchmark(name: str, quick: bool, **kwargs: Any) -> list[dict[str, Any]]:
    """Import ``benchmarks/<name>.py`` and call its ``run``; errors are returned as rows, never raised."""
    try:
        module = importlib.import_module(name)
        rows = module.run(quick=quick, **kwargs)
    except Exception as err:  # one broken benchmark must not hide the others
        traceback.print_exc(file=sys.stderr)
        return [_error(name, err)]
    return _check_rows(name, rows)


def gpu_extractor_rows(quick: bool) -> list[dict[str, Any]]:
    """The extractor benchmark again on CUDA (its ``run`` takes a ``device``); row names get a ``[cuda]`` suffix."""
    name = "bench_extractor[cuda]"
    try:
        module = importlib.import_module("bench_extractor")
        if "device" not in inspect.signature(module.run).parameters:
            return [{"benchmark": name, "error": "bench_extractor.run() takes no `device` argument"}]
        rows = _check_rows(name, module.run(quick=quick, device="cuda"))
    except Exception as err:
        traceback.print_exc(file=sys.stderr)
        return [_error(name, err)]
    # The CPU rows carry the same names; mark these so the table tells them apart.
    return [{**row, "benchmark": f"{row['benchmark']} [cuda]"} for row in rows]


def load_average() -> float:
    """The 1-minute load average (NaN where the platform has none): how busy the machine was."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def describe_runs(timings: dict[str, float], loads: dict[str, tuple[float, float]]) -> str:
    """One line: each benchmark's wall time and the load average before and after it."""
    parts = [
        f"{name} {seconds:.0f} s (load {loads[name][0]:.1f} -> {loads[name][1]:.1f})"
        for name, seconds in timings.items()
    ]
    return "Wall time: " + ", ".join(parts)


def format_markdown(
    rows: list[dict[str, Any]], machine: dict[str, Any], timings: dict[str, float], loads: dict[str, tuple]
) -> str:
    """The table as Markdown, headed by the machine and followed by each benchmark's time and load."""
    lines = [
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores ({machine['torch_threads']} torch threads), "
        f"torch {machine['torch']}, CUDA: {machine['cuda_device'] or 'none'}, Python {machine['python']}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['benchmark']} | ERROR: {row['error']} |" + " |" * (len(COLUMNS) - 2))
        else:
            lines.append("| " + " | ".join(_fmt(row[key]).replace("|", "\\|") for key in COLUMNS) + " |")
    lines += ["", describe_runs(timings, loads) + "."]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table; error rows span the value columns."""
    lines = [[*COLUMNS]]
    for row in rows:
        if "error" in row:
            lines.append([str(row["benchmark"]), f"ERROR: {row['error']}"])
        else:
            lines.append([_fmt(row[key]) for key in COLUMNS])
    widths = [max(len(line[i]) for line in lines if len(line) == len(COLUMNS)) for i in range(len(COLUMNS))]
    widths[0] = max(len(line[0]) for line in lines)
    out = []
    for i, line in enumerate(lines):
        if len(line) == len(COLUMNS):
            out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        else:
            out.append(f"{line[0].ljust(widths[0])}  {line[1]}")
        if i == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small problem sizes (smoke run)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also save the machine description and all rows")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="also write the table in Markdown (README)")
    parser.add_argument(
        "--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), help="run only these benchmarks"
    )
    args = parser.parse_args(argv)
    # Import the benchmarks as top-level modules, as `python benchmarks/bench_x.py` sees them, from any directory.
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    machine = machine_description()
    print(
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores ({machine['torch_threads']} torch threads), "
        f"torch {machine['torch']}, CUDA: {machine['cuda_device'] or 'none'}, Python {machine['python']}"
    )
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    loads: dict[str, tuple[float, float]] = {}
    for name in args.only:
        print(f"running {name}{' (quick)' if args.quick else ''} ...", flush=True)
        start, load = time.perf_counter(), load_average()
        rows += run_benchmark(name, args.quick, **({} if args.quick else FULL_RUN_OPTIONS.get(name, {})))
        timings[name], loads[name] = time.perf_counter() - start, (load, load_average())
    if torch.cuda.is_available() and "bench_extractor" in args.only:
        print("running bench_extractor on CUDA ...", flush=True)
        start, load = time.perf_counter(), load_average()
        rows += gpu_extractor_rows(args.quick)
        timings["bench_extractor[cuda]"] = time.perf_counter() - start
        loads["bench_extractor[cuda]"] = (load, load_average())

    print()
    print(format_table(rows))
    gpu_rates = [r for r in rows if "error" not in r and "[cuda]" in str(r["benchmark"]) and "/s" in str(r["unit"])]
    if gpu_rates:
        print(f"\nThroughput on the GPU ({machine['cuda_device']}):")
        for row in gpu_rates:
            print(f"  {row['benchmark']}: {_fmt(row['ours'])} {row['unit']}")
    print("\n" + describe_runs(timings, loads))
    failed = sorted({str(row["benchmark"]) for row in rows if "error" in row})
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(format_markdown(rows, machine, timings, loads) + "\n")
        print(f"Wrote the Markdown table to {args.markdown}")
    if args.json:
        payload = {"machine": machine, "quick": args.quick, "timings_s": timings, "load_average": loads, "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        # NaN is not JSON; None keeps the file readable by strict parsers.
        text = json.dumps(_nan_to_none(payload), indent=2)
        args.json.write_text(text + "\n")
        print(f"Saved {len(rows)} rows to {args.json}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
