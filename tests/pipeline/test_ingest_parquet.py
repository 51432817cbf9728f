"""`ingest parquet`: a user's own Parquet logs and side tables into the contract, then loaded."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from protorec.pipeline import loader as loader_module
from protorec.pipeline.config import from_dict
from protorec.pipeline.contract import ContractError
from protorec.pipeline.ingest import IngestError, ingest
from protorec.pipeline.ingest_parquet import parquet_files
from protorec.pipeline.job_config import ProtorecConfig
from protorec.pipeline.loader import ContractLoader

DAYS = [dt.date(2026, 3, 1), dt.date(2026, 3, 2)]
SCENARIOS = [0, 1, 3, 7]
N = 400  # rows per day


def _ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def _config(tmp_path, num_users: int = 200) -> ProtorecConfig:
    return from_dict(
        ProtorecConfig,
        {
            "data": {"dataset": str(tmp_path / "contract"), "scenarios": SCENARIOS},
            "features": {
                "sparse": [
                    {"name": "user", "column": "user_id", "num_embeddings": num_users + 1},
                    {"name": "item", "column": "item_id", "num_embeddings": 101},
                    {"name": "age", "column": "age_bucket", "num_embeddings": 64, "hashed": True},
                    {"name": "author", "column": "author_id", "num_embeddings": 21},
                ],
                "dense": [{"name": "activity", "column": "activity", "transform": "log1p"}],
            },
            "loader": {"batch_size": 128, "shuffle": False},
            "ingest": {
                "parquet": {
                    "columns": {"user_id": "uid", "ts_ms": "event_ms"},
                    "side_tables": [
                        {
                            "path": str(tmp_path / "users.parquet"),
                            "row_key": "user_id",
                            "columns": [
                                {"source": "age", "kind": "category", "column": "age_bucket"},
                                {"source": "activity", "kind": "number"},
                            ],
                        },
                        {
                            "path": str(tmp_path / "items.csv"),
                            "row_key": "item_id",
                            "columns": [{"source": "author", "kind": "id", "column": "author_id"}],
                        },
                    ],
                }
            },
        },
        source="test",
    )


@pytest.fixture()
def own_data(tmp_path):
    """Two days of logs in one Parquet file per day, renamed columns, side tables apart.

    Users 0..199 have a side row except users 190..199; every item has one. Day 1 has one
    row with a NaN watch time and one with an unknown scenario (5).
    """
    rng = np.random.default_rng(0)
    logs = tmp_path / "logs"
    for d, day in enumerate(DAYS):
        watch = rng.uniform(0, 5e4, N)
        scenario = rng.choice(SCENARIOS, N, p=[0.55, 0.25, 0.15, 0.05]).astype(np.int32)
        if d == 0:
            watch[0] = np.nan
            scenario[1] = 5
        part = logs / f"dt={day}"
        part.mkdir(parents=True)
        pq.write_table(
            pa.table(
                {
                    "uid": rng.integers(0, 200, N),
                    "item_id": rng.integers(0, 100, N),
                    "scenario": scenario,
                    "event_ms": _ms(day) + rng.integers(0, 86_400_000, N),
                    "click": rng.integers(0, 2, N).astype(np.int8),
                    "watch_ms": watch,
                    "duration_ms": rng.uniform(1e3, 6e4, N),
                    "unused": np.zeros(N),
                }
            ),
            part / "part.parquet",
        )
    pq.write_table(
        pa.table(
            {
                "user_id": np.arange(190),
                "age": [f"a{u % 7}" for u in range(190)],
                "activity": np.arange(190, dtype=np.float64),
            }
        ),
        tmp_path / "users.parquet",
    )
    (tmp_path / "items.csv").write_text(
        "item_id,author\n" + "".join(f"{i},{i % 20}\n" for i in range(100))
    )
    return tmp_path, logs


def test_own_parquet_and_side_tables_become_contract_days(own_data):
    root, logs = own_data
    config = _config(root)
    files, notes = parquet_files([logs], config.ingest.parquet)
    summary = ingest(files, config.data, config.ingest, source="parquet")
    assert sorted(summary.days) == DAYS
    assert summary.days[DAYS[0]].quarantined == {"negative_or_nan_watch": 1, "unknown_scenario": 1}
    assert summary.days[DAYS[1]].rows_kept == N
    table = pq.read_table(root / "contract" / f"date={DAYS[1]}")
    assert {"age_bucket", "activity", "author_id"} <= set(table.column_names)
    assert "unused" not in table.column_names
    users = table.column("user_id").to_numpy()
    # side rows joined by key; users without one keep nulls and are counted
    missing = users >= 190
    assert table.column("activity").null_count == int(missing.sum())
    np.testing.assert_array_equal(
        table.column("activity").to_numpy(zero_copy_only=False)[~missing],
        users[~missing].astype(np.float64),
    )
    assert summary.side_rows_missing["users.parquet"] == int(
        (pq.read_table(logs).column("uid").to_numpy() >= 190).sum()
    )
    assert any("uid" in n for n in notes)

    # the published days load: side ids without a side row go to the OOV row, counted
    loader = ContractLoader(config, DAYS)
    batches = list(loader)
    assert sum(b.batch_size for b in batches) == 2 * N - 2
    assert loader.stats.oov["age"] == loader.stats.filled["activity"] > 0
    assert loader.stats.oov["user"] == 0


def test_a_missing_contract_column_stops_and_publishes_nothing(own_data):
    root, logs = own_data
    config = _config(root)
    config.ingest.parquet.columns.pop("ts_ms")  # the input has event_ms, not ts_ms
    with pytest.raises(ContractError, match="ts_ms"):
        files, _ = parquet_files([logs], config.ingest.parquet)
        ingest(files, config.data, config.ingest, source="parquet")
    assert not (root / "contract").exists() or not list((root / "contract").glob("date=*"))
    with pytest.raises(IngestError, match="no such file"):
        parquet_files([root / "nowhere"], config.ingest.parquet)


def test_an_undersized_id_table_warns_once_naming_the_fix(own_data, caplog, monkeypatch):
    root, logs = own_data
    config = _config(root, num_users=20)  # ids 0..199 in a table of 21 rows
    files, _ = parquet_files([logs], config.ingest.parquet)
    ingest(files, config.data, config.ingest, source="parquet")
    monkeypatch.setattr(loader_module, "_OOV_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="protorec.pipeline.loader"):
        for _ in range(2):
            list(ContractLoader(config, DAYS))
    lines = [r.getMessage() for r in caplog.records if "out-of-vocabulary" in r.getMessage()]
    assert len(lines) == 1 and "'user'" in lines[0] and "num_embeddings" in lines[0]


def test_the_cli_asks_for_a_config(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "protorec.jobs.cli", "ingest", "parquet", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "needs --config" in run.stderr
