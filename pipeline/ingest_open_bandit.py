"""The Open Bandit Dataset -> contract rows (the ``open_bandit`` source of ``protorec ingest``).

Input: a policy folder of OBD as distributed (``.../bts`` or ``.../random``) holding
``<campaign>/<campaign>.csv`` and ``<campaign>/item_context.csv`` for each campaign the
config lists. Each campaign is a scenario (``ingest.open_bandit.campaigns``: all=0,
men=1, women=2 by default). Columns::

    scenario     <- the campaign's code
    ts_ms        <- timestamp ("2019-11-24 00:00:17.004101+00:00": UTC, parsed with its
                    offset; a timestamp without an offset stops the run rather than guess)
    item_id      <- code * item_id_stride + item_id (OBD numbers items per campaign, and
                    the same number is a different item in another campaign)
    click        <- click
    user_id      <- pseudo-user: stable id of (user_feature_0, .., user_feature_3)
    watch_ms, duration_ms <- null (OBD has no watch time)

extras: ``campaign_item_id`` (the raw item id), ``position``, ``propensity_score`` and
``user_feature_0..3`` as stable ids; the item context columns the config lists are
joined by the raw item id.

OBD has no user id. Rows with the same four hashed user features share a pseudo-user:
a user context, not a person (many people share one), so per-user metrics (GAUC, XGAUC)
on OBD are per-context metrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from protorec.pipeline.contract import ContractError
from protorec.pipeline.ingest import (
    IngestError,
    OpenBanditIngestConfig,
    SideTable,
    SourceFile,
    stable_ids,
)

USER_FEATURES = tuple(f"user_feature_{i}" for i in range(4))
_TYPES = {
    "timestamp": pa.timestamp("us", tz="UTC"),
    "item_id": pa.int64(),
    "position": pa.int64(),
    "click": pa.int64(),
    "propensity_score": pa.float64(),
    **{name: pa.string() for name in USER_FEATURES},
}


def pseudo_user_ids(raw: pa.Table) -> pa.Array:
    """The pseudo-user id of OBD rows: the stable id of the four user features joined.

    Shapes:
        raw: N rows with ``user_feature_0..3`` (strings)  ->  (N,) int64

    >>> t = pa.table({f"user_feature_{i}": ["a", "a", "b"] for i in range(4)})
    >>> ids = pseudo_user_ids(t).to_pylist()
    >>> ids[0] == ids[1] != ids[2]
    True
    """
    # \x1f (unit separator) cannot occur in OBD's hex hashes, so the join is unambiguous.
    joined = pc.binary_join_element_wise(*(raw.column(c) for c in USER_FEATURES), "\x1f")
    return stable_ids(joined)


def open_bandit_files(
    policy_dir: Path, config: OpenBanditIngestConfig
) -> tuple[list[SourceFile], list[str]]:
    """Describe the campaign files of one OBD policy folder for ``ingest``.

    Args:
        policy_dir: e.g. ``open_bandit/bts``, with one sub-folder per campaign.
        config: the ``ingest.open_bandit`` section.

    Returns:
        The source files (one per campaign) and notes for the summary.
    """
    if not policy_dir.is_dir():
        raise IngestError(f"{policy_dir}: not a folder (give an OBD policy folder, e.g. .../bts)")
    files = []
    for name, code in config.campaigns.items():
        folder = policy_dir / name
        sides = []
        if config.item_columns:
            path = folder / "item_context.csv"
            sides.append(
                SideTable.load(
                    path,
                    "item_id",
                    "campaign_item_id",
                    config.item_columns,
                    name=f"{name}/item_context.csv",
                )
            )
        files.append(
            SourceFile(
                path=folder / f"{name}.csv",
                columns=dict(_TYPES),
                to_contract=_mapper(folder / f"{name}.csv", code, config.item_id_stride),
                side_tables=sides,
            )
        )
    notes = [
        f"{policy_dir.name}: campaigns as scenarios {dict(config.campaigns)}",
        "OBD has no user id: user_id is a pseudo-user, the stable id of user_feature_0..3",
        f"item_id = scenario code * {config.item_id_stride} + OBD item_id (kept as "
        "campaign_item_id); watch_ms and duration_ms are null",
    ]
    return files, notes


def _mapper(path: Path, code: int, stride: int):
    """The chunk mapping of one campaign file."""

    def to_contract(raw: pa.Table) -> pa.Table:
        n = raw.num_rows
        item = raw.column("item_id")
        lo, hi = pc.min_max(item).values()
        # Null ids pass on to be quarantined as missing_id; out-of-range ones would collide.
        if lo.as_py() is not None and (lo.as_py() < 0 or hi.as_py() >= stride):
            raise ContractError(
                f"{path}: column 'item_id' has values in [{lo}, {hi}], outside "
                f"[0, ingest.open_bandit.item_id_stride = {stride})"
            )
        ts = pc.divide(raw.column("timestamp").cast(pa.int64()), 1000)  # us -> ms, >= 1970
        cols = {
            "user_id": pseudo_user_ids(raw),
            "item_id": pc.add(item, code * stride),
            "scenario": pa.array(np.full(n, code, dtype=np.int32)),
            "ts_ms": ts,
            "click": raw.column("click"),
            "watch_ms": pa.nulls(n, pa.float64()),
            "duration_ms": pa.nulls(n, pa.float64()),
            "campaign_item_id": item,
            "position": raw.column("position"),
            "propensity_score": raw.column("propensity_score"),
        }
        cols.update({c: stable_ids(raw.column(c)) for c in USER_FEATURES})
        return pa.table(cols)

    return to_contract
