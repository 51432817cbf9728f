"""`protorec tune`: search a variant's settings on validation days (Optuna), resumable.

One process (a search runs its trials one after another); run it again with the same
``--out`` to continue a stopped search or to add trials.
"""

from __future__ import annotations

import argparse
import sys

from protorec.pipeline.quiet import add_log_level_argument, setup_logging
from protorec.pipeline.threads import add_threads_argument


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "tune",
        help="search a model variant's settings on validation days (Optuna)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--config", default="simulator", help="YAML file or a name in configs/")
    p.add_argument(
        "--model",
        required=True,
        help="the variant to tune (as in compare --models), e.g. mmoe, distproto",
    )
    p.add_argument("--train", required=True, metavar="A..B", help="training days")
    p.add_argument(
        "--valid",
        required=True,
        metavar="C..D",
        help="validation days the trials are scored on (never the test days)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=20,
        help="finished trials wanted in the study (resumed ones count)",
    )
    p.add_argument(
        "--metric",
        default="auc",
        help="overall validation metric: auc, gauc, xauc, xgauc (maximised) or "
        "logloss, mae, rmse (minimised)",
    )
    p.add_argument(
        "--out", required=True, help="study folder: tune.db (resumable), trials.json, best.yaml"
    )
    p.add_argument("--dataset", help="contract data set (default: the config's data.dataset)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for every trial (YAML value); repeatable",
    )
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto: CUDA when torch sees a device, else CPU",
    )
    add_threads_argument(p)
    add_log_level_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """0 when the study has its trials; 2 on a bad config, flag or --out (one line why)."""
    from protorec.pipeline.config import ConfigError
    from protorec.pipeline.distributed import init_distributed, shutdown_distributed
    from protorec.pipeline.inputs import InputError, check_days
    from protorec.pipeline.job_config import load_config
    from protorec.pipeline.threads import set_threads
    from protorec.pipeline.trainer import check_embedding_optimizer
    from protorec.pipeline.tune import tune
    from protorec.pipeline.variants import apply_overrides, parse_override

    setup_logging(args.log_level)
    if args.trials < 1:
        print("protorec tune: --trials must be >= 1", file=sys.stderr)
        return 2
    try:
        config = apply_overrides(
            load_config(args.config), [parse_override(s) for s in args.overrides]
        )
        check_days(
            args.dataset or config.data.dataset, [("--train", args.train), ("--valid", args.valid)]
        )
    except (ConfigError, InputError) as exc:
        print(f"protorec tune: {exc}", file=sys.stderr)
        return 2
    set_threads(args.threads)
    ctx = init_distributed(args.device)
    try:
        if ctx.world_size > 1:
            print(
                "protorec tune: runs in one process (its trials run one after another); "
                "start it without torchrun",
                file=sys.stderr,
            )
            return 2
        check_embedding_optimizer(config.train, ctx.device)
        result = tune(
            config,
            args.model,
            args.dataset or config.data.dataset,
            args.train,
            args.valid,
            args.trials,
            args.out,
            ctx,
            metric=args.metric,
            seed=args.seed,
        )
    except ConfigError as exc:
        print(f"protorec tune: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    print(
        f"{args.model}: best {args.metric} {result.best_score:.4f} on {args.valid} after "
        f"{result.trials} trials, with:"
    )
    for key, value in result.best_values.items():
        print(f"  {key} = {value}")
    print(f"config with these values: {result.best_config} (use as --config)")
    return 0
