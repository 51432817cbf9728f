"""Benchmark of the contract loader: rows/s, batches/s and one rank's peak RSS, one core.

Run: ``OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_loader.py [--days 3
--rows 500000 --config simulator]`` (torch and pyarrow are set to one thread here).
It writes a synthetic contract data set with every column the config's features name
(random ids, a few out of vocabulary; log-normal dense values, a few null), then times full
passes with and without shuffle. Target (issue 2): at least 300k rows/s on one core for the
default features and batch size.

``--scale 1000000,5000000,20000000 [--shuffle-buffer S] [--dir /tmp/x] [--repeat 3]``:
for each size, writes one day of that many rows (in row groups of 2^20 rows, pyarrow's
default, as ``protorec ingest`` writes them) and times ``--repeat`` shuffled passes of one
rank (world size 1), each in a fresh process, printing its rows/s (wall clock, and per
CPU second of the process: the per-core figure on a loaded machine) and its peak RSS
(``ru_maxrss``) next to its RSS before the pass; the day is deleted after each size.
Target (issue 12): peak RSS flat within 20% from 1M to 20M rows a day, at least 1M rows/s
per core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from protorec.pipeline.contract import CONTRACT_COLUMNS, check_columns, partition_dir, write_day
from protorec.pipeline.job_config import ProtorecConfig, load_config
from protorec.pipeline.loader import ContractLoader


def _day_table(
    config: ProtorecConfig, day: dt.date, n: int, first_id: int, rng: np.random.Generator
) -> pa.Table:
    t0 = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
    cols = {
        "user_id": first_id + np.arange(n, dtype=np.int64),
        "item_id": rng.integers(0, 10_000, n),
        "scenario": rng.choice(config.data.scenarios, n).astype(np.int32),
        "ts_ms": t0 + rng.integers(0, 86_400_000, n),
        "click": rng.integers(0, 2, n).astype(np.int8),
        "watch_ms": rng.lognormal(9, 1, n),
        "duration_ms": rng.lognormal(9.8, 1.4, n),
    }
    for f in config.features.sparse:
        if f.column not in CONTRACT_COLUMNS:
            cols[f.column] = rng.integers(0, int(f.num_embeddings * 1.01) + 1, n)
    for f in config.features.dense:
        if f.column not in CONTRACT_COLUMNS:
            values = rng.lognormal(f.shift, 1.0, n)
            cols[f.column] = pa.array(values, mask=rng.random(n) < 0.01)
    return check_columns(pa.table(cols), "bench")


def _timed_pass(loader: ContractLoader) -> tuple[float, float, int, int]:
    """Seconds to the first batch (load), seconds in all, rows and batches seen."""
    t0 = time.perf_counter()
    first = None
    rows = batches = 0
    for batch in loader:
        if first is None:
            first = time.perf_counter() - t0
        rows += batch.batch_size
        batches += 1
    return first or 0.0, time.perf_counter() - t0, rows, batches


_DAY = dt.date(2026, 1, 1)
_GROUP_ROWS = 1 << 20


def _rss_mib() -> float:
    """Current resident set size (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def _write_big_day(config: ProtorecConfig, root: Path, rows: int) -> None:
    """One day of ``rows`` rows, written row group by row group (bounded memory)."""
    folder = partition_dir(root, _DAY)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    writer = None
    for start in range(0, rows, _GROUP_ROWS):
        part = _day_table(config, _DAY, min(_GROUP_ROWS, rows - start), start, rng)
        if writer is None:
            writer = pq.ParquetWriter(folder / "part-0.parquet", part.schema, compression="zstd")
        writer.write_table(part, row_group_size=_GROUP_ROWS)
    assert writer is not None
    writer.close()


def _measure(config: ProtorecConfig, root: str) -> None:
    """One shuffled pass of one rank over the day in ``root``; prints a JSON line."""
    loader = ContractLoader(config, [_DAY], root, rank=0, world_size=1, shuffle=True)
    before = _rss_mib()
    cpu0 = time.process_time()
    load_s, total_s, rows, batches = _timed_pass(loader)
    cpu_s = time.process_time() - cpu0
    assert rows == loader.num_rows and batches == len(loader)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": total_s,
                "cpu_seconds": cpu_s,
                "rss_before_mib": before,
                "peak_rss_mib": peak,
            }
        )
    )


