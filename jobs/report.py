"""`protorec report`: the daily job's history, per day and scenario, as a Markdown table."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="per-day, per-scenario metrics and drift of a workdir",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--workdir", required=True, help="the daily job's work directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the table: 0, or 2 when the work directory has no run records (one line why)."""
    from protorec.pipeline.daily_report import daily_table

    try:
        table = daily_table(args.workdir)
    except FileNotFoundError as exc:
        print(
            f"protorec report: --workdir: {exc} (the daily job writes one per day: "
            "jobs/train_daily.py --workdir DIR --date YYYY-MM-DD)",
            file=sys.stderr,
        )
        return 2
    print(table)
    return 0
