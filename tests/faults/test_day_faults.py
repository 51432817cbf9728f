"""The daily job holds its day to the data contract before any work.

A day partition that did not come through ``protorec ingest`` (a hand-made Parquet
folder, a file damaged after publishing) is checked by ingest's rules: a file that cannot
be read, lacks a column or holds a wrong type stops the job (exit 6) naming the file; a
mostly-bad day stops it too; an empty one is "no data" (exit 4); a few bad rows are left
out, counted by reason in the run record, and the day is published. Nothing is written
to the work directory when the job stops.
"""

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from protorec.pipeline.contract import partition_dir
from protorec.pipeline.job_config import CONFIG_DIR

from ..conftest import job_env

ROOT = Path(__file__).resolve().parents[2]
JOB = str(ROOT / "jobs" / "train_daily.py")
DAY = dt.date(2026, 1, 1)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("dayfaults")
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
            DAY.isoformat(),
            "--days",
            "2",
            "--quiet",
        ],
        check=True,
        env=job_env(),
    )
    return root


@pytest.fixture
def data(sim, tmp_path):
    """A private copy of the data set, and its day's one Parquet file."""
    shutil.copytree(sim / "data", tmp_path / "data")
    files = sorted(partition_dir(tmp_path / "data", DAY).glob("*.parquet"))
    assert len(files) == 1
    return tmp_path / "data", files[0]


def _run(sim, data, workdir, day=DAY):
    return subprocess.run(
        [
            sys.executable,
            JOB,
            "--config",
            str(sim / "config.yaml"),
            "--dataset",
            str(data),
            "--workdir",
            str(workdir),
            "--date",
            day.isoformat(),
            "--quiet",
            "--device",
            "cpu",
        ],
        env=job_env(),
        capture_output=True,
        text=True,
    )


def _assert_stopped(run, workdir, status, *words):
    assert run.returncode == status, run.stderr[-3000:]
    assert all(w in run.stderr for w in words), run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    left = {p.name for p in workdir.iterdir()} - {"job.lock"} if workdir.exists() else set()
    assert not left, left  # no checkpoint, export, record or model


def _rewrite(path, edit):
    table = pq.read_table(path)
    pq.write_table(edit(table), path)


def _set(table, name, values, type_=None):
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, pa.array(values, type=type_ or table.schema.field(i).type))


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda p: p.write_bytes(b"not parquet at all"), ["not a readable Parquet file"]),
        (
            lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
            ["not a readable Parquet file"],
        ),
        (
            lambda p: _rewrite(p, lambda t: t.drop_columns(["click"])),
            ["missing contract column(s) ['click']"],
        ),
        (
            lambda p: _rewrite(
                p, lambda t: _set(t, "user_id", [f"u{i}" for i in range(t.num_rows)], pa.string())
            ),
            ["column 'user_id' has type string"],
        ),
    ],
    ids=["garbage", "truncated", "missing_column", "wrong_type"],
)
def test_unreadable_day_stops_naming_the_file(sim, data, tmp_path, damage, words):
    dataset, path = data
    damage(path)
    run = _run(sim, dataset, tmp_path / "wd")
    _assert_stopped(run, tmp_path / "wd", 6, str(path), *words)


def test_mostly_bad_day_stops(sim, data, tmp_path):
    dataset, path = data
    _rewrite(
        path,
        lambda t: _set(
            t,
            "scenario",
            np.where(np.arange(t.num_rows) % 10 < 6, 999, t.column("scenario").to_numpy()),
        ),
    )
    run = _run(sim, dataset, tmp_path / "wd")
    _assert_stopped(
        run,
        tmp_path / "wd",
        6,
        "6000 of 10000 rows break the data contract",
        "unknown_scenario 6000",
        "daily.max_invalid_share",
    )


def test_empty_day_is_no_data(sim, data, tmp_path):
    dataset, path = data
    _rewrite(path, lambda t: t.slice(0, 0))
    run = _run(sim, dataset, tmp_path / "wd")
    _assert_stopped(run, tmp_path / "wd", 4, "holds no rows")


def test_bad_rows_are_left_out_counted_and_the_day_published(sim, data, tmp_path):
    dataset, path = data
    day_ms = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)

    def damage(t):
        i = np.arange(t.num_rows)
        watch = t.column("watch_ms").to_numpy(zero_copy_only=False).astype(float)
        watch[i < 100] = np.nan  # NaN, not null
        watch[(i >= 100) & (i < 200)] = -5.0
        duration = t.column("duration_ms").to_numpy(zero_copy_only=False).astype(float)
        duration[(i >= 200) & (i < 300)] = 0.0
        scenario = t.column("scenario").to_numpy().copy()
        scenario[(i >= 300) & (i < 400)] = 999
        ts = t.column("ts_ms").to_numpy().copy()
        ts[(i >= 400) & (i < 500)] = day_ms - 1  # the day before
        t = _set(t, "watch_ms", pa.array(watch, from_pandas=False))
        t = _set(t, "duration_ms", duration)
        return _set(_set(t, "scenario", scenario), "ts_ms", ts)

    _rewrite(path, damage)
    wd = tmp_path / "wd"
    run = _run(sim, dataset, wd)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "500 of 10000 rows break the data contract and are left out" in run.stderr
    record = json.loads((wd / "runs" / f"{DAY}.json").read_text())
    assert record["invalid_rows"]["quarantined_by_reason"] == {
        "negative_or_nan_watch": 200,
        "zero_or_negative_duration": 100,
        "unknown_scenario": 100,
        "wrong_date": 100,
    }
    # trained and evaluated on the 9,500 valid rows only (hold-out + training = valid)
    assert record["metrics"]["overall"]["samples"] + record["train"]["samples"] == 9_500
    assert (
        record["metrics"]["loader"]["holdout"]["rows_read"]
        == record["metrics"]["overall"]["samples"]
    )


def test_vanished_scenario_is_warned_and_counted(sim, data, tmp_path):
    dataset, _ = data
    day2 = DAY + dt.timedelta(days=1)
    path = sorted(partition_dir(dataset, day2).glob("*.parquet"))[0]
    live = 3  # configs/simulator.yaml: scenario code of "live"
    _rewrite(path, lambda t: t.filter(pa.array(t.column("scenario").to_numpy() != live)))
    wd = tmp_path / "wd"
    run = _run(sim, dataset, wd, day=day2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "scenario(s) live had rows the day before and none today" in run.stderr
    record = json.loads((wd / "runs" / f"{day2}.json").read_text())
    assert record["vanished_scenarios"] == ["live"]
    assert record["drift"]["live"]["rows"] == 0 and record["drift"]["feed"]["rows"] > 0
