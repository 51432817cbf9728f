"""The one reader of day partitions: row order, splits, columns, watch ratios."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from protorec.pipeline.contract import CONTRACT_SCHEMA, write_day
from protorec.pipeline.day_reader import DayReader, holdout_mask


def _contract_day(day: dt.date, watch: list, duration: list) -> pa.Table:
    n = len(watch)
    ts = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
    return pa.table(
        {
            "user_id": list(range(n)),
            "item_id": list(range(n)),
            "scenario": [0] * n,
            "ts_ms": [ts] * n,
            "click": [0] * n,
            "watch_ms": watch,
            "duration_ms": duration,
        },
        schema=CONTRACT_SCHEMA,
    )


def _empty(day: dt.date) -> pa.Table:
    return _contract_day(day, [], []).append_column("reason", pa.array([], pa.string()))


def test_watch_ratios_read_only_the_given_days(tmp_path):
    d1, d2, d3 = (dt.date(2026, 1, i) for i in (1, 2, 3))
    write_day(tmp_path, d1, _contract_day(d1, [1.0, None, 4.0], [2.0, 2.0, None]), _empty(d1))
    write_day(tmp_path, d2, _contract_day(d2, [3.0, 9.0], [3.0, 3.0]), _empty(d2))
    write_day(tmp_path, d3, _contract_day(d3, [5.0] * 7, [1.0] * 7), _empty(d3))

    r = DayReader(tmp_path, [d1, d2]).watch_ratios()
    assert r.rows_in == 5
    assert sorted(r.ratio.tolist()) == [0.5, 1.0, 3.0]
    assert r.excluded["missing_watch"] == 1 and r.excluded["missing_duration"] == 1
    with pytest.raises(FileNotFoundError, match="2026-01-04"):
        DayReader(tmp_path, [d1, dt.date(2026, 1, 4)])


def test_splits_partition_the_rows_in_reader_order(tmp_path):
    d1, d2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
    write_day(
        tmp_path, d1, _contract_day(d1, [float(i) for i in range(300)], [1.0] * 300), _empty(d1)
    )
    write_day(
        tmp_path,
        d2,
        _contract_day(d2, [float(300 + i) for i in range(200)], [1.0] * 200),
        _empty(d2),
    )
    reader = DayReader(tmp_path, [d1, d2])
    assert reader.num_rows == 500
    every = reader.read(["watch_ms"]).column("watch_ms").to_pylist()
    assert every == [float(i) for i in range(500)]  # days in order, rows in file order
    train = reader.split_rows("train", 0.2, seed=3)
    hold = reader.split_rows("holdout", 0.2, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, hold])), np.arange(500))
    assert np.array_equal(hold, np.flatnonzero(holdout_mask(500, 0.2, 3)))
    watch = reader.read_split(["watch_ms"], "holdout", 0.2, 3).column("watch_ms").to_pylist()
    assert watch == [float(i) for i in hold]
    # The watch ratios of one side are those of that side's rows only.
    assert sorted(reader.watch_ratios(train).ratio.tolist()) == [float(i) for i in train]
