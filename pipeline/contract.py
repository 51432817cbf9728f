"""The interaction data contract (docs/design.md): schema, row validation, atomic partition writes.

A contract data set is a directory of Parquet files partitioned by day::

    DATASET/date=YYYY-MM-DD/part-0.parquet         rows that meet the contract
    DATASET/_quarantine/date=YYYY-MM-DD/part-0.parquet   rows set aside, with a `reason`

Every writer (simulator, ingest) goes through :func:`split_valid` and
:func:`write_day`, so the rules and the crash safety live in one place.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from protorec.pipeline.atomic import replace_dir

#: The columns every contract row has, with their types (docs/design.md, "Data contract").
CONTRACT_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("scenario", pa.int32(), nullable=False),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("click", pa.int8(), nullable=False),
        pa.field("watch_ms", pa.float64(), nullable=True),
        pa.field("duration_ms", pa.float64(), nullable=True),
    ]
)
CONTRACT_COLUMNS = tuple(CONTRACT_SCHEMA.names)

#: Quarantine reasons, in the order they are checked; a row gets the first that applies.
REASONS = (
    "missing_id",
    "missing_ts",
    "bad_click",
    "unknown_scenario",
    "negative_or_nan_watch",
    "zero_or_negative_duration",
    "wrong_date",
    "day_already_published",  # ingest only: the day's partition exists (pipeline/ingest.py)
)

QUARANTINE_DIR = "_quarantine"


class ContractError(ValueError):
    """A source cannot be read as the contract at all (missing or mistyped columns)."""


@dataclass
class ValidationReport:
    """Counts of one validation: rows kept, rows set aside by reason."""

    rows_in: int = 0
    rows_kept: int = 0
    quarantined: Counter = field(default_factory=Counter)

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())

    @property
    def bad_share(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    def add(self, other: ValidationReport) -> None:
        self.rows_in += other.rows_in
        self.rows_kept += other.rows_kept
        self.quarantined.update(other.quarantined)

    def as_dict(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_quarantined": self.rows_quarantined,
            "quarantined_by_reason": dict(sorted(self.quarantined.items())),
        }


def check_columns(table: pa.Table, source: str) -> pa.Table:
    """Cast the contract columns of ``table`` to the contract types, or raise ContractError.

    Extra columns are kept. A missing contract column, or one whose values cannot be cast
    losslessly (strings in ``user_id``, say), is an error that names the source and column.
    """
    missing = [c for c in CONTRACT_COLUMNS if c not in table.column_names]
    if missing:
        raise ContractError(f"{source}: missing contract column(s) {missing}")
    for f in CONTRACT_SCHEMA:
        col = table.column(f.name)
        if col.type == f.type:
            continue
        try:
            cast = pc.cast(col, f.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ContractError(
                f"{source}: column {f.name!r} has type {col.type}, not castable to {f.type}: {exc}"
            ) from None
        table = table.set_column(table.column_names.index(f.name), f.name, cast)
    return table


def _day_bounds_ms(day: dt.date) -> tuple[int, int]:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    lo = int(start.timestamp() * 1000)
    return lo, lo + 86_400_000


def invalid_reasons(
    table: pa.Table, scenarios: list[int] | tuple[int, ...], day: dt.date | None = None
) -> np.ndarray:
    """Per row, the index in :data:`REASONS` of the first rule it breaks, or -1.

    ``table`` must already have the contract columns and types (:func:`check_columns`).
    When ``day`` is given, rows whose ``ts_ms`` falls outside that UTC day are
    ``wrong_date``.

    Shapes:
        table: N rows  ->  (N,) int16
    """
    n = table.num_rows
    reason = np.full(n, -1, dtype=np.int16)

    def mark(code: int, bad: np.ndarray) -> None:
        reason[(reason < 0) & bad] = code

    def null(name: str) -> np.ndarray:
        return table.column(name).is_null().to_numpy(zero_copy_only=False)

    def values(name: str, fill: float) -> np.ndarray:
        return table.column(name).fill_null(fill).to_numpy(zero_copy_only=False)

    mark(0, null("user_id") | null("item_id"))
    mark(1, null("ts_ms"))
    click = values("click", -1)
    mark(2, (click != 0) & (click != 1))
    scen = values("scenario", np.iinfo(np.int32).min)
    mark(3, ~np.isin(scen, np.asarray(scenarios, dtype=np.int64)))
    watch = table.column("watch_ms").to_numpy(zero_copy_only=False).astype(np.float64)
    watch_nan_not_null = np.isnan(watch) & ~null("watch_ms")
    mark(4, watch_nan_not_null | (np.nan_to_num(watch, nan=0.0) < 0))
    dur = table.column("duration_ms").to_numpy(zero_copy_only=False).astype(np.float64)
    dur_present = ~null("duration_ms")
    mark(5, dur_present & ~(dur > 0))
    if day is not None:
        lo, hi = _day_bounds_ms(day)
        ts = values("ts_ms", lo)
        mark(6, (ts < lo) | (ts >= hi))
    return reason


def reason_counts(reason: np.ndarray) -> Counter:
    """Rows per reason name of :func:`invalid_reasons`' codes (valid rows not counted)."""
    codes, counts = np.unique(reason[reason >= 0], return_counts=True)
    return Counter({REASONS[c]: int(k) for c, k in zip(codes.tolist(), counts.tolist())})


