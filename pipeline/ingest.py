"""Ingest: a raw source, read in chunks, becomes the day-partitioned contract (docs/design.md).

The source adapters (``ingest_kuairand.py``, ``ingest_open_bandit.py``) describe each input
file as a :class:`SourceFile`: which raw columns to read, with which types, and how a raw
chunk maps onto the contract columns plus extra label and feature columns. This driver
does the rest, the same way for every source:

1. **Read and validate.** Each file is read in blocks of ``ingest.block_bytes`` by pyarrow's
   streaming CSV reader; each chunk is mapped, joined with its side tables
   (:class:`SideTable`), checked with :func:`~protorec.pipeline.contract.check_columns`,
   grouped by UTC day of ``ts_ms`` and split by
   :func:`~protorec.pipeline.contract.split_valid` into kept and quarantined rows. The
   pieces go to a hidden run folder ``DATASET/.ingest-<id>/`` (never read as data).
2. **Check.** A day whose quarantined share exceeds ``data.max_bad_share``, or a run that
   is that bad overall, stops the run (:class:`IngestError`) before anything is published.
   Then a day whose partition is already published is left exactly as it is: every row of
   the run for that day is quarantined as ``day_already_published`` under
   ``DATASET/_quarantine/already_published/date=YYYY-MM-DD/run-<id>/`` (one folder per
   run, so nothing earlier is overwritten), counted in the summary and reported. Only
   ``replace=True`` (``protorec ingest --replace``) replaces a published day, and the
   summary then gives its row counts before and after.
3. **Stage.** Each day is written with :func:`~protorec.pipeline.contract.write_day` into a
   staging data set inside the run folder.
4. **Publish.** The staged partitions are renamed over the published ones, each old one
   moved aside first. If any rename fails, the ones already done are undone.

So a run that stops (unreadable file, missing column, mostly bad day) or raises while
writing publishes nothing: the data set is left exactly as it was. Only a hard kill
(power loss, SIGKILL) inside step 4, a handful of renames, can leave some days of the run
published and others not; every partition is still whole (rename is atomic), the old ones
lie in the hidden run folder, and rerunning the ingest with ``--replace`` completes it. A
rerun never duplicates a row: without ``--replace`` it quarantines the days it holds as
already published; with it, it replaces them; days it does not hold are left alone. One
ingest at a time per data set.

Rows without a timestamp cannot be placed in a day: they are quarantined (``missing_ts``)
under ``DATASET/_quarantine/undated/<file stem>/``. The run's summary (per-day counts, rows
quarantined by reason, side rows missing, notes) is written to
``DATASET/_ingest_summary.json`` and printed as a table by ``protorec ingest``.

Memory: one chunk while reading, one day's rows while staging.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from protorec.pipeline.contract import (
    CONTRACT_COLUMNS,
    QUARANTINE_DIR,
    REASONS,
    ContractError,
    ValidationReport,
    check_columns,
    partition_dir,
    split_valid,
    write_day,
)
from protorec.pipeline.data_config import DataConfig

_MS_PER_DAY = 86_400_000
_EPOCH = dt.date(1970, 1, 1)
SUMMARY_FILE = "_ingest_summary.json"
UNDATED_DIR = "undated"
#: Under the quarantine folder: rows of days that were already published (one run each).
ALREADY_PUBLISHED_DIR = "already_published"
ALREADY_PUBLISHED = "day_already_published"
#: Only an empty field is missing. pyarrow's default also reads "NaN", "NA", "null"... as
#: missing, which would turn a NaN watch time (quarantined) into "not observed" (kept).
ONLY_EMPTY_IS_NULL = [""]
_INT63 = (1 << 63) - 1


class IngestError(RuntimeError):
    """The run stops: a file is unreadable or a day is mostly bad. Nothing was published."""


# ----------------------------------------------------------------------------- config


@dataclass
class SideColumn:
    """One raw column carried into the contract rows as a label or feature column.

    Args:
        source: the column's name in the raw file or side table.
        kind: ``id``: an integer id, kept as int64 (a float column like ``9.0`` is accepted
            when every value is whole); ``category``: any value (string or number) mapped
            to a stable int64 id by :func:`stable_ids`; ``number``: float64.
        column: its name in the contract data set; default ``source``.
    """

    source: str
    kind: Literal["id", "category", "number"]
    column: str = ""

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("side column: source must not be empty")
        if not self.column:
            self.column = self.source
        if self.column in CONTRACT_COLUMNS:
            raise ValueError(f"side column {self.source!r}: {self.column!r} is a contract column")


def _check_unique_columns(where: str, groups: Sequence[Sequence[SideColumn]]) -> None:
    names = [c.column for group in groups for c in group]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: columns {dup} are written twice")


@dataclass
class KuaiRandIngestConfig:
    """How KuaiRand files as distributed map onto the contract (``ingest_kuairand.py``).

    Args:
        missing_tab_scenario: scenario code for a log file without a ``tab`` column (the
            27K like/hate TSV); None: such a file is an error unless ``--tab`` is given.
        side_tables: folder of the user and video side tables; empty: no join (the CLI's
            ``--side-tables`` overrides it).
        user_table, video_table: their file names in that folder.
        log_columns: extra columns of the log carried into the rows (every input file
            must have them).
        user_columns: columns of the user table joined by ``user_id``.
        video_columns: columns of the video table joined by ``video_id`` (= ``item_id``).
    """

    missing_tab_scenario: int | None = None
    side_tables: str = ""
    user_table: str = "user_features_pure.csv"
    video_table: str = "video_features_basic_pure.csv"
    log_columns: list[SideColumn] = field(default_factory=list)
    user_columns: list[SideColumn] = field(default_factory=list)
    video_columns: list[SideColumn] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_unique_columns(
            "ingest.kuairand", [self.log_columns, self.user_columns, self.video_columns]
        )


@dataclass
class OpenBanditIngestConfig:
    """How the Open Bandit Dataset maps onto the contract (``ingest_open_bandit.py``).

    Args:
        campaigns: campaign folder name -> scenario code (``all``, ``men``, ``women``).
        item_id_stride: OBD numbers items per campaign from 0, so the contract's
            ``item_id`` is ``code * item_id_stride + item_id`` (the raw one is kept as
            ``campaign_item_id``); a raw id >= the stride stops the run.
        item_columns: columns of each campaign's ``item_context.csv`` joined by item id.
    """

    campaigns: dict[str, int] = field(default_factory=lambda: {"all": 0, "men": 1, "women": 2})
    item_id_stride: int = 1000
    item_columns: list[SideColumn] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.campaigns:
            raise ValueError("ingest.open_bandit.campaigns must name at least one campaign")
        codes = list(self.campaigns.values())
        if len(set(codes)) != len(codes):
            raise ValueError("ingest.open_bandit.campaigns has duplicate scenario codes")
        if self.item_id_stride < 1:
            raise ValueError("ingest.open_bandit.item_id_stride must be >= 1")
        _check_unique_columns("ingest.open_bandit", [self.item_columns])
        taken = {"campaign_item_id", "position", "propensity_score"}
        taken |= {f"user_feature_{i}" for i in range(4)}
        clash = sorted(taken & {c.column for c in self.item_columns})
        if clash:
            raise ValueError(f"ingest.open_bandit.item_columns: {clash} are written by the adapter")


@dataclass
class SideTableSpec:
    """A side table joined into every row by key (``ingest_parquet.py``).

    Args:
        path: the table, Parquet (``.parquet``) or CSV/TSV; relative to the working
            directory of the job.
        row_key: the column of the rows to look up (``user_id``, ``item_id``, ...).
        columns: the table's columns to join, with their kind and contract name.
        key: the table's key column; default ``row_key``.
    """

    path: str
    row_key: str
    columns: list[SideColumn]
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = self.row_key
        if not self.columns:
            raise ValueError(f"side table {self.path!r}: columns must name at least one column")


@dataclass
class ParquetIngestConfig:
    """How a user's own Parquet logs map onto the contract (``ingest_parquet.py``).

    Args:
        columns: contract column -> the input's column name, for the contract columns
            whose name differs in the input (the rest are read under their own name).
        extra_columns: other input columns carried into the rows (labels, features).
        side_tables: tables joined by key into every row, in order (users, items, ...).
        batch_rows: rows per chunk read from a Parquet file.
    """

    columns: dict[str, str] = field(default_factory=dict)
    extra_columns: list[SideColumn] = field(default_factory=list)
    side_tables: list[SideTableSpec] = field(default_factory=list)
    batch_rows: int = 1 << 18

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(CONTRACT_COLUMNS))
        if unknown:
            raise ValueError(
                f"ingest.parquet.columns: {unknown} are not contract columns "
                f"{list(CONTRACT_COLUMNS)}"
            )
        if self.batch_rows < 1:
            raise ValueError("ingest.parquet.batch_rows must be >= 1")
        _check_unique_columns(
            "ingest.parquet", [self.extra_columns, *(t.columns for t in self.side_tables)]
        )


@dataclass
class IngestConfig:
    """The ``ingest`` section of a protorec config.

    Args:
        block_bytes: bytes of raw text per chunk read (pyarrow's CSV block size).
        kuairand: the KuaiRand mapping.
        open_bandit: the Open Bandit mapping.
        parquet: the mapping of contract-shaped Parquet (a user's own logs).
    """

    block_bytes: int = 16 << 20
    kuairand: KuaiRandIngestConfig = field(default_factory=KuaiRandIngestConfig)
    open_bandit: OpenBanditIngestConfig = field(default_factory=OpenBanditIngestConfig)
    parquet: ParquetIngestConfig = field(default_factory=ParquetIngestConfig)

    def __post_init__(self) -> None:
        if self.block_bytes < 1024:
            raise ValueError("ingest.block_bytes must be >= 1024")


# ----------------------------------------------------------------------- conversions


def stable_ids(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Map any values to stable non-negative int64 ids: BLAKE2b-64 of the value's text.

    The id of a value is the first 8 bytes (big-endian) of ``blake2b(str(value).encode(),
    digest_size=8)`` with the top bit cleared: the same on every machine, run and file,
    with no vocabulary to keep (Python's ``hash`` is salted per process; pyarrow has no
    public hash kernel). Nulls stay null. Each distinct value is hashed once.

    Args:
        values: any array castable to string.

    Shapes:
        values: (N,)  ->  (N,) int64 >= 0, null where ``values`` is null

    >>> stable_ids(pa.array(["full_active", None, "full_active"])).to_pylist()
    [5123343777113554104, None, 5123343777113554104]
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.cast(values, pa.string()).dictionary_encode()
    digests = [
        int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "big") & _INT63
        for v in encoded.dictionary.to_pylist()
    ]
    return pa.array(digests, type=pa.int64()).take(encoded.indices)


def read_type(kind: str) -> pa.DataType:
    """The type a streamed raw column of this :class:`SideColumn` kind is read as."""
    return {"id": pa.int64(), "category": pa.string(), "number": pa.float64()}[kind]


def convert_column(col: pa.Array | pa.ChunkedArray, spec: SideColumn, source: str) -> pa.Array:
    """Convert a raw column to its contract type (int64 id or float64), naming errors.

    >>> convert_column(pa.array([9.0, None]), SideColumn("music_type", "id"), "v.csv")
    <pyarrow.lib.Int64Array object at ...>
    [
      9,
      null
    ]
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if spec.kind == "category":
        return stable_ids(col)
    target = pa.int64() if spec.kind == "id" else pa.float64()
    try:
        return pc.cast(col, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ContractError(
            f"{source}: column {spec.source!r} ({col.type}) is not a valid {spec.kind}: {exc}"
        ) from None


# ------------------------------------------------------------------------ raw files


def read_header(path: Path) -> tuple[list[str], str]:
    """The column names of a delimited text file and its delimiter (tab if the header has one).

    Raises IngestError when the file cannot be read or has no header line. A Parquet file
    (``.parquet``) gives its schema's names and no delimiter.
    """
    if path.suffix == ".parquet":
        try:
            return pq.read_schema(path).names, ""
        except (OSError, pa.ArrowInvalid) as exc:
            raise IngestError(f"{path}: unreadable Parquet: {exc}") from None
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            line = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise IngestError(f"{path}: unreadable: {exc}") from None
    if not line.strip():
        raise IngestError(f"{path}: unreadable: empty file, no header line")
    delimiter = "\t" if "\t" in line else ","
    return next(csv.reader([line], delimiter=delimiter)), delimiter


def require_columns(path: Path, header: Sequence[str], wanted: Sequence[str]) -> None:
    """Raise ContractError naming the file and every wanted column its header lacks."""
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ContractError(f"{path}: missing column(s) {missing} (header: {list(header)})")


@dataclass
class SideTable:
    """A side table (users, items) whose chosen columns are joined into the rows by key.

    Rows whose key has no side row keep null side columns and are counted under the
    table's name in the summary (``side_rows_missing``). Keys must be unique.

    Args:
        name: the table's file name, used in counts and errors.
        row_key: the column of the mapped rows to look up (``user_id``, ``item_id``...).
        keys: (M,) the side table's keys.
        columns: the converted side columns, M rows each, by contract column name.
    """

    name: str
    row_key: str
    keys: pa.Array
    columns: dict[str, pa.Array]

    @classmethod
    def load(
        cls,
        path: Path,
        key: str,
        row_key: str,
        specs: Sequence[SideColumn],
        name: str | None = None,
    ) -> SideTable:
        """Read ``path`` (CSV, the key and ``specs`` columns only); ``name`` default: file name."""
        header, delimiter = read_header(path)
        require_columns(path, header, [key, *(s.source for s in specs)])
        try:
            if not delimiter:  # Parquet
                table = pq.read_table(path, columns=[key, *(s.source for s in specs)])
                table = table.set_column(0, key, pc.cast(table.column(key), pa.int64()))
            else:
                table = pacsv.read_csv(
                    path,
                    parse_options=pacsv.ParseOptions(delimiter=delimiter),
                    convert_options=pacsv.ConvertOptions(
                        include_columns=[key, *(s.source for s in specs)],
                        column_types={key: pa.int64()},
                        null_values=ONLY_EMPTY_IS_NULL,
                    ),
                )
        except (OSError, pa.ArrowInvalid) as exc:
            raise IngestError(f"{path}: unreadable: {exc}") from None
        keys = table.column(key).combine_chunks()
        if keys.null_count or pc.count_distinct(keys).as_py() != len(keys):
            raise ContractError(f"{path}: key column {key!r} has nulls or duplicate keys")
        columns = {s.column: convert_column(table.column(s.source), s, str(path)) for s in specs}
        return cls(name or path.name, row_key, keys, columns)

    def join(self, rows: pa.Table, missing: Counter) -> pa.Table:
        """Append the side columns to ``rows`` (order kept), counting rows with no side row."""
        index = pc.index_in(rows.column(self.row_key), value_set=self.keys)
        missing[self.name] += index.null_count
        for name, col in self.columns.items():
            rows = rows.append_column(name, col.take(index))
        return rows


@dataclass
class SourceFile:
    """One raw input file and how its chunks become contract rows.

    Args:
        path: the file: comma- or tab-separated text with a header line, or Parquet.
        columns: raw columns to read, with the type each is parsed as.
        to_contract: maps a raw chunk (those columns) to a table with every contract
            column plus the source's extra columns; the same columns and types each call.
        side_tables: joined into the mapped rows, in order.
        batch_rows: rows per chunk of a Parquet file (text files are read in
            ``ingest.block_bytes`` blocks).
    """

    path: Path
    columns: dict[str, pa.DataType]
    to_contract: Callable[[pa.Table], pa.Table]
    side_tables: list[SideTable] = field(default_factory=list)
    batch_rows: int = 1 << 18

    def chunks(self, block_bytes: int) -> Iterator[pa.Table]:
        """The raw chunks of the file; IngestError / ContractError name the file."""
        header, delimiter = read_header(self.path)
        require_columns(self.path, header, list(self.columns))
        if not delimiter:
            yield from self._parquet_chunks(self.batch_rows)
            return
        try:
            reader = pacsv.open_csv(
                self.path,
                read_options=pacsv.ReadOptions(block_size=block_bytes),
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                convert_options=pacsv.ConvertOptions(
                    column_types=self.columns,
                    include_columns=list(self.columns),
                    null_values=ONLY_EMPTY_IS_NULL,
                ),
            )
            for batch in reader:
                yield pa.Table.from_batches([batch])
        except (OSError, pa.ArrowInvalid) as exc:
            raise IngestError(f"{self.path}: unreadable: {exc}") from None

    def _parquet_chunks(self, batch_rows: int) -> Iterator[pa.Table]:
        """Record batches of a Parquet file, each column cast to its declared type."""
        names = list(self.columns)
        try:
            for batch in pq.ParquetFile(self.path).iter_batches(
                batch_size=batch_rows, columns=names
            ):
                table = pa.Table.from_batches([batch])
                yield pa.table({n: self._cast(table.column(n), t) for n, t in self.columns.items()})
        except (OSError, pa.ArrowInvalid) as exc:
            raise IngestError(f"{self.path}: unreadable Parquet: {exc}") from None

    def _cast(self, col: pa.ChunkedArray, to: pa.DataType) -> pa.ChunkedArray:
        try:
            return pc.cast(col, to, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ContractError(
                f"{self.path}: a column of type {col.type} is not castable to {to}: {exc}"
            ) from None


# ---------------------------------------------------------------------------- summary


@dataclass
class IngestSummary:
    """What one ingest run read, kept, set aside and published.

    Args:
        source: the adapter's name (``kuairand``, ``open_bandit``).
        dataset: the contract data set written.
        rows_read: per input file, raw rows read.
        days: per UTC day written, the validation counts.
        undated: counts of rows without a timestamp (all quarantined).
        side_rows_missing: per side table, rows whose key had no side row (kept, with
            null side columns).
        notes: facts about the mapping the reader must know (scenario from config...).
        held: days already published that the run left alone (their rows quarantined as
            ``day_already_published``).
        replaced: days already published that the run replaced (``replace=True``), with
            their kept row counts before and after.
    """

    source: str
    dataset: str
    rows_read: dict[str, int] = field(default_factory=dict)
    days: dict[dt.date, ValidationReport] = field(default_factory=dict)
    undated: ValidationReport = field(default_factory=ValidationReport)
    side_rows_missing: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    held: list[dt.date] = field(default_factory=list)
    replaced: dict[dt.date, tuple[int, int]] = field(default_factory=dict)

    @property
    def published(self) -> list[dt.date]:
        """The days this run wrote (every day it read except the held ones)."""
        return sorted(d for d in self.days if d not in self.held)

    @property
    def total(self) -> ValidationReport:
        total = ValidationReport()
        for report in [*self.days.values(), self.undated]:
            total.add(report)
        return total

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "dataset": self.dataset,
            "rows_read": dict(self.rows_read),
            "days_written": len(self.published),
            "days_held": [d.isoformat() for d in sorted(self.held)],
            "days_replaced": {
                d.isoformat(): {"rows_before": b, "rows_after": a}
                for d, (b, a) in sorted(self.replaced.items())
            },
            "total": self.total.as_dict(),
            "days": {d.isoformat(): r.as_dict() for d, r in sorted(self.days.items())},
            "undated": self.undated.as_dict(),
            "side_rows_missing": dict(sorted(self.side_rows_missing.items())),
            "notes": list(self.notes),
        }

    def table(self) -> str:
        """The summary as a fixed-width text table, one line per day, then totals."""
        rows = [(d.isoformat(), r) for d, r in sorted(self.days.items())]
        if self.undated.rows_in:
            rows.append(("undated", self.undated))
        total = self.total
        rows.append(("total", total))
        reasons = [r for r in REASONS if total.quarantined.get(r)]
        head = ["day", "rows_in", "kept", "quarantined", "bad_share", *reasons]
        body = [
            [
                name,
                f"{r.rows_in:,}",
                f"{r.rows_kept:,}",
                f"{r.rows_quarantined:,}",
                f"{r.bad_share:.1%}",
                *(f"{r.quarantined.get(reason, 0):,}" for reason in reasons),
            ]
            for name, r in rows
        ]
        widths = [max(len(x) for x in col) for col in zip(head, *body)]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])  # day names left, numbers right
            return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

        out = [line(head), *(line(b) for b in body)]
        out += [f"read {n:,} rows from {path}" for path, n in self.rows_read.items()]
        out += [f"{n:,} rows have no row in {t}" for t, n in sorted(self.side_rows_missing.items())]
        out += [f"note: {n}" for n in self.notes]
        out += self.publication_lines()
        return "\n".join(out)

    def publication_lines(self) -> list[str]:
        """One line per published day the run left alone or replaced."""
        out = [
            f"{d} was already published: left as it was, its "
            f"{self.days[d].quarantined[ALREADY_PUBLISHED]:,} new rows quarantined as "
            f"{ALREADY_PUBLISHED} (--replace replaces the day)"
            for d in sorted(self.held)
        ]
        out += [
            f"{d} replaced: {before:,} rows before, {after:,} after"
            for d, (before, after) in sorted(self.replaced.items())
        ]
        return out


# ----------------------------------------------------------------------------- driver


def _day_of(index: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=index)


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (same file system: atomic), creating ``dst``'s parent."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


class _Run:
    """The hidden run folder: staged chunks, the staging data set, moved-aside partitions."""

    def __init__(self, dataset: Path) -> None:
        self.dataset = dataset
        self.root = dataset / f".ingest-{uuid.uuid4().hex}"
        self.chunks = self.root / "chunks"
        self.stage = self.root / "stage"
        self.aside = self.root / "aside"
        self.pieces: dict[str, list[tuple[Path, Path]]] = {}  # day key -> (kept, bad) files
        self.keep = False  # set when a failed publish could not be undone

    def put(self, key: str, kept: pa.Table, bad: pa.Table) -> None:
        folder = self.chunks / key
        folder.mkdir(parents=True, exist_ok=True)
        n = len(self.pieces.setdefault(key, []))
        paths = (folder / f"kept-{n}.parquet", folder / f"bad-{n}.parquet")
        pq.write_table(kept, paths[0], compression="none")
        pq.write_table(bad, paths[1], compression="none")
        self.pieces[key].append(paths)

    def load(self, key: str) -> tuple[pa.Table, pa.Table]:
        kept = pa.concat_tables([pq.read_table(k) for k, _ in self.pieces[key]])
        bad = pa.concat_tables([pq.read_table(b) for _, b in self.pieces[key]])
        return kept, bad

    def publish(self, relative: list[Path], remove: list[Path]) -> None:
        """Swap the staged ``relative`` partitions in and ``remove`` out, all or none.

        Every rename is journaled; on any error the done ones are reversed. If reversing
        fails too, the run folder is kept (it holds the old partitions) and named.
        """
        done: list[tuple[Path, Path]] = []

        def move(src: Path, dst: Path) -> None:
            _move(src, dst)
            done.append((src, dst))

        try:
            for rel in remove:
                move(self.dataset / rel, self.aside / rel)
            for rel in relative:
                if (self.dataset / rel).exists():
                    move(self.dataset / rel, self.aside / rel)
                move(self.stage / rel, self.dataset / rel)
        except BaseException as exc:
            try:
                for src, dst in reversed(done):
                    _move(dst, src)
            except BaseException:
                self.keep = True
                raise IngestError(
                    f"publishing failed ({exc!r}) and so did undoing it: the replaced "
                    f"partitions are kept in {self.aside}"
                ) from exc
            raise


def ingest(
    files: Sequence[SourceFile],
    data: DataConfig,
    config: IngestConfig,
    *,
    source: str,
    dataset: str | Path | None = None,
    notes: Sequence[str] = (),
    progress: bool = False,
    replace: bool = False,
) -> IngestSummary:
    """Read ``files``, validate every row, and publish the contract days (module doc).

    Args:
        files: the inputs, from a source adapter.
        data: ``data.scenarios`` (other codes are quarantined), ``data.max_bad_share``
            and, unless ``dataset`` is given, ``data.dataset``.
        config: the ingest section (block size).
        source: the adapter's name, for the summary.
        dataset: the contract data set to write; default ``data.dataset``.
        notes: lines for the summary (how the adapter mapped the source).
        progress: show a tqdm bar of rows read per file.
        replace: replace days whose partition is already published; by default they are
            left alone and the run's rows of those days quarantined (module doc).

    Returns:
        The run's :class:`IngestSummary`, also written to ``DATASET/_ingest_summary.json``.

    Raises:
        IngestError: a file is unreadable, no row was read, or a day (or the run) has a
            quarantined share above ``data.max_bad_share``. Nothing is published.
        ContractError: a file lacks a column the mapping needs, or a column cannot be
            cast to the contract type. Nothing is published.
    """
    dataset = Path(dataset if dataset is not None else data.dataset)
    summary = IngestSummary(source=source, dataset=str(dataset), notes=list(notes))
    dataset.mkdir(parents=True, exist_ok=True)
    run = _Run(dataset)
    try:
        _read_all(files, data, config, run, summary, progress)
        _check_bad_shares(summary, data.max_bad_share)
        _check_published(dataset, summary, replace)
        relative, remove = _stage(run, summary)
        run.publish(relative, remove)
    finally:
        if not run.keep:
            shutil.rmtree(run.root, ignore_errors=True)
    _write_summary(dataset, summary)
    return summary


def _read_all(
    files: Sequence[SourceFile],
    data: DataConfig,
    config: IngestConfig,
    run: _Run,
    summary: IngestSummary,
    progress: bool,
) -> None:
    for sf in files:
        name = str(sf.path)
        summary.rows_read[name] = 0
        bar = tqdm(desc=sf.path.name, unit="row", disable=not progress, leave=False)
        for chunk in sf.chunks(config.block_bytes):
            summary.rows_read[name] += chunk.num_rows
            bar.update(chunk.num_rows)
            rows = sf.to_contract(chunk)
            for side in sf.side_tables:
                rows = side.join(rows, summary.side_rows_missing)
            rows = check_columns(rows, name)
            extras = [c for c in rows.column_names if c not in CONTRACT_COLUMNS]
            rows = rows.select([*CONTRACT_COLUMNS, *extras])  # contract columns first
            _split_by_day(rows, data.scenarios, sf.path.stem, run, summary)
        bar.close()
    if not summary.rows_read or not sum(summary.rows_read.values()):
        raise IngestError(f"no rows read from {[str(f.path) for f in files]}")


def _split_by_day(
    rows: pa.Table, scenarios: list[int], stem: str, run: _Run, summary: IngestSummary
) -> None:
    """Group rows by UTC day of ts_ms, validate each group and stage its two halves."""
    ts = rows.column("ts_ms")
    undated = ts.is_null().to_numpy(zero_copy_only=False)
    day = np.floor_divide(ts.fill_null(0).to_numpy(), _MS_PER_DAY)
    if undated.any():
        kept, bad, report = split_valid(rows.filter(pa.array(undated)), scenarios)
        run.put(f"{UNDATED_DIR}/{stem}", kept, bad)
        summary.undated.add(report)
    for d in np.unique(day[~undated]).tolist():
        mask = (day == d) & ~undated
        group = rows if mask.all() else rows.filter(pa.array(mask))
        kept, bad, report = split_valid(group, scenarios, _day_of(d))
        run.put(_day_of(d).isoformat(), kept, bad)
        summary.days.setdefault(_day_of(d), ValidationReport()).add(report)


def _check_bad_shares(summary: IngestSummary, max_bad_share: float) -> None:
    bad = {d: r for d, r in summary.days.items() if r.bad_share > max_bad_share}
    if bad:
        worst = sorted(bad.items(), key=lambda kv: -kv[1].bad_share)[:5]
        detail = ", ".join(
            f"{d} {r.bad_share:.1%} of {r.rows_in:,} ({dict(r.quarantined.most_common(2))})"
            for d, r in worst
        )
        raise IngestError(
            f"{len(bad)} day(s) have more than data.max_bad_share = {max_bad_share:.1%} of "
            f"rows quarantined: {detail}; nothing was published"
        )
    total = summary.total
    if total.bad_share > max_bad_share:
        raise IngestError(
            f"{total.bad_share:.1%} of all {total.rows_in:,} rows are quarantined "
            f"(data.max_bad_share = {max_bad_share:.1%}, "
            f"{dict(total.quarantined.most_common(3))}); nothing was published"
        )


def _published_rows(dataset: Path, day: dt.date) -> int | None:
    """Rows of ``day``'s published partition, or None when it is not published."""
    files = sorted(partition_dir(dataset, day).glob("*.parquet"))
    if not files:
        return None
    return sum(pq.read_metadata(f).num_rows for f in files)


def _check_published(dataset: Path, summary: IngestSummary, replace: bool) -> None:
    """Mark the days already published: held (default) or replaced (counts kept)."""
    for day, report in sorted(summary.days.items()):
        before = _published_rows(dataset, day)
        if before is None:
            continue
        if replace:
            summary.replaced[day] = (before, report.rows_kept)
        else:
            summary.held.append(day)
            report.quarantined[ALREADY_PUBLISHED] += report.rows_kept
            report.rows_kept = 0


def _stage(run: _Run, summary: IngestSummary) -> tuple[list[Path], list[Path]]:
    """Write every staged day into the staging data set; return what to swap and remove."""
    relative: list[Path] = []
    remove: list[Path] = []
    for day in sorted(summary.days):
        kept, bad = run.load(day.isoformat())
        if day in summary.held:  # published: its partitions stay; every row set aside
            kept = kept.append_column(
                "reason", pa.array([ALREADY_PUBLISHED] * kept.num_rows, type=pa.string())
            )
            rel = (
                Path(QUARANTINE_DIR)
                / ALREADY_PUBLISHED_DIR
                / f"date={day.isoformat()}"
                / f"run-{run.root.name.removeprefix('.ingest-')}"
            )
            (run.stage / rel).mkdir(parents=True)
            pq.write_table(
                pa.concat_tables([kept, bad]),
                run.stage / rel / "part-0.parquet",
                compression="zstd",
            )
            relative.append(rel)
            continue
        write_day(run.stage, day, kept, bad)
        relative.append(partition_dir(Path(), day))
        qdir = partition_dir(Path(), day, quarantine=True)
        if bad.num_rows:
            relative.append(qdir)
        elif (run.dataset / qdir).exists():
            remove.append(qdir)  # an earlier run's quarantine of this day is stale now
    for key in sorted(k for k in run.pieces if k.startswith(f"{UNDATED_DIR}/")):
        _, bad = run.load(key)
        rel = Path(QUARANTINE_DIR) / key
        (run.stage / rel).mkdir(parents=True)
        pq.write_table(bad, run.stage / rel / "part-0.parquet", compression="zstd")
        relative.append(rel)
    return relative, remove


def _write_summary(dataset: Path, summary: IngestSummary) -> None:
    tmp = dataset / f".{SUMMARY_FILE}.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    os.replace(tmp, dataset / SUMMARY_FILE)
