"""The one reader of contract day partitions: files, row groups, columns, splits.

Every job that reads a day's rows goes through :class:`DayReader`: the loader (batches),
the refreshes before training (watch ratios for D2Q/TPM tables and ProWTP's codebook),
the daily job's drift and quarantine figures, and the oracle's figures in evaluation. One
reader means one file order, so row ``i`` is the same row for all of them, and one
hold-out split (:func:`holdout_mask` over that order): the daily job trains on
``split="train"``, gates on ``split="holdout"``, and its refits read ``"train"`` only.

Row order: days in the given order, then files by name within a day, then rows within a
file. Only the requested columns are decoded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from protorec.models.watch.ratio import WatchRatios, watch_ratios_from_columns
from protorec.pipeline.contract import (
    CONTRACT_COLUMNS,
    ContractError,
    check_columns,
    invalid_reasons,
    partition_dir,
)

Split = Literal["all", "train", "holdout"]


def hash_ids(ids: np.ndarray, num_embeddings: int) -> np.ndarray:
    """Hash int64 ids into [0, num_embeddings): SplitMix64's output function, then modulo.

    The hash is fixed and platform-independent (uint64 arithmetic, wrapping), so a model
    trained on one machine reads ids hashed on another the same way. It is written here
    because no installed library exposes a stable vectorised integer hash (Python's
    ``hash`` is salted for strings; pyarrow has none public).

    Args:
        ids: integer ids, any shape.
        num_embeddings: table rows.

    Shapes:
        ids: (...) int  ->  (...) int64 in [0, num_embeddings)

    >>> hash_ids(np.array([0, 1, -1, 1 << 40]), 1000).tolist()
    [535, 465, 936, 641]
    """
    z = ids.astype(np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z % np.uint64(num_embeddings)).astype(np.int64)


def holdout_mask(num_rows: int, fraction: float, seed: int) -> np.ndarray:
    """A fixed draw of about ``fraction`` of ``num_rows`` rows: True for the held-out ones.

    Row i is held out when a hash of (seed, i) falls below ``fraction``: the same rows
    whatever the world size, the batch size or the epoch.

    Shapes:
        -> (num_rows,) bool

    >>> int(holdout_mask(100_000, 0.1, seed=0).sum())
    10061
    """
    return holdout_range(0, num_rows, fraction, seed)


def holdout_range(start: int, stop: int, fraction: float, seed: int) -> np.ndarray:
    """:func:`holdout_mask` of the rows ``start..stop-1`` only (one row group at a time).

    Shapes:
        -> (stop - start,) bool

    >>> bool((holdout_range(7, 90, 0.3, 1) == holdout_mask(90, 0.3, 1)[7:]).all())
    True
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {fraction}")
    buckets = 1 << 20
    salted = np.arange(start, stop, dtype=np.int64) + (np.int64(seed) << np.int64(40))
    return hash_ids(salted, buckets) < int(fraction * buckets)


def day_files(dataset_dir: str | Path, day: dt.date) -> list[Path]:
    """The Parquet files of ``day``'s partition, in name order ([]: the day has no data)."""
    return sorted(partition_dir(dataset_dir, day).glob("*.parquet"))


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group of the days read, placed in the reader's row order."""

    path: Path
    day: dt.date
    index: int
    start: int  # first row's number in the reader's order
    num_rows: int

    @property
    def source(self) -> str:
        """Where the rows come from, for error messages."""
        return f"{self.path} (day {self.day}, row group {self.index})"