def split_valid(
    table: pa.Table, scenarios: list[int] | tuple[int, ...], day: dt.date | None = None
) -> tuple[pa.Table, pa.Table, ValidationReport]:
    """Split contract rows into (kept, quarantined with a ``reason`` column, report).

    The rules are :func:`invalid_reasons`'. Nothing is dropped silently: every input row
    is in exactly one output.
    """
    reason = invalid_reasons(table, scenarios, day)
    ok = reason < 0
    kept = table.filter(pa.array(ok))
    bad = table.filter(pa.array(~ok))
    bad_reasons = np.asarray(REASONS, dtype=object)[reason[~ok]]
    bad = bad.append_column("reason", pa.array(bad_reasons.tolist(), type=pa.string()))
    report = ValidationReport(
        rows_in=table.num_rows, rows_kept=kept.num_rows, quarantined=reason_counts(reason)
    )
    return kept, bad, report


def partition_dir(dataset: str | Path, day: dt.date, quarantine: bool = False) -> Path:
    base = Path(dataset) / QUARANTINE_DIR if quarantine else Path(dataset)
    return base / f"date={day.isoformat()}"


def _write_atomic(table: pa.Table, final_dir: Path) -> None:
    """Write ``table`` as ``final_dir/part-0.parquet`` so that readers never see half of it.

    The file goes to a sibling temporary directory first, which is then renamed over the
    old partition (the old one is moved aside and removed only after the rename).
    """
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.parent / f".tmp-{final_dir.name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        pq.write_table(table, tmp / "part-0.parquet", compression="zstd")
        with open(tmp / "part-0.parquet", "rb+") as fh:
            os.fsync(fh.fileno())
        replace_dir(tmp, final_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_day(dataset: str | Path, day: dt.date, kept: pa.Table, quarantined: pa.Table) -> None:
    """Publish one day's kept rows, and its quarantined rows if any, each atomically."""
    _write_atomic(kept, partition_dir(dataset, day))
    qdir = partition_dir(dataset, day, quarantine=True)
    if quarantined.num_rows:
        _write_atomic(quarantined, qdir)
    elif qdir.exists():
        shutil.rmtree(qdir)


def list_days(dataset: str | Path) -> list[dt.date]:
    """The days present in a contract data set, sorted (quarantine and temporaries skipped)."""
    days = []
    for p in Path(dataset).glob("date=*"):
        if p.is_dir():
            days.append(dt.date.fromisoformat(p.name.split("=", 1)[1]))
    return sorted(days)


def parse_day_range(text: str) -> tuple[dt.date, dt.date]:
    """Parse ``YYYY-MM-DD`` or ``YYYY-MM-DD..YYYY-MM-DD`` (inclusive) into two dates.

    >>> parse_day_range("2026-01-01..2026-01-03")
    (datetime.date(2026, 1, 1), datetime.date(2026, 1, 3))
    """
    lo, _, hi = text.partition("..")
    start = dt.date.fromisoformat(lo)
    end = dt.date.fromisoformat(hi) if hi else start
    if end < start:
        raise ValueError(f"day range {text!r} ends before it starts")
    return start, end


def days_in_range(text: str) -> list[dt.date]:
    """Every day of ``YYYY-MM-DD`` or ``YYYY-MM-DD..YYYY-MM-DD`` (inclusive), in order.

    >>> [d.day for d in days_in_range("2026-01-30..2026-02-01")]
    [30, 31, 1]
    """
    lo, hi = parse_day_range(text)
    return [lo + dt.timedelta(days=i) for i in range((hi - lo).days + 1)]
