"""`protorec plan` for a cluster this machine does not have."""

import subprocess
import sys


def test_plan_billion_row_table_on_64_gpus():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "protorec.jobs.cli",
            "plan",
            "--config",
            "simulator",
            "--world-size",
            "64",
            "--local-world-size",
            "8",
            "--device",
            "cuda",
            "--hbm-gb",
            "80",
            "--table-rows",
            "user=1000000000",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    user_shards = [
        line for line in run.stdout.splitlines() if line.startswith("user ") and "rank:" in line
    ]
    # the planner splits the 1e9-row table over several ranks, and the shards cover it
    assert len(user_shards) > 1
    assert sum(int(line.split("[")[2].split(",")[0]) for line in user_shards) == 1_000_000_000
    assert "Planning Memory" in run.stderr or "HBM" in run.stderr


def test_plan_rejects_unknown_table():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "protorec.jobs.cli",
            "plan",
            "--world-size",
            "2",
            "--table-rows",
            "nosuch=10",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and "unknown feature(s) ['nosuch']" in run.stderr
