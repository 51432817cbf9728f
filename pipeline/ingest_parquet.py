"""A user's own Parquet logs -> contract rows (the ``parquet`` source of ``protorec ingest``).

Input: Parquet files, or folders searched recursively for ``*.parquet`` (day partitions
``date=YYYY-MM-DD/`` or any other layout: rows are placed in days by their own ``ts_ms``,
never by the folder name). Each file must hold the contract columns, under their own names
or the names ``ingest.parquet.columns`` maps them from; ``ingest.parquet.extra_columns``
are carried along. Side tables (``ingest.parquet.side_tables``: users, items, ...) are
joined by key at ingest, so a day's partition holds the side features as they were when
the day was ingested (a later backfill does not see tomorrow's side rows); a row whose
key has no side row keeps nulls there and is counted (``side_rows_missing``), and the
loader then counts it again as an out-of-vocabulary id or a filled dense value.

Every row then goes through the same validation, quarantine and atomic publish as the
other sources (:func:`protorec.pipeline.ingest.ingest`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from protorec.pipeline.contract import CONTRACT_SCHEMA
from protorec.pipeline.ingest import (
    IngestError,
    ParquetIngestConfig,
    SideTable,
    SourceFile,
    convert_column,
    read_type,
)


def _inputs(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*.parquet")
                if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
            )
            if not found:
                raise IngestError(f"{path}: no *.parquet files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise IngestError(f"{path}: no such file or folder")
    return files


def parquet_files(
    inputs: Sequence[Path], config: ParquetIngestConfig
) -> tuple[list[SourceFile], list[str]]:
    """The inputs as :class:`SourceFile` objects, and notes on the mapping for the summary.

    Folders (and files) whose name starts with ``.`` or ``_`` inside a given folder are
    skipped: they are a contract data set's quarantine and staging folders.
    """
    source_of = {c: config.columns.get(c, c) for c in CONTRACT_SCHEMA.names}
    raw_types = {source_of[f.name]: f.type for f in CONTRACT_SCHEMA}
    raw_types.update({c.source: read_type(c.kind) for c in config.extra_columns})
    sides = [SideTable.load(Path(t.path), t.key, t.row_key, t.columns) for t in config.side_tables]

    def to_contract(raw: pa.Table) -> pa.Table:
        out = {f.name: raw.column(source_of[f.name]) for f in CONTRACT_SCHEMA}
        out.update(
            {
                c.column: convert_column(raw.column(c.source), c, "parquet input")
                for c in config.extra_columns
            }
        )
        return pa.table(out)

    files = [
        SourceFile(path, raw_types, to_contract, sides, config.batch_rows)
        for path in _inputs(inputs)
    ]
    renamed = {c: s for c, s in source_of.items() if c != s}
    notes = [f"{len(files)} Parquet file(s)"]
    if renamed:
        notes.append(f"contract columns read from {renamed}")
    notes += [f"side table {t.path} joined by {t.row_key}" for t in config.side_tables]
    return files, notes
