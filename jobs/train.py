"""`protorec train`: train on a day range, evaluate on another, print a per-scenario table.

Runs as one process, or under torchrun for several:
``torchrun --nproc_per_node=2 -m protorec.jobs.cli train --config simulator ...``
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train on days A..B, evaluate on C..D")
    p.add_argument("--config", default="simulator", help="YAML file or a name in configs/")
    p.add_argument("--dataset", help="contract data set (default: the config's data.dataset)")
    p.add_argument("--train", required=True, metavar="A..B", help="training days")
    p.add_argument("--test", required=True, metavar="C..D", help="evaluation days")
    p.add_argument("--model", help="override model.name")
    p.add_argument("--out", help="write the metrics JSON here")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from protorec.pipeline.distributed import init_distributed, shutdown_distributed
    from protorec.pipeline.experiment import oracle_metrics, train_and_evaluate
    from protorec.pipeline.job_config import load_config
    from protorec.pipeline.metrics import metrics_markdown

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = load_config(args.config)
    if args.model:
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, name=args.model)
        )
    dataset = args.dataset or config.data.dataset
    ctx = init_distributed(args.device)
    if ctx.device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads() // ctx.world_size))
    try:
        metrics = train_and_evaluate(
            config, dataset, args.train, args.test, ctx, progress=not args.quiet
        )
        if ctx.is_main:
            oracle = oracle_metrics(config, dataset, args.test)
            if oracle is not None:
                metrics["oracle"] = oracle
            print(f"\n{config.model.name} on {args.test} (trained on {args.train}):")
            print(metrics_markdown(metrics))
            if oracle is not None:
                print("\noracle (the simulator's true click probability):")
                print(metrics_markdown(oracle))
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(metrics, indent=2, allow_nan=False))
    finally:
        shutdown_distributed()
    return 0
