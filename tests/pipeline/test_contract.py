import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from protorec.pipeline.contract import (
    ContractError,
    check_columns,
    list_days,
    partition_dir,
    split_valid,
    write_day,
)

DAY = dt.date(2026, 1, 2)
T0 = int(dt.datetime(2026, 1, 2, tzinfo=dt.UTC).timestamp() * 1000)


def _table(**over):
    cols = {
        "user_id": [1, 2, 3, 4, 5, 6, None],
        "item_id": [1, 1, 1, 1, 1, 1, 1],
        "scenario": [0, 1, 9, 0, 0, 0, 0],
        "ts_ms": [T0, T0 + 1, T0, T0, T0, T0 - 1, T0],
        "click": [0, 1, 1, 0, 1, 0, 0],
        "watch_ms": [10.0, None, 3.0, -1.0, float("nan"), 4.0, 5.0],
        "duration_ms": [100.0, 100.0, 100.0, 100.0, 0.0, 100.0, 100.0],
    }
    cols.update(over)
    return pa.table(cols)


def test_split_counts_every_row_once():
    table = check_columns(_table(), "t")
    kept, bad, rep = split_valid(table, [0, 1], DAY)
    assert rep.rows_in == 7 and kept.num_rows + bad.num_rows == 7
    assert kept.column("user_id").to_pylist() == [1, 2]
    assert dict(rep.quarantined) == {
        "unknown_scenario": 1,
        "negative_or_nan_watch": 2,
        "wrong_date": 1,
        "missing_id": 1,
    }
    assert bad.column("reason").to_pylist().count("negative_or_nan_watch") == 2
    # null watch time is allowed (not observed); NaN is not
    assert kept.column("watch_ms").null_count == 1


def test_zero_duration_is_quarantined():
    table = check_columns(_table(watch_ms=[1.0] * 7, user_id=list(range(7))), "t")
    _, bad, rep = split_valid(table, [0, 1, 9])
    assert rep.quarantined["zero_or_negative_duration"] == 1


def test_missing_and_mistyped_columns_name_source():
    with pytest.raises(ContractError, match=r"src\.csv: missing contract column\(s\) \['click'\]"):
        check_columns(_table().drop(["click"]), "src.csv")
    with pytest.raises(ContractError, match="src: column 'user_id'"):
        check_columns(_table(user_id=["a"] * 7), "src")


def test_write_day_atomic_replace(tmp_path):
    table = check_columns(_table(), "t")
    kept, bad, _ = split_valid(table, [0, 1], DAY)
    write_day(tmp_path, DAY, kept, bad)
    write_day(tmp_path, DAY, kept.slice(0, 1), bad.slice(0, 0))
    assert list_days(tmp_path) == [DAY]
    assert pq.read_table(partition_dir(tmp_path, DAY)).num_rows == 1
    assert not partition_dir(tmp_path, DAY, quarantine=True).exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert np.all(pq.read_table(partition_dir(tmp_path, DAY)).column("scenario").to_numpy() == 0)
