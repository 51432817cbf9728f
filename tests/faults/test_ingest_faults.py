"""Ingest never loses a published day (issue 13, case 2).

A file holding one new day plus 73 rows stamped three days earlier, whose day is already
published: by default the published partition stays byte for byte and the 73 rows are
quarantined as ``day_already_published``; ``--replace`` replaces it and prints the row
counts before and after.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from protorec.jobs.cli import main
from protorec.pipeline.contract import QUARANTINE_DIR, partition_dir
from protorec.pipeline.ingest import ALREADY_PUBLISHED_DIR, SUMMARY_FILE
from protorec.pipeline.job_config import CONFIG_DIR

OLD, NEW = dt.date(2026, 2, 1), dt.date(2026, 2, 4)


def _rows(day: dt.date, n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
    return pa.table(
        {
            "user_id": rng.integers(0, 100, n),
            "item_id": rng.integers(0, 100, n),
            "scenario": rng.integers(0, 4, n).astype(np.int32),
            "ts_ms": start + rng.integers(0, 86_400_000, n),
            "click": rng.integers(0, 2, n).astype(np.int8),
            "watch_ms": rng.uniform(0, 3e4, n),
            "duration_ms": rng.uniform(1e3, 6e4, n),
        }
    )


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_published_day_is_kept_and_late_rows_quarantined(tmp_path, capsys):
    config = str(CONFIG_DIR / "simulator.yaml")
    out = tmp_path / "ds"
    pq.write_table(_rows(OLD, 4_000, 0), tmp_path / "old.parquet")
    assert (
        main(
            [
                "ingest",
                "parquet",
                str(tmp_path / "old.parquet"),
                "--config",
                config,
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    before = _snapshot(partition_dir(out, OLD))
    late = pa.concat_tables([_rows(NEW, 1_000, 1), _rows(OLD, 73, 2)])
    pq.write_table(late, tmp_path / "late.parquet")
    capsys.readouterr()

    args = [
        "ingest",
        "parquet",
        str(tmp_path / "late.parquet"),
        "--config",
        config,
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"{OLD} was already published" in printed and "73 new rows" in printed
    assert "published 1 day(s)" in printed
    assert _snapshot(partition_dir(out, OLD)) == before  # byte-identical
    assert pq.read_table(partition_dir(out, NEW)).num_rows == 1_000
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["days"][str(OLD)]["quarantined_by_reason"] == {"day_already_published": 73}
    assert summary["days_held"] == [str(OLD)] and summary["days_written"] == 1
    held = list((out / QUARANTINE_DIR / ALREADY_PUBLISHED_DIR / f"date={OLD}").rglob("*.parquet"))
    assert len(held) == 1
    table = pq.read_table(held[0])
    assert table.num_rows == 73
    assert set(table.column("reason").to_pylist()) == {"day_already_published"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no run folder left

    # --replace: the day becomes the file's rows, and the counts are printed.
    assert main([*args, "--replace"]) == 0
    printed = capsys.readouterr().out
    assert f"{OLD} replaced: 4,000 rows before, 73 after" in printed
    assert f"{NEW} replaced: 1,000 rows before, 1,000 after" in printed
    assert pq.read_table(partition_dir(out, OLD)).num_rows == 73
