"""``main``: parse, check, run one command, print its result (rank 0), map errors to exit status 2."""

from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

from lightning_ganeval.cli import setup
from lightning_ganeval.cli.arguments import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    MAX_DEFAULT_WORKERS,
    PROG,
    build_parser,
    check_options,
)
from lightning_ganeval.cli.commands import Session, run_metric, run_stats
from lightning_ganeval.cli.folders import ShardError, describe_skipped
from lightning_ganeval.cli.messages import InputError, one_line_warnings
from lightning_ganeval.metrics.registry import metric_entry

__all__ = ["format_result", "main"]


def format_result(result: dict[str, Any]) -> str:
    rows = []
    for key, value in result.items():
        if key == "files":
            shown = "; ".join(_describe_counts(argument, counts) for argument, counts in value.items())
        else:
            shown = f"{value:.6g}" if isinstance(value, float) else ("-" if value is None else str(value))
        rows.append((key, shown))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {shown}" for key, shown in rows)


def _describe_counts(argument: str, counts: dict[str, Any]) -> str:
    """``A: read 10 of 12 (--num-samples), skipped 2 (1 not .png/.jpg/.jpeg, ...)``."""
    text = f"{argument}: read {counts['read']}"
    if counts["read"] != counts["found"]:
        text += f" of {counts['found']} (--num-samples)"
    text += f", skipped {counts['skipped']}"
    if counts["skipped"]:
        text += " (" + describe_skipped(Counter(counts["skipped_by_reason"])) + ")"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: The arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on bad input (reported as one line on stderr).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if args.network is None:
        args.network = "clip" if args.command == "cmmd" else "inception"
    env_rank = setup.env_int("RANK", 0)
    created = False
    rank = env_rank
    prefix = f"{PROG} {args.command}"

    def make_session() -> Session:
        nonlocal created, rank
        from lightning_ganeval.real_images import default_max_workers

        local_rank = setup.env_int("LOCAL_RANK", 0)
        device = setup.device_for(args.device, local_rank if setup.env_int("WORLD_SIZE", 1) > 1 else None)
        rank, world_size, created = setup.start_distributed(device)
        workers = args.workers
        if workers is None:
            local = setup.env_int("LOCAL_WORLD_SIZE", world_size)
            workers = min(MAX_DEFAULT_WORKERS, default_max_workers(max(1, local)))
        network = setup.build_network(args, device)
        return Session(network, device, rank, world_size, args.batch_size, workers, not args.no_progress)

    try:
        with warnings.catch_warnings():
            # Library warnings as one line each, in the command line's terms (rank 0 only, as the result).
            warnings.showwarning = one_line_warnings(prefix, env_rank == 0)
            check_options(args)
            if args.command == "stats":
                result = run_stats(args, make_session)
            else:
                result = run_metric(metric_entry(args.command), args, make_session)
    except InputError as err:
        # Errors found before the pass are the same on every rank: rank 0 reports them. Errors of a pass (an
        # unreadable file) are found by one rank: it reports them (the others stop as `OtherRankFailed`).
        if rank == 0 or isinstance(err, ShardError):
            print(f"{prefix}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as err:
        from lightning_ganeval.distributed import OtherRankFailed

        if isinstance(err, OtherRankFailed):  # another process failed and reported why
            return EXIT_BAD_INPUT
        raise
    except KeyboardInterrupt:
        return 130
    finally:
        if created:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(result) if args.json else format_result(result), flush=True)
    return EXIT_OK
