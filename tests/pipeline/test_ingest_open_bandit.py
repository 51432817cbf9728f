"""Open Bandit ingest.

Exact counts on the real bts files, campaign = scenario, pseudo-users, UTC timestamps,
and errors that name the file.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from protorec.jobs.cli import main
from protorec.pipeline.contract import ContractError, list_days, partition_dir
from protorec.pipeline.ingest import SUMMARY_FILE, IngestError, ingest
from protorec.pipeline.ingest_open_bandit import open_bandit_files
from protorec.pipeline.job_config import load_config

CAMPAIGNS = {"all": 0, "men": 1, "women": 2}


def run_ingest(policy_dir: Path, out: Path):
    config = load_config("open_bandit")
    files, notes = open_bandit_files(policy_dir, config.ingest.open_bandit)
    return ingest(files, config.data, config.ingest, source="open_bandit", dataset=out, notes=notes)


def read_raw(policy_dir: Path, name: str) -> list[dict]:
    with open(policy_dir / name / f"{name}.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_real_bts_exact_counts(shared_data, tmp_path):
    bts = shared_data / "open_bandit" / "bts"
    out = tmp_path / "obd"
    summary = run_ingest(bts, out)

    # Independent count: rows per (UTC day, campaign) from the raw timestamps.
    raw = {name: read_raw(bts, name) for name in CAMPAIGNS}
    per_day: Counter = Counter()
    per_day_scenario: Counter = Counter()
    for name, rows in raw.items():
        for r in rows:
            when = dt.datetime.fromisoformat(r["timestamp"]).astimezone(dt.UTC)
            per_day[when.date()] += 1
            per_day_scenario[when.date(), CAMPAIGNS[name]] += 1
    bad = sum(r["click"] not in ("0", "1") for rows in raw.values() for r in rows)

    total = summary.total
    assert (
        summary.rows_read
        == {str(bts / n / f"{n}.csv"): len(rows) for n, rows in raw.items()}
        == {str(bts / n / f"{n}.csv"): 10_000 for n in CAMPAIGNS}
    )
    assert total.rows_in == 30_000 and bad == 0
    assert total.rows_kept == 30_000 and total.rows_quarantined == 0
    assert sorted(summary.days) == list_days(out) == sorted(per_day)
    assert list_days(out) == [dt.date(2019, 11, 24) + dt.timedelta(i) for i in range(7)]
    assert not (out / "_quarantine").exists()
    assert summary.side_rows_missing == {f"{n}/item_context.csv": 0 for n in CAMPAIGNS}

    tables = {d: pq.read_table(partition_dir(out, d)) for d in list_days(out)}
    for day, table in tables.items():
        assert table.num_rows == per_day[day] == summary.days[day].rows_in
        scen = Counter(table.column("scenario").to_pylist())
        assert scen == {s: per_day_scenario[day, s] for s in CAMPAIGNS.values()}
    saved = json.loads((out / SUMMARY_FILE).read_text())
    assert saved["total"]["rows_kept"] == 30_000 and saved["days_written"] == 7


def test_mapping_of_real_rows(shared_data, tmp_path):
    bts = shared_data / "open_bandit" / "bts"
    out = tmp_path / "obd"
    run_ingest(bts, out)
    rows = pa.concat_tables([pq.read_table(partition_dir(out, d)) for d in list_days(out)])
    rows = rows.to_pylist()

    # Each raw row appears once, with its campaign code, item id, click and UTC time.
    expected = Counter()
    contexts = {}
    for name, code in CAMPAIGNS.items():
        with open(bts / name / "item_context.csv", newline="") as fh:
            price = {int(r["item_id"]): float(r["item_feature_0"]) for r in csv.DictReader(fh)}
        for r in read_raw(bts, name):
            ms = int(dt.datetime.fromisoformat(r["timestamp"]).timestamp() * 1_000_000) // 1000
            item = int(r["item_id"])
            expected[code, code * 1000 + item, ms, int(r["click"]), price[item]] += 1
            contexts[code, ms, item] = tuple(r[f"user_feature_{i}"] for i in range(4))
    assert len(contexts) == 30_000  # (scenario, ms, item) identifies a raw row here
    got = Counter(
        (r["scenario"], r["item_id"], r["ts_ms"], r["click"], r["item_feature_0"]) for r in rows
    )
    assert got == expected
    assert all(r["watch_ms"] is None and r["duration_ms"] is None for r in rows)

    # Pseudo-users: same four user features <=> same user_id.
    pairs = {
        (contexts[r["scenario"], r["ts_ms"], r["campaign_item_id"]], r["user_id"]) for r in rows
    }
    assert len({c for c, _ in pairs}) == len({u for _, u in pairs}) == len(pairs)


def test_cli_runs_and_rerun_does_not_duplicate(shared_data, tmp_path, capsys):
    bts = shared_data / "open_bandit" / "bts"
    out = tmp_path / "obd"
    args = ["ingest", "open_bandit", str(bts), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2019-11-30" in printed and "30,000" in printed and "pseudo-user" in printed
    assert main([*args, "--quiet", "--replace"]) == 0
    files = sorted(p.relative_to(out) for p in out.rglob("*.parquet"))
    assert len(files) == 7
    assert sum(pq.read_metadata(out / f).num_rows for f in files) == 30_000


def copy_policy(shared_data: Path, tmp_path: Path) -> Path:
    policy = tmp_path / "bts"
    shutil.copytree(shared_data / "open_bandit" / "bts", policy)
    for p in policy.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)  # the shared copy is read-only
    return policy


def rewrite(path: Path, edit) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))


def test_timestamp_without_offset_stops_the_run(shared_data, tmp_path, capsys):
    policy = copy_policy(shared_data, tmp_path)
    men = policy / "men" / "men.csv"
    rewrite(men, lambda ls: [ls[0], ls[1].replace("+00:00", "", 1), *ls[2:]])
    out = tmp_path / "obd"
    rc = main(["ingest", "open_bandit", str(policy), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "men.csv: unreadable" in err and "zone offset" in err
    assert not list_days(out)


def test_missing_column_names_file_and_column(shared_data, tmp_path):
    policy = copy_policy(shared_data, tmp_path)
    women = policy / "women" / "women.csv"
    rewrite(women, lambda ls: [ls[0].replace(",click,", ",clicked,"), *ls[1:]])
    with pytest.raises(ContractError, match=r"women\.csv: missing column\(s\) \['click'\]"):
        run_ingest(policy, tmp_path / "obd")
    assert not list_days(tmp_path / "obd")


def test_item_id_beyond_stride_stops(shared_data, tmp_path):
    policy = copy_policy(shared_data, tmp_path)
    path = policy / "all" / "all.csv"
    header = path.read_text().splitlines()[0].split(",")
    column = header.index("item_id")

    def edit(lines):
        cells = lines[1].split(",")
        cells[column] = "1000"
        return [lines[0], ",".join(cells), *lines[2:]]

    rewrite(path, edit)
    with pytest.raises(ContractError, match=r"all\.csv: column 'item_id'.*item_id_stride"):
        run_ingest(policy, tmp_path / "obd")


def test_missing_policy_folder(tmp_path):
    with pytest.raises(IngestError, match="not a folder"):
        run_ingest(tmp_path / "nope", tmp_path / "obd")
