"""From the Parquet contract to TorchRec batches, each row exactly once per pass over all ranks.

:class:`ContractLoader` reads the partitions ``DATASET/date=YYYY-MM-DD/*.parquet`` of a list
of days and yields :class:`~protorec.models.batch.Batch` objects; :func:`table_to_batch`
turns one in-memory table into one batch with the same conversion code (evaluator, export).

How a pass is cut (N rows over the pass, W ranks, batch size B, shuffle buffer S)::

    stream  = the pass's rows laid end to end, row group after row group: in the files'
              order, or (shuffle: true and N > S) in a seeded order of the row groups
    windows = consecutive runs of S stream positions (one window when N <= S)
    order   = within each window, a seeded permutation of its positions  (shuffle: true)
            = the stream's order                                          (shuffle: false)
    global batches: nb = ceil(N / (W*B)); global batch t = order[t*N//nb : (t+1)*N//nb]
    rank r  takes the r-th of W near-equal slices of each global batch
            (floor or ceil of its size / W rows: never more than B, never empty)

so the rows of step t are the same whatever the world size: 1 rank at batch 2B and 2 ranks
at batch B train on the same global batches (the 1-vs-2 process equivalence rests on it),
every row is read by exactly one rank, and every rank yields the same number of batches
(DistributedModelParallel runs collectives every step: unequal counts would hang the job).
The cut depends only on (N, W, B, S, seed, epoch) and the row groups' sizes: a job resumed
at ``start_batch = k`` with the same world size and batch size yields exactly the batches
k.. of the full pass, reading from the window that holds batch k on.

A pass of at most S rows (``loader.shuffle_buffer``, 4M rows by default) is one window
shuffled by one permutation of the whole pass, seeded by (seed, epoch): the batches every
shipped config had before the buffer existed. A larger pass mixes rows across the pass at
row-group granularity (the groups' order) and row by row within a window only: a window
holds the rows of about S / (rows per group) groups drawn from anywhere in the pass.

Reading: only the columns the config names (ids, dense features, scenario, labels, user id)
are read; other columns of the data set, the simulator's ground truth included, are never
read. A rank streams the pass window by window: for each window it decodes the row groups
holding its rows of that window (one at a time; a group cut by a window's end is decoded
once, kept for the next window), keeps only its rows and converts them. Its memory is
bounded by the window, not by the pass: about S/W rows of 8*(F + 3) + 4*(D + 3) bytes for F
sparse and D dense features (88 bytes a row for the simulator's 5 + 3 features), plus about
45 bytes per window row for the window's permutation and its sort, plus one row group
decoded and one converted (measured figures: docs/own_data.md). The only per-pass indexes
are one number per row group and three per batch (no per-row array of its own): the
hold-out draw and the ``valid`` mask (the caller's, one byte a row) are applied row group
by row group.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from tqdm import tqdm

from protorec.models.batch import Batch
from protorec.models.managed_ids import ManagedIds
from protorec.pipeline.contract import parse_day_range
from protorec.pipeline.day_reader import DayReader, hash_ids, holdout_range

if TYPE_CHECKING:
    from protorec.pipeline.job_config import ProtorecConfig

log = logging.getLogger(__name__)

_EPOCH = dt.date(1970, 1, 1)
_MS_PER_DAY = 86_400_000
#: Contract columns every batch needs, besides the feature columns.
_BASE_COLUMNS = ("user_id", "scenario", "click", "watch_ms", "duration_ms")


@dataclass
class LoaderConfig:
    """How the loader cuts the data into batches.

    Args:
        batch_size: B, the most rows per batch on each rank (a pass is cut into equal
            batches of floor or ceil of the rank's rows / batches, see the module doc).
        shuffle: mix rows across the whole pass with a permutation seeded by
            (seed, epoch); false keeps the files' order (evaluation).
        seed: base seed of the shuffle; the epoch is mixed in.
        progress: show a tqdm bar (rank 0 only) while a pass loads and runs.
        max_oov_share: a pass in which a larger share of a sparse feature's ids went to
            its out-of-vocabulary row warns once, naming the feature, the share and the fix
            (an id table sized below the largest id sends most rows to one row silently).
        shuffle_buffer: S, the most rows of the pass a rank's memory holds at once (the
            pass is read in windows of S consecutive rows, see the module doc). A pass of at
            most S rows is shuffled whole, as one permutation; a larger one is shuffled by
            row groups and within each window. The default, 4M rows, keeps every shipped
            config's passes whole; it costs about 840 MiB on one rank at the simulator's
            5 + 3 features (1M rows: about 430 MiB; docs/own_data.md).
    """

    batch_size: int = 512
    shuffle: bool = True
    seed: int = 0
    progress: bool = False
    max_oov_share: float = 0.05
    shuffle_buffer: int = 4_000_000

    def __post_init__(self) -> None:
        if self.shuffle_buffer < 1:
            raise ValueError("loader.shuffle_buffer must be >= 1")
        if self.batch_size < 1:
            raise ValueError("loader.batch_size must be >= 1")
        if self.seed < 0:
            raise ValueError("loader.seed must be >= 0")
        if not 0.0 <= self.max_oov_share <= 1.0:
            raise ValueError("loader.max_oov_share must be in [0, 1]")


@dataclass
class LoaderStats:
    """What the loader read and repaired, counted per rank (sum them over ranks).

    Args:
        rows_read: rows converted into batches.
        oov: per sparse feature, ids sent to the last (out-of-vocabulary) row: null ids,
            and for non-hashed features ids outside [0, num_embeddings - 1).
        filled: per dense feature, values replaced by ``fill`` (null, NaN or infinite).
    """

    rows_read: int = 0
    oov: dict[str, int] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)

    @classmethod
    def zeros(cls, config: ProtorecConfig) -> LoaderStats:
        """Zero counts for every feature of ``config`` (so a zero shows as a zero)."""
        return cls(
            oov={f.name: 0 for f in config.features.sparse},
            filled={f.name: 0 for f in config.features.dense},
        )

    def all_reduce(self) -> LoaderStats:
        """The sum of every rank's stats (a collective: every rank must call it)."""
        if not (dist.is_available() and dist.is_initialized()):
            return LoaderStats(self.rows_read, dict(self.oov), dict(self.filled))
        oov, filled = sorted(self.oov), sorted(self.filled)
        counts = [self.rows_read] + [self.oov[k] for k in oov] + [self.filled[k] for k in filled]
        total = torch.tensor(counts, dtype=torch.int64)
        dist.all_reduce(total)
        values = total.tolist()
        return LoaderStats(
            values[0],
            dict(zip(oov, values[1 : 1 + len(oov)])),
            dict(zip(filled, values[1 + len(oov) :])),
        )

    def as_dict(self) -> dict:
        return {"rows_read": self.rows_read, "oov": dict(self.oov), "filled": dict(self.filled)}


