"""Benchmark of the evaluation metrics: seconds per call at n rows, on one core.

Run: ``OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_metrics.py [--rows 1000000
--users 50000]``. Target (issue 6): exact XAUC at n = 1e6 in a few seconds. Data: watch
times with KuaiRand-like ties (rounded to 100 ms), predictions rounded to 10 ms, clicks
at a 30% rate, 5 scenarios, 7 days.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from protorec.pipeline.metrics import auc, compute_metrics, gauc, ndcg_at_k, xauc, xgauc


def _timed(label: str, fn, *args, **kwargs) -> None:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds = time.perf_counter() - t0
    value = getattr(result, "value", result)
    shown = f"{value:.4f}" if isinstance(value, float) else "dict"
    print(f"{label:<28} {seconds:7.2f} s   ({shown})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    args = parser.parse_args()
    n = args.rows
    rng = np.random.default_rng(0)
    user = rng.integers(0, args.users, n)
    day = rng.integers(19000, 19007, n)
    scenario = rng.integers(0, 5, n)
    watch = np.round(rng.gamma(1.2, 15_000.0, n), -2)
    pred_watch = np.round(watch * rng.lognormal(0.0, 0.8, n), -1)
    click = (rng.random(n) < 0.3).astype(np.float64)
    p_click = np.clip(0.3 + 0.2 * (click - 0.3) + rng.normal(0, 0.2, n), 0, 1)
    lists = (user * 7 + (day - 19000)) * 5 + scenario

    print(f"rows={n:,} users={args.users:,} distinct truths={np.unique(watch).size:,}")
    _timed("auc", auc, click, p_click)
    _timed("gauc (users)", gauc, click, p_click, user)
    _timed("ndcg@10 (user x day x scen)", ndcg_at_k, click, p_click, lists)
    _timed("xauc", xauc, watch, pred_watch)
    _timed("xgauc (users)", xgauc, watch, pred_watch, user)
    _timed(
        "compute_metrics (5 scen)",
        compute_metrics,
        click,
        p_click,
        scenario,
        user,
        day,
        watch,
        pred_watch,
    )


if __name__ == "__main__":
    main()
