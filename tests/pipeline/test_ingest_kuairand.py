"""KuaiRand ingest, and the driver's failure modes.

Exact counts on the real 27K TSV and on rows in the distributed log layout; unreadable
file, missing column, mostly bad day, crash mid-write.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import protorec.pipeline.ingest as ingest_mod
from protorec.jobs.cli import main
from protorec.pipeline.config import from_dict
from protorec.pipeline.contract import ContractError, list_days, partition_dir
from protorec.pipeline.data_config import DataConfig
from protorec.pipeline.ingest import (
    SUMMARY_FILE,
    IngestConfig,
    IngestError,
    KuaiRandIngestConfig,
    ingest,
    stable_ids,
)
from protorec.pipeline.ingest_kuairand import kuairand_files
from protorec.pipeline.job_config import load_config

LOG_HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,"
    "is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,"
    "is_profile_enter,is_rand,tab"
).split(",")
DAY0 = dt.date(2022, 4, 22)
DAY0_MS = int(dt.datetime(2022, 4, 22, tzinfo=dt.UTC).timestamp() * 1000)
DATA = DataConfig(dataset="unused", scenarios=[0, 1, 2], max_bad_share=0.5)


def run_ingest(paths, dataset, config=None, data=DATA, tab=None, side=None, replace=False):
    config = config or IngestConfig()
    files, notes = kuairand_files(paths, config.kuairand, tab=tab, side_tables=side)
    return ingest(
        files, data, config, source="kuairand", dataset=dataset, notes=notes, replace=replace
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def log_row(day: int = 0, **values) -> dict:
    """One row of the distributed log layout, on UTC day DAY0 + day."""
    row = dict.fromkeys(LOG_HEADER, "0")
    row.update(user_id="1", video_id="10", time_ms=str(DAY0_MS + day * 86_400_000 + 3_600_000))
    row.update(date="20220422", hourmin="1200", play_time_ms="5000", duration_ms="20000", tab="1")
    row.update({k: str(v) for k, v in values.items()})
    return row


def write_log(path: Path, rows: list[dict], header=LOG_HEADER, delimiter=",") -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, delimiter=delimiter, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# Rows of the distributed layout, each with the quarantine reason it must get (None: kept).
LAYOUT_ROWS = [
    (log_row(0, user_id=1, video_id=10, tab=0), None),
    (log_row(0, user_id=2, video_id=11, tab=2, is_click=1), None),
    (log_row(0, user_id=3, video_id=12, duration_ms=0), "zero_or_negative_duration"),
    (log_row(0, user_id=3, video_id=13, play_time_ms=-5), "negative_or_nan_watch"),
    (log_row(0, user_id=4, video_id=14, play_time_ms="nan"), "negative_or_nan_watch"),
    (log_row(1, user_id=5, video_id=15, tab=9), "unknown_scenario"),
    (log_row(1, user_id=5, video_id=16, is_click=2), "bad_click"),
    (log_row(1, user_id="", video_id=17), "missing_id"),
    (log_row(1, user_id=6, video_id=18, play_time_ms=""), None),  # watch not observed
    (log_row(1, user_id=7, video_id=19, time_ms=""), "missing_ts"),
    *[(log_row(0, user_id=i, video_id=i), None) for i in range(30, 33)],
    *[(log_row(1, user_id=i, video_id=i), None) for i in range(33, 37)],
    *[(log_row(2, user_id=8 + i, video_id=20 + i, tab=i % 3), None) for i in range(40)],
]


USERS = {str(u) for u in range(1, 40)}
VIDEOS = {str(v) for v in range(10, 20)}


def write_side_tables(folder: Path) -> Path:
    folder.mkdir()
    (folder / "user_features_pure.csv").write_text(
        "user_id,user_active_degree,fans_user_num\n"
        + "".join(
            f"{u},{'full_active' if int(u) % 2 else 'low_active'},{int(u) * 10}\n"
            for u in sorted(USERS)
        )
    )
    (folder / "video_features_basic_pure.csv").write_text(
        "video_id,author_id,tag\n"
        + "".join(f'{v},{int(v) + 1000},"{int(v) % 3}"\n' for v in sorted(VIDEOS))
    )
    return folder


SIDE_CONFIG = {
    "kuairand": {
        "log_columns": [{"source": "long_view", "kind": "id"}],
        "user_columns": [
            {"source": "user_active_degree", "kind": "category"},
            {"source": "fans_user_num", "kind": "number"},
        ],
        "video_columns": [
            {"source": "author_id", "kind": "id"},
            {"source": "tag", "kind": "category"},
        ],
    },
    "block_bytes": 1024,  # several chunks even for these few rows
}


def test_distributed_layout_counts_quarantine_and_joins(tmp_path):
    log = write_log(tmp_path / "log_standard_4_22_to_5_08_pure.csv", [r for r, _ in LAYOUT_ROWS])
    config = from_dict(IngestConfig, SIDE_CONFIG)
    side = write_side_tables(tmp_path / "side")
    out = tmp_path / "ds"
    summary = run_ingest([log], out, config=config, side=side)

    expected = Counter(reason for _, reason in LAYOUT_ROWS if reason)
    total = summary.total
    assert total.rows_in == summary.rows_read[str(log)] == len(LAYOUT_ROWS)
    assert total.quarantined == expected
    assert total.rows_kept == sum(reason is None for _, reason in LAYOUT_ROWS)
    assert list_days(out) == [DAY0, DAY0 + dt.timedelta(1), DAY0 + dt.timedelta(2)]

    kept = [pq.read_table(partition_dir(out, d)) for d in list_days(out)]
    assert sum(t.num_rows for t in kept) == total.rows_kept
    quarantined = [pq.read_table(p) for p in sorted((out / "_quarantine").rglob("*.parquet"))]
    reasons = Counter(r for t in quarantined for r in t.column("reason").to_pylist())
    assert reasons == expected
    assert (out / "_quarantine" / "undated" / log.stem / "part-0.parquet").exists()

    rows = [r for t in kept for r in t.to_pylist()]
    # Every row read is joined (before validation); keys with no side row are counted.
    raw = [r for r, _ in LAYOUT_ROWS]
    assert summary.side_rows_missing == {
        "user_features_pure.csv": sum(r["user_id"] not in USERS for r in raw),
        "video_features_basic_pure.csv": sum(r["video_id"] not in VIDEOS for r in raw),
    }
    full, low = stable_ids(pa.array(["full_active", "low_active"])).to_pylist()
    for r in rows:
        if str(r["user_id"]) in USERS:
            assert r["user_active_degree"] == (full if r["user_id"] % 2 else low)
            assert r["fans_user_num"] == r["user_id"] * 10
        else:
            assert r["user_active_degree"] is None and r["fans_user_num"] is None
        assert r["author_id"] == (r["item_id"] + 1000 if 10 <= r["item_id"] < 20 else None)
        assert r["long_view"] == 0
    assert sorted({r["scenario"] for r in rows}) == [0, 1, 2]
    unobserved = [r for r in rows if r["item_id"] == 18]
    assert len(unobserved) == 1 and unobserved[0]["watch_ms"] is None


def test_real_likehate_tsv_exact_counts(shared_data, tmp_path):
    tsv = shared_data / "kuairand" / "kuairand27k_likehate_kcore15.tsv"
    config = load_config("kuairand")
    files, notes = kuairand_files([tsv], config.ingest.kuairand, side_tables=tsv.parent)
    out = tmp_path / "kuairand"
    summary = ingest(files, config.data, config.ingest, source="kuairand", dataset=out, notes=notes)

    # Independent count of the raw file: per UTC day of time_ms, rows and zero durations.
    with open(tsv, newline="") as fh:
        raw = list(csv.DictReader(fh, delimiter="\t"))
    per_day: Counter = Counter()
    zero_per_day: Counter = Counter()
    for r in raw:
        day = dt.date(1970, 1, 1) + dt.timedelta(days=int(r["time_ms"]) // 86_400_000)
        per_day[day] += 1
        zero_per_day[day] += float(r["duration_ms"]) == 0
    assert not any(float(r["play_time_ms"]) < 0 for r in raw)
    with open(tsv.parent / "video_features_basic_pure.csv", newline="") as fh:
        videos = {r["video_id"] for r in csv.DictReader(fh)}
    with open(tsv.parent / "user_features_pure.csv", newline="") as fh:
        users = {r["user_id"] for r in csv.DictReader(fh)}

    total = summary.total
    assert summary.rows_read == {str(tsv): len(raw)} and total.rows_in == len(raw) == 41_828
    assert total.quarantined == {"zero_or_negative_duration": sum(zero_per_day.values())}
    assert total.rows_quarantined == 7_738 and total.rows_kept == 34_090
    assert sorted(summary.days) == list_days(out) == sorted(per_day)
    assert len(summary.days) == 15  # 2022-04-07..21 UTC (KuaiRand's Beijing dates: 04-08..21)
    for day, report in summary.days.items():
        assert report.rows_in == per_day[day]
        assert report.rows_quarantined == zero_per_day[day]
        assert pq.read_metadata(partition_dir(out, day) / "part-0.parquet").num_rows == (
            per_day[day] - zero_per_day[day]
        )
    assert summary.side_rows_missing == {
        "user_features_pure.csv": sum(r["user_id"] not in users for r in raw),
        "video_features_basic_pure.csv": sum(r["video_id"] not in videos for r in raw),
    }
    assert summary.side_rows_missing["video_features_basic_pure.csv"] == 40_713
    # No `tab` in this file: every row got the configured scenario, and the summary says so.
    assert any("no 'tab' column" in n and "scenario 1" in n for n in summary.notes)
    day_table = pq.read_table(partition_dir(out, dt.date(2022, 4, 10)))
    assert set(day_table.column("scenario").to_pylist()) == {1}
    saved = json.loads((out / SUMMARY_FILE).read_text())
    assert saved["total"]["quarantined_by_reason"] == {"zero_or_negative_duration": 7_738}
    assert saved["days_written"] == 15


def test_rerun_replaces_days_and_stale_quarantine(tmp_path):
    rows = [r for r, _ in LAYOUT_ROWS]
    log = write_log(tmp_path / "log.csv", rows)
    out = tmp_path / "ds"
    first = run_ingest([log], out)
    files_before = sorted(p.relative_to(out) for p in out.rglob("*.parquet"))
    second = run_ingest([log], out, replace=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*.parquet")) == files_before
    assert second.total.as_dict() == first.total.as_dict()
    kept = sum(
        pq.read_metadata(partition_dir(out, d) / "part-0.parquet").num_rows for d in list_days(out)
    )
    assert kept == first.total.rows_kept  # replaced, not appended

    # Day 0 again with only good rows: its partition shrinks and its quarantine goes.
    good = [r for r, reason in LAYOUT_ROWS[:2]]
    third = run_ingest([write_log(tmp_path / "day0.csv", good)], out, replace=True)
    assert third.replaced == {DAY0: (first.days[DAY0].rows_kept, 2)}
    assert pq.read_metadata(partition_dir(out, DAY0) / "part-0.parquet").num_rows == 2
    assert not partition_dir(out, DAY0, quarantine=True).exists()
    assert partition_dir(out, DAY0 + dt.timedelta(1), quarantine=True).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no run folder left


def test_file_without_tab_needs_a_scenario(tmp_path):
    header = [c for c in LOG_HEADER if c != "tab"]
    tsv = write_log(tmp_path / "likehate.tsv", [log_row(0)], header=header, delimiter="\t")
    with pytest.raises(ContractError, match=r"likehate\.tsv.*'tab'"):
        kuairand_files([tsv], KuaiRandIngestConfig())
    summary = run_ingest([tsv], tmp_path / "ds", tab=2)
    assert summary.total.rows_kept == 1
    assert pq.read_table(partition_dir(tmp_path / "ds", DAY0)).column("scenario").to_pylist() == [2]


def test_missing_column_names_file_and_column(tmp_path):
    header = [c for c in LOG_HEADER if c != "play_time_ms"]
    log = write_log(tmp_path / "log_bad.csv", [log_row(0)], header=header)
    message = r"log_bad\.csv: missing column\(s\) \['play_time_ms'\]"
    with pytest.raises(ContractError, match=message):
        run_ingest([log], tmp_path / "ds")
    assert not list_days(tmp_path / "ds")


def published(tmp_path: Path) -> Path:
    """A data set holding one earlier good run (days 0..2)."""
    out = tmp_path / "ds"
    run_ingest([write_log(tmp_path / "good.csv", [r for r, _ in LAYOUT_ROWS])], out)
    return out


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage\n1,2\n", "text_id"])
def test_unreadable_file_cli_exits_nonzero_and_publishes_nothing(tmp_path, capsys, content):
    out = published(tmp_path)
    before = snapshot(out)
    bad = tmp_path / "log_bad.csv"
    if content == "text_id":  # a readable header, then a value that is not an integer id
        write_log(bad, [log_row(0), log_row(1, user_id="abc")])
    else:
        bad.write_bytes(content)
    good = write_log(tmp_path / "other.csv", [log_row(0, user_id=99)])
    rc = main(["ingest", "kuairand", str(good), str(bad), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "log_bad.csv" in err and "nothing published" in err
    assert snapshot(out) == before


def test_missing_file_cli_exits_nonzero(tmp_path, capsys):
    rc = main(["ingest", "kuairand", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "d")])
    assert rc == 1 and "nope.csv: unreadable" in capsys.readouterr().err


def test_mostly_bad_day_stops_before_publishing(tmp_path):
    out = published(tmp_path)
    before = snapshot(out)
    rows = [log_row(5, video_id=i) for i in range(10)]  # day 5: fine
    rows += [log_row(6, video_id=i, duration_ms=0) for i in range(6)]  # day 6: 6 of 10 bad
    rows += [log_row(6, video_id=i) for i in range(4)]
    with pytest.raises(IngestError, match=r"2022-04-28 60\.0% of 10"):
        run_ingest([write_log(tmp_path / "log.csv", rows)], out)
    assert snapshot(out) == before  # not even the good day 5


def test_crash_while_staging_leaves_data_set_unchanged(tmp_path, monkeypatch):
    out = published(tmp_path)
    before = snapshot(out)
    real, calls = ingest_mod.write_day, []

    def write_then_crash(*args, **kwargs):
        if calls:
            raise OSError("disk full")
        calls.append(args)
        real(*args, **kwargs)

    monkeypatch.setattr(ingest_mod, "write_day", write_then_crash)
    rows = [log_row(d, user_id=50 + d) for d in range(3)]
    with pytest.raises(OSError, match="disk full"):  # replacing published days
        run_ingest([write_log(tmp_path / "new.csv", rows)], out, replace=True)
    assert len(calls) == 1  # one day was fully written (to staging) before the crash
    assert snapshot(out) == before


@pytest.mark.parametrize("fail_at", [1, 2, 4])
def test_failed_publish_is_undone(tmp_path, monkeypatch, fail_at):
    out = published(tmp_path)
    before = snapshot(out)
    real, count = ingest_mod._move, [0]

    def move(src, dst):
        count[0] += 1
        if count[0] == fail_at:
            raise OSError("rename failed")
        real(src, dst)

    monkeypatch.setattr(ingest_mod, "_move", move)
    rows = [log_row(d, user_id=50 + d, duration_ms=0 if d == 1 else 100) for d in range(3)]
    rows += [log_row(1, user_id=60 + i) for i in range(3)]
    with pytest.raises(OSError, match="rename failed"):  # replacing published days
        run_ingest([write_log(tmp_path / "new.csv", rows)], out, replace=True)
    assert snapshot(out) == before