def _scale(args: argparse.Namespace, config: ProtorecConfig) -> None:
    sizes = [int(x) for x in args.scale.split(",")]
    print(
        f"one rank, shuffled pass, batch_size={config.loader.batch_size}, "
        f"shuffle_buffer={config.loader.shuffle_buffer:,}, row groups of {_GROUP_ROWS:,} rows"
    )
    for rows in sizes:
        root = Path(tempfile.mkdtemp(prefix="bench_loader_", dir=args.dir))
        try:
            t0 = time.perf_counter()
            _write_big_day(config, root, rows)
            write_s = time.perf_counter() - t0
            cmd = [
                sys.executable,
                __file__,
                "--measure",
                str(root),
                "--config",
                args.config,
                "--shuffle-buffer",
                str(config.loader.shuffle_buffer),
                "--batch-size",
                str(config.loader.batch_size),
            ]
            for _ in range(args.repeat):
                out = json.loads(
                    subprocess.run(cmd, check=True, capture_output=True, text=True)
                    .stdout.strip()
                    .splitlines()[-1]
                )
                print(
                    f"{rows:>11,} rows: {out['rows'] / out['seconds']:>11,.0f} rows/s "
                    f"({out['seconds']:.1f} s; {out['rows'] / out['cpu_seconds']:,.0f} rows "
                    f"per CPU second), peak RSS {out['peak_rss_mib']:,.0f} MiB (RSS before "
                    f"the pass {out['rss_before_mib']:,.0f} MiB; data written in {write_s:.0f} s)",
                    flush=True,
                )
        finally:
            shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--rows", type=int, default=500_000, help="rows per day")
    parser.add_argument("--config", default="simulator")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--shuffle-buffer", type=int, default=None)
    parser.add_argument("--scale", default=None, help="comma-separated rows a day (one rank)")
    parser.add_argument("--dir", default=None, help="where --scale writes its days")
    parser.add_argument("--repeat", type=int, default=1, help="passes per --scale size")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    torch.set_num_threads(1)

    config = load_config(args.config)
    if args.batch_size:
        config.loader.batch_size = args.batch_size
    if args.shuffle_buffer:
        config.loader.shuffle_buffer = args.shuffle_buffer
    if args.measure:
        _measure(config, args.measure)
        return
    if args.scale:
        _scale(args, config)
        return
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(args.days)]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as out:
        for i, day in enumerate(days):
            table = _day_table(config, day, args.rows, i * args.rows, rng)
            write_day(out, day, table, table.slice(0, 0))
        t0 = time.perf_counter()
        loader = ContractLoader(config, days, out)
        scan_s = time.perf_counter() - t0
        feats = config.features
        print(
            f"rows={loader.num_rows:,} ({args.days} days) batch_size={config.loader.batch_size} "
            f"sparse={len(feats.sparse)} dense={len(feats.dense)} batches/pass={len(loader)}"
        )
        print(f"scan metadata : {scan_s * 1000:.1f} ms")
        for shuffle in (True, False):
            loader = ContractLoader(config, days, out, shuffle=shuffle)
            load_s, total_s, rows, batches = _timed_pass(loader)
            assert rows == loader.num_rows and batches == len(loader)
            iter_s = total_s - load_s
            print(
                f"shuffle={shuffle!s:5}: {rows / total_s:,.0f} rows/s, {batches / total_s:,.0f} "
                f"batches/s end to end ({total_s:.2f} s: load+convert {load_s:.2f} s, then "
                f"{batches / iter_s:,.0f} batches/s = {rows / iter_s:,.0f} rows/s to cut batches)"
            )
        print(f"stats         : {loader.stats.as_dict()}")
    print(f"peak RSS      : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
