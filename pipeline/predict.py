"""Score every row of some days with a plain model and stream the scores to Parquet.

The engine of `protorec predict`. Rows are read row group by row group with the one
:class:`~protorec.pipeline.day_reader.DayReader` (its row order: days, files by name, rows)
and converted by the loader's own :func:`~protorec.pipeline.loader.table_to_batch`, so a
row scores as it does in ``protorec evaluate``. Memory holds one row group and one batch
of output; the file is written to a temporary name beside ``out`` and renamed when every
row is in, so a reader never sees half of it.

Output columns, one row per input row in the reader's order::

    user_id, item_id, scenario, ts_ms   the row's keys, as in the data (contract types)
    p_click                             float32 click probability
    watch_pred_ms                       float32 predicted watch time in ms (watch head only)
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from protorec.models.base import RecModel
from protorec.pipeline.contract import CONTRACT_SCHEMA
from protorec.pipeline.day_reader import DayReader
from protorec.pipeline.job_config import ProtorecConfig
from protorec.pipeline.loader import LoaderStats, needed_columns, table_to_batch, warn_oov

#: The contract columns that identify a row in the output.
KEY_COLUMNS = ("user_id", "item_id", "scenario", "ts_ms")


def output_schema(with_watch: bool) -> pa.Schema:
    """The output file's schema: the row keys, ``p_click`` and, with a watch head, watch ms."""
    fields = [CONTRACT_SCHEMA.field(name) for name in KEY_COLUMNS]
    fields.append(pa.field("p_click", pa.float32(), nullable=False))
    if with_watch:
        fields.append(pa.field("watch_pred_ms", pa.float32(), nullable=False))
    return pa.schema(fields)


@torch.no_grad()
def predict_to_parquet(
    config: ProtorecConfig,
    model: RecModel,
    reader: DayReader,
    out: str | Path,
    progress: bool = False,
) -> int:
    """Write ``model``'s scores of every row of ``reader`` to the Parquet file ``out``.

    Args:
        config: the export's config (features, scenarios, ``loader.batch_size``).
        model: a plain single-process model (``load_export``'s).
        reader: the days to score.
        out: the file to write (replaced atomically).
        progress: a tqdm bar of the rows scored.

    Returns:
        the number of rows written (``reader.num_rows``).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with_watch = model.dense_arch.watch_head is not None
    schema = output_schema(with_watch)
    columns = list(dict.fromkeys([*needed_columns(config), *KEY_COLUMNS]))
    batch_size = config.loader.batch_size
    stats = LoaderStats.zeros(config)
    tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    written = 0
    bar = tqdm(total=reader.num_rows, unit="row", desc="predict", disable=not progress)
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for group, _, _, table in reader.iter_row_groups(columns):
                for start in range(0, table.num_rows, batch_size):
                    rows = table.slice(start, batch_size)
                    writer.write_table(_scored(model, config, group.day, rows, stats, schema))
                    written += rows.num_rows
                    bar.update(rows.num_rows)
        os.replace(tmp, out)
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    warn_oov(stats, config, f"{reader.dataset_dir} {reader.days[0]}..{reader.days[-1]}")
    return written


def _scored(
    model: RecModel,
    config: ProtorecConfig,
    day: dt.date,
    rows: pa.Table,
    stats: LoaderStats,
    schema: pa.Schema,
) -> pa.Table:
    prediction = model.predict(table_to_batch(rows, config, day=day, stats=stats))
    data = {name: rows.column(name).cast(schema.field(name).type) for name in KEY_COLUMNS}
    data["p_click"] = pa.array(prediction["click_prob"].float().numpy())
    if "watch_pred_ms" in schema.names:
        data["watch_pred_ms"] = pa.array(prediction["watch_pred_ms"].float().numpy())
    return pa.table(data, schema=schema)
