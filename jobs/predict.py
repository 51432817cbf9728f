"""`protorec predict`: an export's scores of every row of a day range, as a Parquet file.

Reads an export (``pipeline/export.py``: verified against its manifest, loaded as a plain
CPU model in this one process), scores the days batch by batch and streams the row keys
with ``p_click`` (and ``watch_pred_ms`` with a watch head) to ``--out``
(``pipeline/predict.py``). The inputs are checked before the model is loaded: a missing
export, a bad day range or a missing day is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from protorec.pipeline.quiet import add_log_level_argument, setup_logging


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="score every row of days A..B with an export")
    p.add_argument("--model", required=True, metavar="EXPORT", help="export directory")
    p.add_argument("--dataset", required=True, metavar="DIR", help="contract data set")
    p.add_argument("--dates", required=True, metavar="A..B", help="days to score")
    p.add_argument("--out", required=True, metavar="FILE.parquet", help="write the scores here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_log_level_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the job: 0 on success, 2 on a bad export, day range or missing day (one line)."""
    from protorec.pipeline.contract import days_in_range
    from protorec.pipeline.day_reader import DayReader
    from protorec.pipeline.export import ExportError, load_export, verify_export
    from protorec.pipeline.predict import predict_to_parquet

    try:
        reader = DayReader(args.dataset, days_in_range(args.dates))
        verify_export(args.model)
    except (ExportError, FileNotFoundError, ValueError) as exc:
        print(f"protorec predict: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level)
    log = logging.getLogger("protorec")
    config, model = load_export(args.model)
    rows = predict_to_parquet(config, model, reader, args.out, progress=not args.quiet)
    log.info(
        "%s (%s): %d rows of %s scored into %s",
        args.model,
        config.model.name,
        rows,
        args.dates,
        args.out,
    )
    return 0
