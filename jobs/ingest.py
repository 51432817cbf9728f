"""`protorec ingest SOURCE INPUT...`: a raw source as distributed -> the contract data set.

Sources: ``kuairand`` (INPUT: log files, ``log_*.csv`` or the 27K like/hate TSV),
``open_bandit`` (INPUT: one OBD policy folder, e.g. ``open_bandit/bts``) and ``parquet``
(INPUT: your own contract-shaped Parquet files or folders; needs ``--config``, whose
``ingest.parquet`` section maps column names and declares side tables). Exit status:
0 published; 1 stopped (unreadable file, missing column, a mostly bad day; nothing was
published); 2 bad flags or config. A day that is already published is left as it was and
the new rows of that day quarantined as ``day_already_published`` (exit 0, reported);
``--replace`` replaces such days and prints their row counts before and after.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SOURCES = ("kuairand", "open_bandit", "parquet")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``ingest`` subcommand on ``subparsers`` and set its ``func``."""
    p = subparsers.add_parser(
        "ingest",
        help="read a raw source (KuaiRand, Open Bandit, your Parquet) into the contract data set",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("source", choices=SOURCES)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    p.add_argument("--config", default=None, help="protorec YAML config (default: the source's)")
    p.add_argument("--out", type=Path, default=None, help="data set folder (default data.dataset)")
    p.add_argument(
        "--side-tables",
        type=Path,
        default=None,
        help="kuairand: folder of user_features_pure.csv and video_features_basic_pure.csv",
    )
    p.add_argument(
        "--tab",
        type=int,
        default=None,
        help="kuairand: scenario code for files without a 'tab' column",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace days already published (default: leave them, quarantine the new rows)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the job and print its summary; the exit status is in the module doc."""
    # Imported here, not at the top: `protorec --help` would load torch through them.
    from protorec.pipeline.config import ConfigError
    from protorec.pipeline.contract import ContractError
    from protorec.pipeline.ingest import SUMMARY_FILE, IngestError, ingest
    from protorec.pipeline.ingest_kuairand import kuairand_files
    from protorec.pipeline.ingest_open_bandit import open_bandit_files
    from protorec.pipeline.ingest_parquet import parquet_files
    from protorec.pipeline.job_config import CONFIG_DIR, load_config

    if args.source == "parquet" and not args.config:
        print(
            "protorec ingest: parquet needs --config (its data.scenarios and "
            "ingest.parquet section describe your data)",
            file=sys.stderr,
        )
        return 2
    try:
        config = load_config(args.config or CONFIG_DIR / f"{args.source}.yaml")
    except ConfigError as exc:
        print(f"protorec ingest: {exc}", file=sys.stderr)
        return 2
    if args.source != "kuairand" and (args.side_tables or args.tab is not None):
        print(
            "protorec ingest: --side-tables and --tab are for kuairand (parquet: "
            "ingest.parquet.side_tables in the config)",
            file=sys.stderr,
        )
        return 2
    if args.source == "open_bandit" and len(args.inputs) != 1:
        print("protorec ingest: open_bandit takes one policy folder", file=sys.stderr)
        return 2
    try:
        if args.source == "kuairand":
            files, notes = kuairand_files(
                args.inputs, config.ingest.kuairand, args.tab, args.side_tables
            )
        elif args.source == "parquet":
            files, notes = parquet_files(args.inputs, config.ingest.parquet)
        else:
            files, notes = open_bandit_files(args.inputs[0], config.ingest.open_bandit)
        summary = ingest(
            files,
            config.data,
            config.ingest,
            source=args.source,
            dataset=args.out,
            notes=notes,
            progress=not args.quiet,
            replace=args.replace,
        )
    except (IngestError, ContractError, OSError) as exc:
        print(f"protorec ingest: stopped, nothing published: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(summary.table())
    else:
        for line in summary.publication_lines():  # never silent about published days
            print(line)
    print(
        f"published {len(summary.published)} day(s) into {summary.dataset}; "
        f"summary in {Path(summary.dataset) / SUMMARY_FILE}"
    )
    return 0
