"""`protorec evaluate`: a saved model's figures on a day range, per scenario and overall.

Reads an export (``pipeline/export.py``: verified against its manifest, loaded as a plain
CPU model in this one process), predicts every row of the days, and prints the figures of
``compute_metrics`` (with the simulator's oracle beside, on simulated data) as a Markdown
table; ``--out`` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from protorec.pipeline.quiet import add_log_level_argument, setup_logging
from protorec.pipeline.threads import add_threads_argument


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate an exported model on days A..B",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--model", required=True, metavar="PATH", help="export directory")
    p.add_argument(
        "--dataset", metavar="DIR", help="contract data set (default: the config's data.dataset)"
    )
    # The old name, kept so that existing scripts run; it says to use --dataset.
    p.add_argument("--data", dest="data_deprecated", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--dates", required=True, metavar="A..B", help="days to evaluate")
    p.add_argument("--out", metavar="FILE", help="also write the metrics JSON here")
    p.add_argument(
        "--config",
        help="read the data with this config's data and loader "
        "sections (default: the export's own config); its features and "
        "scenarios must be the export's",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the evaluation config (YAML value); repeatable",
    )
    p.add_argument("--progress", action="store_true", help="progress bar of the read")
    add_threads_argument(p)
    add_log_level_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the job: 0 on success, 2 on a bad config, export or day range (one line why)."""
    from protorec.pipeline.config import ConfigError
    from protorec.pipeline.export import ExportError
    from protorec.pipeline.inputs import InputError

    try:
        return _evaluate(args)
    except (ConfigError, ExportError, InputError, FileNotFoundError) as exc:
        print(f"protorec evaluate: {exc}", file=sys.stderr)
        return 2


def _evaluate(args: argparse.Namespace) -> int:
    import dataclasses

    from protorec.pipeline.config import ConfigError
    from protorec.pipeline.experiment import evaluate_model
    from protorec.pipeline.export import load_export, read_export_config
    from protorec.pipeline.inputs import check_days
    from protorec.pipeline.job_config import load_config
    from protorec.pipeline.loader import oov_summary
    from protorec.pipeline.metrics import metrics_markdown
    from protorec.pipeline.provenance import computed_on
    from protorec.pipeline.threads import set_threads
    from protorec.pipeline.variants import apply_overrides, parse_override

    setup_logging(args.log_level)
    if args.data_deprecated:
        print("protorec evaluate: --data is deprecated, use --dataset", file=sys.stderr)
    config = read_export_config(args.model)
    if args.config:
        other = load_config(args.config)
        # The model's tables and towers are fixed by the export: only where and how the
        # data is read may change.
        for section, a, b in (
            ("features", config.features, other.features),
            ("data.scenarios", config.data.scenarios, other.data.scenarios),
        ):
            if a != b:
                raise ConfigError(
                    args.config,
                    section,
                    f"differs from the export's ({args.model}): the model cannot read these inputs",
                )
        config = dataclasses.replace(config, data=other.data, loader=other.loader)
    config = apply_overrides(config, [parse_override(s) for s in args.overrides])
    dataset = args.dataset or args.data_deprecated or config.data.dataset
    check_days(dataset, [("--dates", args.dates)])
    _, model = load_export(args.model)
    set_threads(args.threads)
    logging.getLogger(__name__).info(
        "evaluating %s (%s) on %s of %s", args.model, config.model.name, args.dates, dataset
    )
    metrics = evaluate_model(config, model, dataset, args.dates, progress=args.progress)
    metrics["model"] = {"path": str(Path(args.model).resolve()), "name": config.model.name}
    # An export is evaluated in this one process, on every row of the days.
    metrics["computed_on"] = computed_on(
        dataset,
        args.dates,
        metrics["overall"]["samples"],
        "every row of the days",
        config.model.name,
        1,
    )
    print(f"\n{config.model.name} ({args.model}) on {args.dates}:")
    print(metrics_markdown(metrics))
    print(oov_summary(metrics["loader"]["test"]))
    if "oracle" in metrics:
        print("\noracle (the simulator's truth):")
        print(metrics_markdown(metrics["oracle"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2, allow_nan=False))
    return 0
