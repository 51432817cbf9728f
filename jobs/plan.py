"""`protorec plan`: TorchRec's sharding plan and memory estimate for a target topology.

Plans on paper: the model is built on the meta device, so a 1-billion-row table costs
nothing here, and the topology (world size, device, HBM) need not exist on this machine.
"""

from __future__ import annotations

import argparse
import logging

from protorec.pipeline.quiet import add_log_level_argument, setup_logging


def _table_rows(text: str) -> tuple[str, int]:
    name, sep, rows = text.partition("=")
    if not sep or not rows.isdigit() or int(rows) < 2:
        raise argparse.ArgumentTypeError(f"expected NAME=ROWS with ROWS >= 2, got {text!r}")
    return name, int(rows)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plan", help="print the sharding plan for a target topology")
    p.add_argument("--config", default="simulator", help="YAML file or a name in configs/")
    p.add_argument("--world-size", type=int, required=True, help="ranks of the target")
    p.add_argument("--local-world-size", type=int, help="ranks per node (default: all)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="the target's devices")
    p.add_argument("--hbm-gb", type=float, help="device memory per rank, GiB")
    p.add_argument("--batch-size", type=int, help="per-rank batch (default: loader's)")
    p.add_argument(
        "--table-rows",
        type=_table_rows,
        action="append",
        default=[],
        metavar="NAME=ROWS",
        help="override a sparse feature's table size",
    )
    add_log_level_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology

    from protorec.pipeline.job_config import load_config
    from protorec.pipeline.model_factory import build_model
    from protorec.pipeline.trainer import make_sharders

    config = load_config(args.config)
    overrides = dict(args.table_rows)
    unknown = set(overrides) - {f.name for f in config.features.sparse}
    if unknown:
        raise SystemExit(f"plan: --table-rows names unknown feature(s) {sorted(unknown)}")
    sparse = [
        dataclasses.replace(f, num_embeddings=overrides.get(f.name, f.num_embeddings))
        for f in config.features.sparse
    ]
    config = dataclasses.replace(
        config, features=dataclasses.replace(config.features, sparse=sparse)
    )
    # The planner's memory and balance report goes to this logger at INFO.
    setup_logging(args.log_level, "%(message)s")
    logging.getLogger("torchrec.distributed.planner.stats").setLevel(logging.INFO)
    topology_args = {"hbm_cap": int(args.hbm_gb * 1024**3)} if args.hbm_gb else {}
    topology = Topology(
        world_size=args.world_size,
        compute_device=args.device,
        local_world_size=args.local_world_size,
        **topology_args,
    )
    planner = EmbeddingShardingPlanner(
        topology=topology, batch_size=args.batch_size or config.loader.batch_size
    )
    plan = planner.plan(build_model(config, ebc_device="meta"), make_sharders())
    print(plan)
    return 0
