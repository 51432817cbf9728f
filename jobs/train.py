"""`protorec train`: train on a day range, evaluate on another, print a per-scenario table.

Runs as one process, or under torchrun for several:
``torchrun --nproc_per_node=2 -m protorec.jobs.cli train --config simulator ...``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from protorec.pipeline.quiet import add_log_level_argument, setup_logging
from protorec.pipeline.threads import add_threads_argument


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train on days A..B, evaluate on C..D")
    p.add_argument("--config", default="simulator", help="YAML file or a name in configs/")
    p.add_argument("--dataset", help="contract data set (default: the config's data.dataset)")
    p.add_argument("--train", required=True, metavar="A..B", help="training days")
    p.add_argument("--test", required=True, metavar="C..D", help="evaluation days")
    p.add_argument(
        "--model",
        help="a model variant (pipeline/variants.py): a model.name, "
        "gpdnet, a DistProto ablation, a watch-time head",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (YAML value), after --model; repeatable",
    )
    p.add_argument("--out", help="write the metrics JSON here")
    p.add_argument(
        "--export",
        metavar="DIR",
        help="also export the trained model to DIR "
        "(the daily job's export: `protorec evaluate --model DIR` scores it)",
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write TensorBoard events of the "
        "run to DIR (needs the tensorboard package): tensorboard --logdir DIR",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto: CUDA when torch sees a device, else CPU",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_argument(p)
    add_log_level_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from protorec.pipeline.config import ConfigError
    from protorec.pipeline.distributed import (
        device_type,
        init_distributed,
        shutdown_distributed,
    )
    from protorec.pipeline.experiment import oracle_metrics, train_and_evaluate
    from protorec.pipeline.inputs import InputError, check_days
    from protorec.pipeline.job_config import load_config
    from protorec.pipeline.loader import oov_summary
    from protorec.pipeline.metrics import metrics_markdown
    from protorec.pipeline.threads import set_threads
    from protorec.pipeline.trainer import check_embedding_optimizer
    from protorec.pipeline.variants import apply_overrides, parse_override, variant_config

    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
        if args.model:
            config = variant_config(config, args.model)
        config = apply_overrides(config, [parse_override(s) for s in args.overrides])
        # the config first: a setting that cannot run is wrong whatever the data
        check_embedding_optimizer(config.train, torch.device(device_type(args.device)))
        dataset = args.dataset or config.data.dataset
        check_days(dataset, [("--train", args.train), ("--test", args.test)])
    except (ConfigError, InputError) as exc:
        print(f"protorec train: {exc}", file=sys.stderr)
        return 2
    set_threads(args.threads)
    ctx = init_distributed(args.device)
    try:
        metrics = train_and_evaluate(
            config,
            dataset,
            args.train,
            args.test,
            ctx,
            progress=not args.quiet,
            export_dir=args.export,
            tensorboard_dir=args.tensorboard,
        )
        if ctx.is_main:
            oracle = oracle_metrics(config, dataset, args.test)
            if oracle is not None:
                metrics["oracle"] = oracle
            print(f"\n{config.model.name} on {args.test} (trained on {args.train}):")
            print(metrics_markdown(metrics))
            print(oov_summary(metrics["loader"]["test"]))
            if oracle is not None:
                print("\noracle (the simulator's true click probability):")
                print(metrics_markdown(oracle))
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(metrics, indent=2, allow_nan=False))
    finally:
        shutdown_distributed()
    return 0
