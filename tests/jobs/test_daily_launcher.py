"""`protorec daily`: torchrun underneath, the job's own exit status on top.

torchrun alone reports every failing worker as 1 with a ChildFailedError traceback; the
launcher must give the shell the documented status (tests/faults cover what each status
means) and a one-line summary.
"""

import datetime as dt
import subprocess
import sys

import pytest
import yaml

from protorec.pipeline.contract import partition_dir
from protorec.pipeline.job_config import CONFIG_DIR

from ..conftest import job_env

DAY = "2026-01-01"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("launcher")
    cfg = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text())
    cfg["simulator"]["rows_per_day"] = 10_000
    cfg["daily"] = {"min_gate_rows": 100}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "protorec.jobs.cli",
            "simulate",
            "--config",
            str(root / "config.yaml"),
            "--out",
            str(root / "data"),
            "--start",
            DAY,
            "--days",
            "1",
            "--quiet",
        ],
        check=True,
        env=job_env(),
    )
    return root


def _daily(sim, data, workdir, date=DAY, procs=2):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "protorec.jobs.cli",
            "daily",
            "--config",
            str(sim / "config.yaml"),
            "--dataset",
            str(data),
            "--workdir",
            str(workdir),
            "--date",
            date,
            "--device",
            "cpu",
            "--quiet",
            f"--nproc-per-node={procs}",
        ],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _summary(run):
    return [line for line in run.stderr.splitlines() if line.startswith("protorec daily:")]


def test_published_day_exits_0(sim, tmp_path):
    run = _daily(sim, sim / "data", tmp_path / "wd", procs=1)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _summary(run) == [f"protorec daily: {DAY}: published (exit 0)"]
    assert (tmp_path / "wd" / "exports" / DAY / "manifest.json").exists()


@pytest.mark.parametrize("case, status", [("missing_day", 4), ("garbage_file", 6)])
def test_statuses_survive_torchrun_on_two_ranks(sim, tmp_path, case, status):
    data, date = sim / "data", DAY
    if case == "missing_day":
        date = (dt.date.fromisoformat(DAY) + dt.timedelta(days=5)).isoformat()
    else:
        data = tmp_path / "data"
        partition_dir(data, dt.date.fromisoformat(DAY)).mkdir(parents=True)
        (partition_dir(data, dt.date.fromisoformat(DAY)) / "part-0.parquet").write_bytes(b"x")
    run = _daily(sim, data, tmp_path / "wd", date=date)
    assert run.returncode == status, run.stderr[-3000:]
    assert len(_summary(run)) == 1 and f"(exit {status})" in _summary(run)[0]
    assert "ChildFailedError" not in run.stderr and "Traceback" not in run.stderr


def test_bad_launch_flags_exit_2_before_torchrun(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "protorec.jobs.cli",
            "daily",
            "--date",
            DAY,
            "--workdir",
            str(tmp_path),
            "--nnodes",
            "2",
        ],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert (
        run.stderr.strip() == "protorec daily: --rdzv-endpoint (host:port) is required "
        "with --nnodes 2"
    )


def test_summary_says_already_done_for_a_day_with_a_record(tmp_path):
    from protorec.jobs.daily import outcome, recorded_before

    assert not recorded_before(str(tmp_path), DAY, force=False)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / f"{DAY}.json").write_text("{}")
    assert recorded_before(str(tmp_path), DAY, force=False)
    assert not recorded_before(str(tmp_path), DAY, force=True)  # retrained: not skipped

    assert outcome(0, done_before=False) == "published"
    assert outcome(0, done_before=True) == (
        "already done (published): nothing changed; --force retrains it"
    )
    assert outcome(3, done_before=True).startswith("already done (refused by the gate")
    assert outcome(4, done_before=True).startswith("no data for the day yet")
