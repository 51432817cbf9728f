"""`protorec simulate`: write days of simulated contract data (the built-in default data set)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import replace
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``simulate`` subcommand on ``subparsers`` and set its ``func``."""
    p = subparsers.add_parser(
        "simulate",
        help="write simulated contract data, one Parquet partition per day",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--out", required=True, type=Path, help="contract data set folder")
    p.add_argument("--start", required=True, type=dt.date.fromisoformat, help="YYYY-MM-DD")
    p.add_argument("--days", required=True, type=int, help="number of days (>= 1)")
    p.add_argument("--seed", type=int, default=None, help="overrides simulator.seed")
    p.add_argument(
        "--side-tables",
        type=Path,
        default=None,
        help="folder with KuaiRand's user_features_pure.csv and video_features_basic_pure.csv",
    )
    p.add_argument("--config", default="simulator", help="YAML file or a name in configs/")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-day lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the job: 0 on success, 1 if any row was quarantined (a simulator bug), 2 on bad input."""
    # Imported here, not at the top: `protorec --help` would load torch through them.
    from protorec.pipeline.job_config import load_config
    from protorec.pipeline.simulator import simulate

    if args.days < 1:
        print(f"protorec simulate: --days must be >= 1, got {args.days}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        sim = config.simulator
        if args.seed is not None:
            sim = replace(sim, seed=args.seed)  # replace() re-runs the range checks
        report = simulate(
            args.out,
            args.start,
            args.days,
            sim,
            config.data.scenarios,
            side_tables=args.side_tables,
            progress=not args.quiet,
        )
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError
        print(f"protorec simulate: {exc}", file=sys.stderr)
        return 2
    print(
        f"simulated {args.days} day(s) from {args.start} into {args.out}: "
        f"{report.rows_kept:,} rows kept, {report.rows_quarantined:,} quarantined"
    )
    return 0 if report.rows_quarantined == 0 else 1
