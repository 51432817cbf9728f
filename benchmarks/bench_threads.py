"""`protorec train` with one core held by another process: the default threads vs one.

Simulates a small data set, starts a busy loop on one core (another user's job), waits
until the load average shows it (the default thread count reads the load average), then
runs the same short `protorec train` with the default thread choice and with
``OMP_NUM_THREADS=1``, and prints the training samples/s of both and their ratio.

    .venv/bin/python benchmarks/bench_threads.py [--rows 60000] [--env OMP_WAIT_POLICY=ACTIVE]

``--env KEY=VALUE`` (repeatable) is added to the default run's environment, e.g. to
compare OpenMP wait policies.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

CLI = [sys.executable, "-m", "protorec.jobs.cli"]


def _small_config(folder: Path, rows: int) -> Path:
    from protorec.pipeline.job_config import CONFIG_DIR

    cfg = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text())
    cfg["simulator"]["rows_per_day"] = rows
    cfg["data"]["dataset"] = str(folder / "data")
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(config: Path, folder: Path, env: dict[str, str], name: str) -> float:
    out = folder / f"{name}.json"
    started = time.perf_counter()
    run = subprocess.run(
        [
            *CLI,
            "train",
            "--config",
            str(config),
            "--train",
            "2026-01-01..2026-01-02",
            "--test",
            "2026-01-03",
            "--out",
            str(out),
            "--quiet",
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        sys.exit(f"{name} run failed:\n{run.stderr[-3000:]}")
    chosen = [line for line in run.stderr.splitlines() if "torch thread(s)" in line]
    rate = json.loads(out.read_text())["train"]["samples_per_s"]
    print(
        f"{name:>18}: {rate:8.0f} samples/s ({time.perf_counter() - started:.0f} s wall)"
        f"  {chosen[0].split('INFO ')[-1] if chosen else ''}"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000, help="simulated rows per day")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the default run; repeatable",
    )
    parser.add_argument("--no-busy", action="store_true", help="no busy loop (a quiet machine)")
    args = parser.parse_args()
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
    }
    extra = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = _small_config(folder, args.rows)
        subprocess.run(
            [
                *CLI,
                "simulate",
                "--config",
                str(config),
                "--out",
                str(folder / "data"),
                "--start",
                "2026-01-01",
                "--days",
                "3",
                "--quiet",
            ],
            check=True,
            env=base,
        )
        busy = None
        if not args.no_busy:
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            if busy is not None:
                # The load average is a 1-minute mean: give it the time to see the loop.
                deadline = time.monotonic() + 120
                while os.getloadavg()[0] < 0.9 and time.monotonic() < deadline:
                    time.sleep(2)
            print(
                f"cores {len(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.2f}, "
                f"busy loop {'on' if busy else 'off'}"
            )
            default = _train(config, folder, {**base, **extra}, "default")
            one = _train(config, folder, {**base, "OMP_NUM_THREADS": "1"}, "OMP_NUM_THREADS=1")
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    print(f"default / OMP_NUM_THREADS=1: {default / one:.2f}x (target >= 0.7x)")


if __name__ == "__main__":
    main()
