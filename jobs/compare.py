"""`protorec compare`: every model variant x seed on the same days; tables and a chart.

One process by default, or under torchrun (rank 0 alone writes):
``torchrun --nproc_per_node=2 -m protorec.jobs.cli compare --config simulator ...``.
Interrupted (Ctrl-C: one line, exit status 130), it resumes: run it again with the same
flags and ``--out``; the finished runs are kept.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from protorec.pipeline.quiet import add_log_level_argument, setup_logging
from protorec.pipeline.threads import add_threads_argument

#: Exit status after Ctrl-C: 128 + SIGINT, as a shell reports a program the signal ended.
EXIT_INTERRUPTED = 130


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="train and evaluate several model variants over seeds, side by side"
    )
    p.add_argument("--config", default="simulator", help="YAML file or a name in configs/")
    p.add_argument(
        "--models",
        required=True,
        metavar="A,B,...",
        help="comma-separated model variants (pipeline/variants.py), e.g. "
        "shared_bottom,mmoe,ple,star,distproto,gpdnet",
    )
    p.add_argument("--train", required=True, metavar="A..B", help="training days")
    p.add_argument("--test", required=True, metavar="C..D", help="evaluation days")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per model (train.seed)")
    p.add_argument("--out", default="compare", help="directory of the runs and tables")
    p.add_argument("--dataset", help="contract data set (default: the config's data.dataset)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for every run (YAML value); repeatable",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto: CUDA when torch sees a device, else CPU",
    )
    p.add_argument("--progress", action="store_true", help="progress bars of the passes")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no bar of the runs done and their ETA (shown by default when stderr is a terminal)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write the tables of the runs finished in --out",
    )
    add_threads_argument(p)
    add_log_level_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the job: 0 on success, 2 on a bad config or ``--out``, 130 on Ctrl-C.

    Each failure is one line: why, or after Ctrl-C the runs kept and how to resume.
    """
    from protorec.pipeline.config import ConfigError
    from protorec.pipeline.inputs import InputError

    try:
        return _compare(args)
    except (ConfigError, InputError) as exc:
        print(f"protorec compare: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # torchrun passes Ctrl-C to every rank: one line from rank 0 is enough.
        if os.environ.get("RANK", "0") == "0":
            print(
                f"\nprotorec compare: interrupted; {_finished(args)} runs finished and kept "
                f"in {Path(args.out, 'runs')}: run the same command again to resume",
                file=sys.stderr,
            )
        return EXIT_INTERRUPTED


def _finished(args: argparse.Namespace) -> str:
    """``N of M``: the runs of this compare whose records are in ``--out``."""
    from protorec.pipeline.compare import Run

    variants = [v.strip() for v in args.models.split(",") if v.strip()]
    runs = [Run(v, s) for v in variants for s in range(args.seeds)]
    done = sum(Path(args.out, "runs", f"{r.run_id}.json").exists() for r in runs)
    return f"{done} of {len(runs)}"


def _compare(args: argparse.Namespace) -> int:
    from protorec.pipeline.compare import run_compare, summary_markdown
    from protorec.pipeline.distributed import init_distributed, shutdown_distributed
    from protorec.pipeline.inputs import check_days
    from protorec.pipeline.job_config import load_config
    from protorec.pipeline.threads import set_threads
    from protorec.pipeline.variants import apply_overrides, parse_override

    setup_logging(args.log_level)
    config = apply_overrides(load_config(args.config), [parse_override(s) for s in args.overrides])
    variants = [v.strip() for v in args.models.split(",") if v.strip()]
    dataset = args.dataset or config.data.dataset
    # --report-only reads the test days (the oracle's figures), not the training days.
    check_days(
        dataset,
        [("--test", args.test)]
        if args.report_only
        else [("--train", args.train), ("--test", args.test)],
    )
    set_threads(args.threads)
    ctx = init_distributed(args.device)
    try:
        summary = run_compare(
            config,
            variants,
            args.seeds,
            dataset,
            args.train,
            args.test,
            args.out,
            ctx,
            progress=args.progress,
            train=not args.report_only,
            runs_bar=not args.quiet and sys.stderr.isatty(),
        )
        if summary is not None:
            print(summary_markdown(summary))
    finally:
        shutdown_distributed()
    return 0
