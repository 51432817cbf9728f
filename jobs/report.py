"""`protorec report`: the daily job's history, per day and scenario, as a Markdown table."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="per-day, per-scenario metrics and drift of a workdir")
    p.add_argument("--workdir", required=True, help="the daily job's work directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from protorec.pipeline.daily_report import daily_table

    print(daily_table(args.workdir))
    return 0
