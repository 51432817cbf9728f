"""Benchmark of `protorec simulate`: rows per second and peak memory, on one core.

Run: ``OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_simulator.py [--days 3
--rows 500000 --side-tables DIR]`` (pyarrow's thread pools are set to one thread here).
Target (issue 2): at least 1M rows a minute on one core; memory flat in the number of days.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import resource
import tempfile
import time

import pyarrow as pa

from protorec.pipeline.job_config import load_config
from protorec.pipeline.simulator import Simulator, simulate


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--rows", type=int, default=500_000, help="rows per day")
    parser.add_argument("--config", default="simulator")
    parser.add_argument("--side-tables", default=None)
    args = parser.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    config = load_config(args.config)
    sim_cfg = dataclasses.replace(config.simulator, rows_per_day=args.rows)
    scenarios = config.data.scenarios
    start = dt.date(2026, 1, 1)

    sim = Simulator(sim_cfg, scenarios, args.side_tables)
    t0 = time.perf_counter()
    sim.day(start)
    gen_s = time.perf_counter() - t0
    rss_one_day = _peak_rss_mib()

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        report = simulate(out, start, args.days, sim_cfg, scenarios, args.side_tables, False)
        total_s = time.perf_counter() - t0
    rows = report.rows_kept
    print(f"days={args.days} rows/day={args.rows:,} side_tables={args.side_tables is not None}")
    print(f"generate only : {args.rows / gen_s:,.0f} rows/s ({gen_s:.2f} s for one day)")
    print(
        f"end to end    : {rows / total_s:,.0f} rows/s = {rows / total_s * 60 / 1e6:.1f}M rows/min "
        f"({total_s:.2f} s for {rows:,} rows; generate, validate, write zstd Parquet)"
    )
    end_rss = _peak_rss_mib()
    print(f"peak RSS      : {rss_one_day:.0f} MiB after one day, {end_rss:.0f} MiB at the end")


if __name__ == "__main__":
    main()
