"""Benchmark of training throughput on CPU: samples/s of whole passes, loader included.

Run: ``OMP_NUM_THREADS=2 python benchmarks/bench_train.py [--models mmoe,distproto
--rows-per-day 100000 --days 2 --passes 2 --threads 2 --batch 512]``; issue 17's ratios:
``OMP_NUM_THREADS=1 python benchmarks/bench_train.py --models mmoe,distproto --threads 1
--rows-per-day 50000 --days 1 --passes 3`` (DistProto / MMoE) and ``--models tr,prowtp``
(ProWTP / TR).

It simulates ``--days`` days of the default simulator world into a temporary folder, then
in one process (a one-rank gloo group, as ``protorec train`` runs) builds every model
(``shard_model``, and the watch heads' statistics / ProWTP's codebook fitted on those days,
as ``protorec train`` does) and times ``--passes`` full training passes of
``trainer.train_pass`` over a shuffled ``ContractLoader`` — the exact training path of
``protorec train``, including reading and converting the Parquet rows, DMP with the fused
embedding optimiser, the TorchRec train pipeline, AdamW and clipping. The models' passes
are interleaved (pass 1 of each, then pass 2, ...), so that other jobs' load reaches them
alike; then each model's samples/s ratio to the first model of ``--models`` (its
reference), of the best passes and of the medians. Beside it, the loader alone over the
same pass. The first pass of each model pays one-off costs (allocator, the pipeline's fx
trace); the table gives every pass and the median.

Yardstick (issue 6): the plain-PyTorch Scenario-Wise-Rec MMoE trains at 22-25k samples/s
in this setting (batch 512, 2 threads, one process); targets: MMoE >= 25k, DistProto
>= 20k; issue 17: DistProto >= 0.8x MMoE, ProWTP's step <= 1.5x TR's (figures in
docs/ot.md).

Run it on a quiet machine: with more OpenMP threads than free cores (another job on one
of 2 cores and ``--threads 2`` here), PyTorch's workers spin-wait and a pass ran over 30x
slower; ``--threads 1`` then gives the per-core figure.

``--profile MODEL`` instead prints torch.profiler's top operators over a few dozen steps of
that model (where a step's time goes).

``--device cuda`` runs the same path as ``protorec train --device cuda`` (NCCL, the dense
arch and the batches on the GPU, each pass timed up to a ``torch.cuda.synchronize()``);
not run yet: no GPU has been lent to this project's sessions so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from protorec.pipeline.contract import parse_day_range
from protorec.pipeline.day_reader import DayReader
from protorec.pipeline.distributed import init_distributed, shutdown_distributed
from protorec.pipeline.job_config import ProtorecConfig, load_config
from protorec.pipeline.loader import ContractLoader
from protorec.pipeline.model_factory import build_model
from protorec.pipeline.refresh import refresh_watch_head
from protorec.pipeline.simulator import simulate
from protorec.pipeline.trainer import shard_model, train_pass
from protorec.pipeline.variants import variant_config


def _days(text: str) -> list[dt.date]:
    lo, hi = parse_day_range(text)
    return [lo + dt.timedelta(days=i) for i in range((hi - lo).days + 1)]


def _loader(config: ProtorecConfig, days: str, data: Path, epoch: int) -> ContractLoader:
    loader = ContractLoader(config, days, dataset_dir=data, progress=False)
    loader.set_epoch(epoch)
    return loader


def bench_loader(config: ProtorecConfig, days: str, data: Path, passes: int) -> list[float]:
    """Rows/s of full shuffled loader passes (read, convert, cut into batches)."""
    rates = []
    for epoch in range(passes):
        t0 = time.perf_counter()
        loader = _loader(config, days, data, epoch)
        rows = sum(batch.batch_size for batch in loader)
        rates.append(rows / (time.perf_counter() - t0))
    return rates


def _sync(ctx) -> None:
    """Wait for the device's queued work, so that a pass's time is all of it."""
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)


def bench_models(
    configs: dict[str, ProtorecConfig], days: str, data: Path, passes: int, ctx
) -> dict[str, list[float]]:
    """Samples/s of full training passes (loader construction and iteration included).

    The models' passes are interleaved (pass 1 of every model, then pass 2, ...), so that a
    change in the machine's load reaches every model alike and their ratios stay fair.
    """
    sharded = {}
    for name, config in configs.items():
        torch.manual_seed(config.train.seed)
        sharded[name] = shard_model(
            build_model(config, ebc_device="meta"), ctx, config.train, config.loader.batch_size
        )
        # Watch heads' tables / ProWTP's codebook from the pass's days, as protorec train does.
        refresh_watch_head(sharded[name].module, DayReader(data, _days(days)))
    rates: dict[str, list[float]] = {name: [] for name in configs}
    for epoch in range(passes):
        for name, config in configs.items():
            t0 = time.perf_counter()
            loader = _loader(config, days, data, epoch)
            stats = train_pass(
                sharded[name], loader, ctx, config.train, len(loader), progress=False
            )
            _sync(ctx)
            rates[name].append(stats.samples / (time.perf_counter() - t0))
    return rates


def profile_model(config: ProtorecConfig, days: str, data: Path, ctx, steps: int) -> None:
    """Print torch.profiler's operators by self CPU time over ``steps`` training steps."""
    from torch.profiler import ProfilerActivity, profile

    sharded = shard_model(
        build_model(config, ebc_device="meta"), ctx, config.train, config.loader.batch_size
    )
    refresh_watch_head(sharded.module, DayReader(data, _days(days)))
    batches = list(_loader(config, days, data, 0))
    train_pass(sharded, batches[:20], ctx, config.train, progress=False)  # warm-up
    activities = [ProfilerActivity.CPU]
    if ctx.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        train_pass(sharded, batches[20 : 20 + steps], ctx, config.train, progress=False)
        _sync(ctx)
    sort = "self_cuda_time_total" if ctx.device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        default="mmoe,distproto",
        help="model variants (pipeline/variants.py), comma-separated",
    )
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--profile", metavar="MODEL", help="profile MODEL instead")
    parser.add_argument("--profile-steps", type=int, default=50)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    # The table is the output: TorchRec's planner notes and deprecation warnings are not.
    logging.basicConfig(level=logging.ERROR, force=True)
    warnings.filterwarnings("ignore")

    torch.set_num_threads(args.threads)
    base = load_config("simulator")
    base = dataclasses.replace(
        base,
        simulator=dataclasses.replace(base.simulator, rows_per_day=args.rows_per_day),
        loader=dataclasses.replace(base.loader, batch_size=args.batch),
        # one log line per pass at most: logging is not what is measured
        train=dataclasses.replace(base.train, log_every=1_000_000),
    )
    start = dt.date(2026, 1, 1)
    days = f"{start}..{start + dt.timedelta(days=args.days - 1)}"
    ctx = init_distributed(args.device)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
            data = Path(tmp) / "data"
            simulate(data, start, args.days, base.simulator, base.data.scenarios, progress=False)
            rows = args.rows_per_day * args.days
            if args.profile:
                profile_model(
                    variant_config(base, args.profile), days, data, ctx, args.profile_steps
                )
                return
            print(
                f"{rows:,} simulated rows per pass, batch {args.batch}, "
                f"{torch.get_num_threads()} threads, one process on {ctx.device}, "
                f"{args.passes} passes\n"
            )
            print("| what | samples/s per pass | median |")
            print("|---|---|---:|")
            _print_row("loader alone", bench_loader(base, days, data, args.passes))
            names = args.models.split(",")
            rates = bench_models(
                {name: variant_config(base, name) for name in names}, days, data, args.passes, ctx
            )
            for name in names:
                _print_row(name, rates[name])
            # The first model is the reference: ratios of the best passes (the least
            # disturbed by other jobs) and of the medians.
            ref = names[0]
            print()
            for name in names[1:]:
                best = max(rates[name]) / max(rates[ref])
                median = statistics.median(rates[name]) / statistics.median(rates[ref])
                print(
                    f"{name} / {ref} samples/s: {best:.2f} (best passes), {median:.2f} "
                    f"(medians); step time {1 / best:.2f}x, {1 / median:.2f}x"
                )
    finally:
        shutdown_distributed()


def _print_row(name: str, rates: list[float]) -> None:
    passes = ", ".join(f"{r:,.0f}" for r in rates)
    print(f"| {name} | {passes} | {statistics.median(rates):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