class DayReader:
    """The row groups of some days of a contract data set, and reads over them.

    Args:
        dataset_dir: the contract data set (``date=YYYY-MM-DD/*.parquet`` partitions).
        days: the days, in order; each must have a partition with Parquet files.

    Raises:
        FileNotFoundError: naming the first day without files and its folder.
    """

    def __init__(self, dataset_dir: str | Path, days: Sequence[dt.date]) -> None:
        if not days:
            raise ValueError(f"{dataset_dir}: no days given")
        self.dataset_dir = Path(dataset_dir)
        self.days = list(days)
        self.row_groups: list[RowGroup] = []
        start = 0
        for day in self.days:
            files = day_files(self.dataset_dir, day)
            if not files:
                raise FileNotFoundError(
                    f"no Parquet files for day {day} in {partition_dir(self.dataset_dir, day)}"
                )
            for path in files:
                try:
                    meta = pq.ParquetFile(path).metadata
                except (pa.ArrowException, OSError) as exc:
                    # pyarrow's own message ("magic bytes not found") names no file
                    raise ContractError(f"{path}: not a readable Parquet file ({exc})") from None
                for i in range(meta.num_row_groups):
                    rows = meta.row_group(i).num_rows
                    self.row_groups.append(RowGroup(path, day, i, start, rows))
                    start += rows
        self.num_rows = start
        self._open: tuple[Path, pq.ParquetFile] | None = None

    def split_rows(self, split: Split, fraction: float, seed: int) -> np.ndarray | None:
        """Row numbers of one side of the hold-out draw (None: ``"all"`` rows).

        Shapes:
            -> (n_split,) int64, ascending, or None
        """
        if split == "all":
            return None
        if split not in ("train", "holdout"):
            raise ValueError(f"split must be all, train or holdout, got {split!r}")
        mask = holdout_mask(self.num_rows, fraction, seed)
        return np.flatnonzero(mask if split == "holdout" else ~mask)

    def invalid_reasons(self, scenarios: Sequence[int]) -> np.ndarray:
        """Every row checked by the contract's rules (ingest's): reason code or -1.

        The daily job runs this on its day before any work, so data that did not come
        through ``protorec ingest`` is held to the same rules.

        Shapes:
            -> (num_rows,) int16, codes of :data:`~protorec.pipeline.contract.REASONS`

        Raises:
            ContractError: a file that cannot be read, lacks a contract column or holds
                one of a type that does not cast; the message names the file.
        """
        out = np.empty(self.num_rows, dtype=np.int16)
        starts: dict[Path, tuple[int, dt.date]] = {}
        for g in self.row_groups:
            starts.setdefault(g.path, (g.start, g.day))
        for path, (start, day) in starts.items():
            try:
                names = set(pq.read_schema(path).names)
                table = pq.read_table(path, columns=[c for c in CONTRACT_COLUMNS if c in names])
            except (pa.ArrowException, OSError) as exc:
                raise ContractError(f"{path}: not a readable Parquet file ({exc})") from None
            table = check_columns(table, str(path))
            out[start : start + table.num_rows] = invalid_reasons(table, list(scenarios), day)
        return out

    def schema_names(self) -> list[str]:
        """Column names of the first file (every file of a contract data set has them)."""
        return pq.read_schema(self.row_groups[0].path).names if self.row_groups else []

    def iter_row_groups(
        self, columns: Sequence[str], rows_sorted: np.ndarray | None = None
    ) -> Iterator[tuple[RowGroup, int, int, pa.Table]]:
        """Decode the row groups holding any of ``rows_sorted`` (all rows when None).

        Yields ``(group, lo, hi, table)``: the table holds exactly the rows
        ``rows_sorted[lo:hi]`` of that group (the whole group when ``rows_sorted`` is None,
        then ``lo, hi`` are its row numbers). A row group with none of the rows is not
        decoded.
        """
        for g in self.row_groups:
            if rows_sorted is None:
                lo, hi = g.start, g.start + g.num_rows
            else:
                lo, hi = (
                    int(x) for x in np.searchsorted(rows_sorted, [g.start, g.start + g.num_rows])
                )
                if lo == hi:
                    continue
            table = self.read_row_group(g, columns)
            if rows_sorted is not None and hi - lo < g.num_rows:
                table = table.take(pa.array(rows_sorted[lo:hi] - g.start))
            yield g, lo, hi, table

    def read_row_group(self, g: RowGroup, columns: Sequence[str]) -> pa.Table:
        """Every row of one row group, ``columns`` only (the last file stays open)."""
        if self._open is None or self._open[0] != g.path:
            self._open = (g.path, pq.ParquetFile(g.path))
        table = self._open[1].read_row_group(g.index, columns=list(columns))
        if table.num_rows != g.num_rows:
            raise RuntimeError(f"{g.source} changed while it was being read")
        return table

    def read(self, columns: Sequence[str], rows: np.ndarray | None = None) -> pa.Table:
        """The given rows (ascending row numbers; None: all) of ``columns``, in row order."""
        parts = [t for _, _, _, t in self.iter_row_groups(columns, rows)]
        if not parts:
            return pa.table({c: pa.array([], type=pa.float64()) for c in columns})
        return pa.concat_tables(parts)

    def read_split(
        self, columns: Sequence[str], split: Split, fraction: float, seed: int
    ) -> pa.Table:
        """:meth:`read` of one side of the hold-out draw."""
        return self.read(columns, self.split_rows(split, fraction, seed))

    def watch_ratios(self, rows: np.ndarray | None = None) -> WatchRatios:
        """Watch ratios of the given rows (None: all), with the excluded rows counted."""
        table = self.read(["watch_ms", "duration_ms"], rows)
        return watch_ratios_from_columns(
            table.column("watch_ms").to_numpy(zero_copy_only=False).astype(np.float64),
            table.column("duration_ms").to_numpy(zero_copy_only=False).astype(np.float64),
        )