@dataclass
class _Arrays:
    """Converted rows, packed row-major so that shuffling moves one cache line per row.

    Shapes (n rows, F sparse, D dense features):
        ints: (n, F + 3) int64 = F ids in feature order, scenario index, user_id, day.
        floats: (n, D + 3) float32 = D dense features, click, watch_ms, duration_ms.
    """

    ints: np.ndarray
    floats: np.ndarray

    @property
    def num_rows(self) -> int:
        return int(self.ints.shape[0])

    @staticmethod
    def empty(n: int, config: ProtorecConfig) -> _Arrays:
        return _Arrays(
            np.empty((n, len(config.features.sparse) + 3), dtype=np.int64),
            np.empty((n, len(config.features.dense) + 3), dtype=np.float32),
        )

    def rows(self, a: int, b: int) -> _Arrays:
        """Rows a..b-1, sharing memory."""
        return _Arrays(self.ints[a:b], self.floats[a:b])


class _Buffer:
    """Arrays reused from window to window (grown when a window needs more rows).

    The caller must drop its views of the arrays before a :meth:`get` that grows them, or
    both copies are held at once.
    """

    def __init__(self, config: ProtorecConfig) -> None:
        self.config = config
        self.arrays = _Arrays.empty(0, config)

    def get(self, n: int) -> _Arrays:
        """The first ``n`` rows (contents undefined)."""
        if n > self.arrays.num_rows:
            self.arrays = _Arrays.empty(0, self.config)  # the old arrays freed first
            # headroom: a window's share and its carry vary by up to a batch
            self.arrays = _Arrays.empty(n + n // 16, self.config)
        return self.arrays.rows(0, n)


#: Features already warned about in this process: one warning each, not one per pass.
_OOV_WARNED: set[str] = set()


def warn_oov(stats: LoaderStats, config: ProtorecConfig, where: str) -> list[str]:
    """Warn once per feature whose OOV share of ``stats`` exceeds ``loader.max_oov_share``.

    Returns the features warned about by this call.
    """
    if not stats.rows_read:
        return []
    warned = []
    for f in config.features.sparse:
        share = stats.oov.get(f.name, 0) / stats.rows_read
        if share > config.loader.max_oov_share and f.name not in _OOV_WARNED:
            _OOV_WARNED.add(f.name)
            warned.append(f.name)
            fix = (
                "its ids are null: check the column"
                if f.hashed
                else f"ids without a row: raise features.sparse[{f.name}].num_embeddings "
                "(rows for distinct ids) or lower evict_after_days"
                if f.managed
                else f"ids must lie in [0, {f.num_embeddings - 1}): raise "
                f"features.sparse[{f.name}].num_embeddings above the largest id, or set "
                "hashed: true for an open vocabulary"
            )
            log.warning(
                "sparse feature %r: %.1f%% of %d ids went to the out-of-vocabulary "
                "row (%s; loader.max_oov_share %.2f); %s",
                f.name,
                100 * share,
                stats.rows_read,
                where,
                config.loader.max_oov_share,
                fix,
            )
    return warned


def oov_summary(stats: dict) -> str:
    """One line of OOV shares per table from :meth:`LoaderStats.as_dict` (job summaries).

    >>> oov_summary({"rows_read": 200, "oov": {"user": 0, "item": 9}, "filled": {}})
    'out-of-vocabulary ids: user 0.0%, item 4.5% of 200 rows'
    """
    rows = max(stats["rows_read"], 1)
    shares = ", ".join(f"{k} {100 * v / rows:.1f}%" for k, v in stats["oov"].items())
    return f"out-of-vocabulary ids: {shares} of {stats['rows_read']} rows"


def needed_columns(config: ProtorecConfig) -> list[str]:
    """The contract columns a batch of ``config`` is made from (labels and keys included)."""
    cols = list(_BASE_COLUMNS)
    for column in [f.column for f in config.features.sparse] + [
        f.column for f in config.features.dense
    ]:
        if column not in cols:
            cols.append(column)
    return cols


def _column(table: pa.Table, name: str, source: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise ValueError(f"{source}: column {name!r} (named by the config) is missing")
    return table.column(name)


def _required_ints(table: pa.Table, name: str, source: str) -> np.ndarray:
    col = _column(table, name, source)
    if not pa.types.is_integer(col.type):
        raise ValueError(f"{source}: column {name!r} has type {col.type}, expected integers")
    if col.null_count:
        raise ValueError(f"{source}: column {name!r} has {col.null_count} nulls (contract)")
    return col.to_numpy()


def _floats(col: pa.ChunkedArray, name: str, source: str) -> np.ndarray:
    """Float64 values of a numeric column, NaN where null."""
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise ValueError(f"{source}: column {name!r} has type {col.type}, expected numbers")
    if col.null_count:
        col = col.cast(pa.float64())
    return col.to_numpy().astype(np.float64, copy=False)


def _convert(
    table: pa.Table,
    config: ProtorecConfig,
    day: np.ndarray | int,
    source: str,
    stats: LoaderStats,
    id_maps: Mapping[str, ManagedIds] | None = None,
    into: _Arrays | None = None,
) -> _Arrays:
    """Convert contract rows to packed model inputs, counting every repaired value.

    ``into``: the arrays to write (as many rows as the table; a view of a reused buffer
    spares the page faults of fresh memory); default new ones.
    """
    n = table.num_rows
    feats = config.features

    num_sparse, num_dense = len(feats.sparse), len(feats.dense)
    arrays = into if into is not None else _Arrays.empty(n, config)
    ints, floats = arrays.ints, arrays.floats
    assert len(ints) == n
    for i, f in enumerate(feats.sparse):
        col = _column(table, f.column, source)
        if not pa.types.is_integer(col.type):
            raise ValueError(
                f"{source}: sparse feature {f.name!r}: column {f.column!r} has type "
                f"{col.type}; only integer ids are supported"
            )
        null = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else None
        raw = (col.fill_null(0) if null is not None else col).to_numpy()
        raw = raw.astype(np.int64, copy=False)
        oov_row = f.num_embeddings - 1
        out = ints[:, i]  # written in place: no per-column temporary
        if f.hashed:
            out[:] = hash_ids(raw, f.num_embeddings)
            bad = null
        elif f.managed:
            if id_maps is None or f.name not in id_maps:
                raise ValueError(
                    f"sparse feature {f.name!r} is managed: the loader needs "
                    "the model's id map (id_maps)"
                )
            out[:], bad = id_maps[f.name].lookup(raw)
            if null is not None:
                bad |= null
        else:
            out[:] = raw
            bad = raw.view(np.uint64) >= oov_row  # one compare: negative ids wrap above 2^63
            if null is not None:
                bad |= null
        if bad is not None:
            n_bad = int(np.count_nonzero(bad))
            if n_bad:
                out[bad] = oov_row
            stats.oov[f.name] = stats.oov.get(f.name, 0) + n_bad

    for j, d in enumerate(feats.dense):
        x = _floats(_column(table, d.column, source), d.column, source)
        missing = ~np.isfinite(x)
        if d.transform == "log1p":
            below = np.count_nonzero((x < 0) & ~missing)
            if below:
                raise ValueError(
                    f"{source}: dense feature {d.name!r}: {below} negative values in column "
                    f"{d.column!r} cannot take log1p"
                )
            x = np.log1p(x) - d.shift
        else:
            x = x - d.shift
        x /= d.scale  # in place: one temporary per column
        n_missing = int(np.count_nonzero(missing))
        if n_missing:
            x[missing] = d.fill
        stats.filled[d.name] = stats.filled.get(d.name, 0) + n_missing
        floats[:, j] = x

    codes = np.asarray(config.data.scenarios, dtype=np.int64)
    order = np.argsort(codes)
    scen_raw = _required_ints(table, "scenario", source)
    pos = np.searchsorted(codes[order], scen_raw).clip(0, len(codes) - 1)
    unknown = codes[order][pos] != scen_raw
    if unknown.any():
        found = sorted(set(scen_raw[unknown].tolist()))[:5]
        raise ValueError(
            f"{source}: scenario code(s) {found} are not in data.scenarios "
            f"{config.data.scenarios} (contract data should never hold one)"
        )
    click = _required_ints(table, "click", source)
    if ((click != 0) & (click != 1)).any():
        raise ValueError(f"{source}: column 'click' holds values other than 0 and 1")

    floats[:, num_dense] = click
    for k, name in enumerate(("watch_ms", "duration_ms"), start=num_dense + 1):
        floats[:, k] = _floats(_column(table, name, source), name, source)
    ints[:, num_sparse] = order[pos]
    ints[:, num_sparse + 1] = _required_ints(table, "user_id", source)
    ints[:, num_sparse + 2] = day
    stats.rows_read += n
    return arrays


class _BatchMaker:
    """Slices packed pass arrays into Batches; lengths/offsets cached per batch size."""

    def __init__(self, arrays: _Arrays, keys: list[str]) -> None:
        self.ints = torch.from_numpy(arrays.ints)
        self.floats = torch.from_numpy(arrays.floats)
        self.keys = keys
        self._jagged: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, a: int, b: int) -> Batch:
        n, f = b - a, len(self.keys)
        if n not in self._jagged:
            lengths = torch.ones(f * n, dtype=torch.int32)
            offsets = torch.arange(f * n + 1, dtype=torch.int32)
            self._jagged[n] = (lengths, offsets)
        lengths, offsets = self._jagged[n]
        # one transposed copy each (key-major ids for the KJT, contiguous label columns),
        # always a copy: the loader reuses the arrays for its next window
        copy = torch.contiguous_format
        ints = self.ints[a:b].t().clone(memory_format=copy)
        floats = self.floats[a:b]
        d = floats.shape[1] - 3
        labels = floats[:, d:].t().clone(memory_format=copy)
        return Batch(
            dense=floats[:, :d].clone(memory_format=copy),
            sparse=KeyedJaggedTensor(
                keys=self.keys, values=ints[:f].reshape(-1), lengths=lengths, offsets=offsets
            ),
            scenario=ints[f],
            click=labels[0],
            watch_ms=labels[1],
            duration_ms=labels[2],
            user_id=ints[f + 1],
            day=ints[f + 2],
        )


def table_to_batch(
    table: pa.Table,
    config: ProtorecConfig,
    day: dt.date | None = None,
    stats: LoaderStats | None = None,
    id_maps: Mapping[str, ManagedIds] | None = None,
) -> Batch:
    """One Batch holding every row of an in-memory contract table (evaluator, export).

    Args:
        table: contract rows with the columns the config names (others are ignored).
        config: the job config (features, scenarios).
        day: the day of every row; None takes it from ``ts_ms`` (UTC).
        stats: counts of repaired values are added here when given.
        id_maps: the model's id maps (``RecModel.id_maps``), needed for managed features.

    Shapes:
        table: B rows  ->  Batch of B rows (dense (B, D), sparse B ids per key, ...)

    >>> from protorec.pipeline.config import from_dict
    >>> from protorec.pipeline.job_config import ProtorecConfig
    >>> cfg = from_dict(ProtorecConfig, {
    ...     "data": {"dataset": "d", "scenarios": [3, 7]},
    ...     "features": {"sparse": [{"name": "item", "column": "item_id", "num_embeddings": 5}],
    ...                  "dense": [{"name": "dur", "column": "duration_ms", "scale": 10.0}]}})
    >>> t = pa.table({"user_id": [1, 2], "item_id": [3, 9], "scenario": [7, 3],
    ...               "click": pa.array([1, 0], pa.int8()), "watch_ms": [5.0, None],
    ...               "duration_ms": [20.0, 30.0]})
    >>> stats = LoaderStats()
    >>> b = table_to_batch(t, cfg, day=dt.date(1970, 1, 3), stats=stats)
    >>> b.sparse["item"].values().tolist(), b.scenario.tolist(), b.day.tolist()
    ([3, 4], [1, 0], [2, 2])
    >>> b.dense[:, 0].tolist(), b.watch_ms.isnan().tolist(), stats.oov
    ([2.0, 3.0], [False, True], {'item': 1})
    """
    stats = stats if stats is not None else LoaderStats()
    if day is not None:
        day_index: np.ndarray | int = (day - _EPOCH).days
    else:
        ts = _required_ints(table, "ts_ms", "table")
        day_index = ts // _MS_PER_DAY
    arrays = _convert(table, config, day_index, "table", stats, id_maps)
    return _BatchMaker(arrays, [f.name for f in config.features.sparse])(0, arrays.num_rows)


def _as_rows(x: np.ndarray) -> np.ndarray:
    """A C-contiguous (n, k) array as n opaque k-item records: one element per row.

    A row scatter through this view moves each row as one element, 3x faster than
    numpy's (n, k) fancy indexing.

    Shapes:
        x: (n, k)  ->  (n,) void records sharing x's memory
    """
    return x.view(np.dtype((np.void, x.shape[1] * x.itemsize))).reshape(-1)


def _sort_with_destinations(rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` sorted, and where each sorted row goes back to: ``rows[dest] == sorted``.

    Linear time through a bitmap over the window (a sort plus searchsorted costs ~10x
    more on a window of rows, and is the loader's hot spot when shuffling).

    Shapes:
        rows: (m,) distinct ints in [0, n)  ->  sorted (m,) int64, dest (m,) int64
    """
    mark = np.zeros(n, dtype=bool)
    mark[rows] = True
    rank = np.cumsum(mark, dtype=np.int32 if n < 2**31 else np.int64) - 1
    dest = np.empty(len(rows), dtype=np.int64)
    dest[rank[rows]] = np.arange(len(rows))
    return np.flatnonzero(mark), dest


def _resolve_days(days: Sequence[dt.date] | str) -> list[dt.date]:
    if isinstance(days, str):
        lo, hi = parse_day_range(days)
        return [lo + dt.timedelta(days=i) for i in range((hi - lo).days + 1)]
    out = list(days)
    if not out:
        raise ValueError("the loader needs at least one day")
    return out


def _default_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return rank, world_size


class ContractLoader:
    """Batches of one rank over a pass of contract days (see the module doc for the cut).

    Args:
        config: the job config (data.scenarios, features, loader).
        days: the days of the pass, in order, or a range ``"YYYY-MM-DD..YYYY-MM-DD"``;
            every day must have a partition.
        dataset_dir: the contract data set; default ``config.data.dataset``.
        rank, world_size: this process's share; default torch.distributed's when it is
            initialised, else 0 and 1.
        epoch: mixed into the shuffle seed (:meth:`set_epoch`).
        start_batch: first batch to yield, for resuming a checkpointed pass.
        shuffle, progress: override ``config.loader``.
        split: ``"all"`` rows of the days, or only the ``"train"`` or ``"holdout"`` side of
            a fixed, seeded draw of ``holdout_fraction`` of them (:func:`holdout_mask`):
            the daily job trains on one side and gates on the other.
        holdout_fraction: the share of rows on the holdout side, in (0, 1).
        id_maps: the model's id maps (``RecModel.id_maps``), needed for managed features;
            read at each pass, so a map updated between passes is used by the next.
        valid: (rows of the days,) bool: rows to keep (the daily job's contract check);
            None keeps every row.

    Shapes:
        each yielded Batch: B_i <= loader.batch_size rows, B_i >= 1; ``len(loader)``
        batches per pass on every rank, of which batches ``start_batch..`` are yielded.

    Attributes:
        stats: :class:`LoaderStats` of the rows read by the last (or running) pass.
        num_rows: N, the rows of the pass over all ranks.
    """

    def __init__(
        self,
        config: ProtorecConfig,
        days: Sequence[dt.date] | str,
        dataset_dir: str | Path | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        epoch: int = 0,
        start_batch: int = 0,
        shuffle: bool | None = None,
        progress: bool | None = None,
        split: Literal["all", "train", "holdout"] = "all",
        holdout_fraction: float = 0.0,
        id_maps: Mapping[str, ManagedIds] | None = None,
        valid: np.ndarray | None = None,
    ) -> None:
        self.config = config
        self.id_maps = id_maps
        self.days = _resolve_days(days)
        self.dataset_dir = Path(dataset_dir if dataset_dir is not None else config.data.dataset)
        self.rank, self.world_size = _default_rank(rank, world_size)
        self.shuffle = config.loader.shuffle if shuffle is None else shuffle
        self.progress = config.loader.progress if progress is None else progress
        self.columns = needed_columns(config)
        self.reader = DayReader(self.dataset_dir, self.days)
        if split not in ("all", "train", "holdout"):
            raise ValueError(f"split must be all, train or holdout, got {split!r}")
        if split != "all":
            holdout_range(0, 0, holdout_fraction, config.loader.seed)  # checks the fraction
        if valid is not None and len(valid) != self.reader.num_rows:
            raise ValueError(
                f"valid has {len(valid)} entries for {self.reader.num_rows} rows of the days"
            )
        self.split, self.holdout_fraction, self.valid = split, holdout_fraction, valid
        # rows of the pass per row group: the loader's only per-data index (O(row groups))
        self._kept_counts = np.array(
            [
                g.num_rows if (k := self._kept(i)) is None else len(k)
                for i, g in enumerate(self.reader.row_groups)
            ],
            dtype=np.int64,
        )
        self.num_rows = int(self._kept_counts.sum())
        if self.num_rows == 0:
            raise ValueError(
                f"no rows in the {split} split of days "
                f"{self.days[0]}..{self.days[-1]} in {self.dataset_dir}"
            )
        n, w, b = self.num_rows, self.world_size, config.loader.batch_size
        self._num_batches = -(-n // (w * b))
        if n // self._num_batches < w:
            raise ValueError(
                f"{n} rows cannot be cut into {w} ranks x {self._num_batches} non-empty batches "
                f"of at most {b} rows (days {self.days[0]}..{self.days[-1]}); with "
                "batch_size 1 the row count must divide by the world size"
            )
        self.stats = LoaderStats.zeros(config)
        self.set_epoch(epoch, start_batch)

    def _kept(self, i: int) -> np.ndarray | None:
        """Rows of row group ``i`` (numbers within the group) in the pass; None: all."""
        g = self.reader.row_groups[i]
        keep = None
        if self.split != "all":
            held = holdout_range(
                g.start, g.start + g.num_rows, self.holdout_fraction, self.config.loader.seed
            )
            keep = held if self.split == "holdout" else ~held
        if self.valid is not None:
            ok = self.valid[g.start : g.start + g.num_rows]
            keep = ok if keep is None else keep & ok
        return None if keep is None else np.flatnonzero(keep)

    @property
    def rows(self) -> np.ndarray | None:
        """Row numbers of the pass in :attr:`reader`'s order (None: all its rows).

        Built on each call, O(rows): for the daily job's refits, which read those rows'
        columns whole anyway; the loader itself never builds it.
        """
        if self.split == "all" and self.valid is None:
            return None
        parts = [
            g.start + k
            for i, g in enumerate(self.reader.row_groups)
            if (k := self._kept(i)) is not None
        ]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the pass (shuffle order) and the batch to start at for the next iteration."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} is not in [0, {len(self)}]")
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        """Batches per pass on every rank (the iterator yields ``len - start_batch``)."""
        return self._num_batches

    def _cut(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rank's slice of each global batch, as pass positions (O(batches)).

        Shapes:
            -> lo (nb,), hi (nb,), bounds (nb + 1,) int64: batch t holds the pass
            positions lo[t]..hi[t]-1, this rank's rows bounds[t]..bounds[t+1]-1.
        """
        n, w, r, nb = self.num_rows, self.world_size, self.rank, self._num_batches
        chunk = np.arange(nb + 1, dtype=np.int64) * n // nb
        size = np.diff(chunk)
        lo = chunk[:-1] + r * size // w
        hi = chunk[:-1] + (r + 1) * size // w
        bounds = np.concatenate([[0], np.cumsum(hi - lo)])
        return lo, hi, bounds

    def _group_order(self) -> np.ndarray:
        """Row groups in stream order for this epoch (shuffled only across windows)."""
        g = len(self.reader.row_groups)
        if self.shuffle and self.num_rows > self.config.loader.shuffle_buffer:
            return np.random.default_rng([self.config.loader.seed, self.epoch, 0]).permutation(g)
        return np.arange(g)

    def _window_order(self, j: int, size: int) -> np.ndarray | None:
        """Pass order within window ``j`` of ``size`` rows (None: the stream's order)."""
        if not self.shuffle:
            return None
        seed = self.config.loader.seed
        if self.num_rows <= self.config.loader.shuffle_buffer:
            # the whole pass in one window: the same permutation as a whole-pass shuffle
            return np.random.default_rng([seed, self.epoch]).permutation(size)
        return np.random.default_rng([seed, self.epoch, 1 + j]).permutation(size)

    def _bar(self, total: int, desc: str, unit: str) -> tqdm | None:
        if not (self.progress and self.rank == 0):
            return None
        return tqdm(total=total, desc=desc, unit=unit, leave=False)

    def __iter__(self) -> Iterator[Batch]:
        """Yield this rank's batches ``start_batch..len(loader)-1`` of the current epoch."""
        self.stats = LoaderStats.zeros(self.config)
        first, nb = self.start_batch, len(self)
        if first == nb:
            return
        lo, hi, bounds = self._cut()
        order = self._group_order()
        starts = np.concatenate([[0], np.cumsum(self._kept_counts[order])])
        keys = [f.name for f in self.config.features.sparse]
        n, size = self.num_rows, self.config.loader.shuffle_buffer
        carry = _Arrays.empty(0, self.config)
        carry_at, t = int(bounds[first]), first  # rank row of carry[0]; next batch to yield
        cache: tuple[int, pa.Table] | None = None  # the last decoded row group
        window_buf, group_buf = _Buffer(self.config), _Buffer(self.config)
        load_bar = self._bar(int(bounds[-1] - bounds[first]), "load", "row")
        batch_bar = self._bar(nb - first, "batches", "batch")
        for j in range(int(lo[first]) // size, -(-n // size)):
            a, b = j * size, min(n, (j + 1) * size)
            # this rank's batches with pass positions in window [a, b)
            t0 = max(first, int(np.searchsorted(hi, a, side="right")))
            t1 = int(np.searchsorted(lo, b, side="left"))
            if t0 >= t1:
                continue
            pos_lo, pos_hi = np.maximum(lo[t0:t1], a), np.minimum(hi[t0:t1], b)
            lens = pos_hi - pos_lo
            total = int(lens.sum())
            pos = np.repeat(pos_lo - (np.cumsum(lens) - lens), lens) + np.arange(total)
            assert bounds[t0] + pos_lo[0] - lo[t0] == carry_at + carry.num_rows
            perm = self._window_order(j, b - a)
            dest: np.ndarray | None = None
            if perm is None:
                stream = pos
            else:
                stream, dest = _sort_with_destinations(perm[pos - a], b - a)
                stream += a
            out = window_buf.get(carry.num_rows + total)
            c = carry.num_rows
            out.ints[:c], out.floats[:c] = carry.ints, carry.floats
            s_lo, s_hi = np.searchsorted(starts, [stream[0], stream[-1]], side="right") - 1
            for s in range(int(s_lo), int(s_hi) + 1):
                x, y = (int(v) for v in np.searchsorted(stream, starts[s : s + 2]))
                if x == y:
                    continue
                gi = int(order[s])
                g = self.reader.row_groups[gi]
                if cache is None or cache[0] != gi:
                    cache = table = None  # the last group freed before the next is decoded
                    cache = (gi, self.reader.read_row_group(g, self.columns))
                table = cache[1]
                take = stream[x:y] - starts[s]
                kept = self._kept(gi)
                if kept is not None:
                    take = kept[take]
                if take[-1] - take[0] + 1 == len(take):  # one run of rows (one rank): no copy
                    table = table.slice(int(take[0]), len(take))
                else:
                    table = table.take(pa.array(take))
                day = (g.day - _EPOCH).days
                into = out.rows(c + x, c + y) if dest is None else group_buf.get(y - x)
                part = _convert(table, self.config, day, g.source, self.stats, self.id_maps, into)
                if dest is not None:  # scattered straight into pass order
                    where = c + dest[x:y]
                    _as_rows(out.ints)[where] = _as_rows(part.ints)
                    _as_rows(out.floats)[where] = _as_rows(part.floats)
                if load_bar is not None:
                    load_bar.update(y - x)
            end = carry_at + out.num_rows
            make = _BatchMaker(out, keys)
            while t < nb and bounds[t + 1] <= end:
                yield make(int(bounds[t]) - carry_at, int(bounds[t + 1]) - carry_at)
                t += 1
                if batch_bar is not None:
                    batch_bar.update(1)
            rest = int(bounds[t]) - carry_at
            carry = _Arrays(out.ints[rest:].copy(), out.floats[rest:].copy())
            carry_at = int(bounds[t])
            # freed now, not when the next window's are built: one window's indexes at a time
            pos = perm = stream = dest = take = None  # type: ignore[assignment]
            out = make = part = None  # type: ignore[assignment]
        assert t == nb and carry.num_rows == 0
        for bar in (load_bar, batch_bar):
            if bar is not None:
                bar.close()
        if self.rank == 0:
            warn_oov(self.stats, self.config, f"{self.dataset_dir} {self.days[0]}..{self.days[-1]}")
