"""KuaiRand as distributed -> contract rows (the ``kuairand`` source of ``protorec ingest``).

Log files (``log_*_pure.csv``, ``*_1k.csv``, ``*_27k.csv``: comma-separated; the 27K
like/hate file: tab-separated; the delimiter is read from the header line) map as::

    user_id  <- user_id          ts_ms       <- time_ms (ms since epoch, UTC)
    item_id  <- video_id         click       <- is_click
    scenario <- tab              watch_ms    <- play_time_ms
                                 duration_ms <- duration_ms

A file without ``tab`` (the 27K like/hate TSV: ``tab`` was dropped upstream) takes its
scenario from ``--tab`` or ``ingest.kuairand.missing_tab_scenario``; the run's summary
says so. Days are UTC days of ``time_ms``: KuaiRand's own ``date`` column is the Beijing
(UTC+8) date, so the first hours of a Beijing day land on the previous UTC day.

Side tables: ``user_features_pure.csv`` joined by ``user_id`` and
``video_features_basic_pure.csv`` by ``video_id``, with the columns the config lists;
category strings (``user_active_degree``, ``video_type``, ``tag``...) become stable
BLAKE2b-64 ids (:func:`~protorec.pipeline.ingest.stable_ids`), so a loader feature on
them should be ``hashed: true``. Rows whose user or video has no side row are kept with
null side columns and counted in the summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from protorec.pipeline.contract import ContractError
from protorec.pipeline.ingest import (
    KuaiRandIngestConfig,
    SideTable,
    SourceFile,
    convert_column,
    read_header,
    read_type,
)

#: Raw log column -> contract column, for the columns every layout has (``tab`` aside).
LOG_MAPPING = {
    "user_id": "user_id",
    "video_id": "item_id",
    "time_ms": "ts_ms",
    "is_click": "click",
    "play_time_ms": "watch_ms",
    "duration_ms": "duration_ms",
}
_LOG_TYPES = {
    "user_id": pa.int64(),
    "video_id": pa.int64(),
    "time_ms": pa.int64(),
    "is_click": pa.int64(),
    "play_time_ms": pa.float64(),
    "duration_ms": pa.float64(),
    "tab": pa.int64(),
}


def kuairand_side_tables(config: KuaiRandIngestConfig, folder: Path | None) -> list[SideTable]:
    """Load the user and video side tables from ``folder`` (none when it is None)."""
    if folder is None:
        return []
    tables = []
    if config.user_columns:
        path = folder / config.user_table
        tables.append(SideTable.load(path, "user_id", "user_id", config.user_columns))
    if config.video_columns:
        path = folder / config.video_table
        tables.append(SideTable.load(path, "video_id", "item_id", config.video_columns))
    return tables


def kuairand_files(
    paths: Sequence[Path],
    config: KuaiRandIngestConfig,
    tab: int | None = None,
    side_tables: Path | None = None,
) -> tuple[list[SourceFile], list[str]]:
    """Describe KuaiRand log files for :func:`~protorec.pipeline.ingest.ingest`.

    Args:
        paths: log files as distributed (with or without ``tab``).
        config: the ``ingest.kuairand`` section.
        tab: scenario code for files without ``tab``; default
            ``config.missing_tab_scenario``.
        side_tables: folder of the side tables; default ``config.side_tables`` (empty:
            no join).

    Returns:
        The source files and notes for the summary.

    Raises:
        IngestError: a file cannot be read; ContractError: a file lacks a needed column,
        or has no ``tab`` and no scenario code was given.
    """
    scenario_for_missing_tab = tab if tab is not None else config.missing_tab_scenario
    if side_tables is None and config.side_tables:
        side_tables = Path(config.side_tables)
    sides = kuairand_side_tables(config, side_tables)
    notes = []
    if side_tables is None and (config.user_columns or config.video_columns):
        notes.append("no side tables given: user and video side columns were not joined")
    files = []
    for path in paths:
        header, _ = read_header(path)
        has_tab = "tab" in header
        if not has_tab:
            if scenario_for_missing_tab is None:
                raise ContractError(
                    f"{path}: missing column 'tab' and no scenario code for it "
                    "(give --tab or ingest.kuairand.missing_tab_scenario)"
                )
            notes.append(
                f"{path.name} has no 'tab' column: every row got scenario "
                f"{scenario_for_missing_tab} (from --tab / ingest.kuairand.missing_tab_scenario)"
            )
        columns = {k: t for k, t in _LOG_TYPES.items() if k != "tab" or has_tab}
        columns.update({c.source: read_type(c.kind) for c in config.log_columns})
        files.append(
            SourceFile(
                path=path,
                columns=columns,
                to_contract=_mapper(path, config, None if has_tab else scenario_for_missing_tab),
                side_tables=sides,
            )
        )
    return files, notes


def _mapper(path: Path, config: KuaiRandIngestConfig, fixed_scenario: int | None):
    """The chunk mapping of one log file (``fixed_scenario`` when it has no ``tab``)."""

    def to_contract(raw: pa.Table) -> pa.Table:
        cols = {dst: raw.column(src) for src, dst in LOG_MAPPING.items()}
        if fixed_scenario is None:
            cols["scenario"] = raw.column("tab")
        else:
            cols["scenario"] = pa.array(np.full(raw.num_rows, fixed_scenario, dtype=np.int32))
        for spec in config.log_columns:
            cols[spec.column] = convert_column(raw.column(spec.source), spec, str(path))
        return pa.table(cols)

    return to_contract
