"""What a model learns from the data before a day's training: watch-head statistics, prototypes.

:func:`refresh_watch_head` is the one call a job makes before training (and the daily
job each day): it reads the training rows' watch ratios through the day reader and hands
them to the head's ``refresh_statistics`` hook (D2Q / TPM fit their tables once; ProWTP
fits its HVQ-VAE, then refits it warm every day with identities kept).
:func:`reseed_dead_prototypes` moves prototypes that no row sends plan mass to onto rows
of the day (DistProto's daily refresh). Both are no-ops for models that have nothing to
refresh: the model's hooks answer None. Both run the same on every rank.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from protorec.models.base import RecModel, eval_mode
from protorec.models.batch import Batch
from protorec.models.features import FeaturesConfig
from protorec.models.hvqvae import RefitReport
from protorec.models.prototype_report import PrototypeReport
from protorec.pipeline.day_reader import DayReader
from protorec.pipeline.trainer import ShardedModel, global_shape, local_shards, stable_seed


def refresh_watch_head(
    model: RecModel, reader: DayReader, rows: np.ndarray | None = None
) -> RefitReport | None:
    """Fit the statistics the model's watch head needs from the given rows of ``reader``.

    Deterministic given the data and the config's seeds, so every rank of a distributed
    job computes the same; buffers are written in place (DDP keeps its references).

    Args:
        model: a RecModel, or ``ShardedModel.module`` (the RecModel inside DMP).
        reader: the training days.
        rows: the training rows (``reader.split_rows("train", ...)``): a job that holds
            rows out for evaluation must not fit statistics on them. None: every row.

    Returns:
        ProWTP's :class:`RefitReport` on a refit; None otherwise (no head, a head without
        statistics, tables already fitted, or ProWTP's first fit).
    """
    head = model.dense_arch.watch_head
    if head is None or not head.wants_statistics():
        return None
    return head.refresh_statistics(reader.watch_ratios(rows))


@dataclass
class RefreshReport:
    """What the refresh did: dead prototypes found and re-seeded, per set."""

    dead_global: list[int]
    dead_scenario: dict[int, list[int]]

    @property
    def reseeded(self) -> int:
        return len(self.dead_global) + sum(len(v) for v in self.dead_scenario.values())


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def _gather_rows(z: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, in rank order (the same tensor on every rank)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return z
    parts: list[torch.Tensor] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(parts, z.cpu())
    return torch.cat(parts)


@torch.no_grad()
def reseed_dead_prototypes(
    model: RecModel,
    batches: Iterable[Batch],
    fraction: float,
    seed: int,
    max_rows: int = 4096,
) -> RefreshReport | None:
    """Find prototypes with less than ``fraction / K`` of the plan mass and re-seed them.

    A prototype that no row sends plan mass to gets no gradient from the alignment loss and
    stays dead; before a day's training it is moved onto the encoding of a row of that day
    (drawn with a seeded generator), where the transport can reach it.

    Collective under torch.distributed: every rank passes its share of the rows; usage
    and candidate rows are combined over ranks, so every rank moves the same prototypes
    to the same points. Returns None for models without prototypes.

    Args:
        model: the RecModel (``sharded.module`` under DistributedModelParallel).
        batches: the rows that decide usage and give the new points.
        fraction: dead below this fraction of the uniform share (0 turns it off).
        seed: seeds the choice of rows.
        max_rows: candidate rows kept per rank.
    """
    if fraction <= 0:
        return None
    batches = list(batches)
    report = model.prototype_report(batches)
    if report is None:
        return None
    global_usage = _all_reduce(report.global_usage.sum(0))
    dead_global = (
        torch.nonzero(PrototypeReport.share(global_usage) < fraction / global_usage.numel())
        .flatten()
        .tolist()
    )
    dead_scenario: dict[int, list[int]] = {}
    if report.scenario_usage is not None:
        usage = _all_reduce(report.scenario_usage)
        rows = _all_reduce(report.rows.clone())
        for s in range(usage.shape[0]):
            if rows[s] > 0:
                dead = torch.nonzero(PrototypeReport.share(usage[s]) < fraction / usage.shape[1])
                if len(dead):
                    dead_scenario[s] = dead.flatten().tolist()
    if not dead_global and not dead_scenario:
        return RefreshReport([], {})
    outputs: list[dict[str, torch.Tensor]] = []
    scenarios = []
    with eval_mode(model):
        for batch in batches:
            outputs.append(model.encode(batch))
            scenarios.append(batch.scenario)
            if sum(len(s) for s in scenarios) >= max_rows:
                break
    candidates = {
        key: _gather_rows(torch.cat([o[key] for o in outputs])[:max_rows]) for key in outputs[0]
    }
    scenario = _gather_rows(torch.cat(scenarios)[:max_rows])
    gen = torch.Generator().manual_seed(seed)
    model.dense_arch.reseed_prototypes(dead_global, dead_scenario, candidates, scenario, gen)
    return RefreshReport(dead_global, dead_scenario)


def refresh_id_maps(
    sharded: ShardedModel,
    features: FeaturesConfig,
    reader: DayReader,
    rows: np.ndarray | None,
    day: dt.date,
    seed: int,
) -> dict[str, dict]:
    """Admit the training rows' ids into each managed table, evict stale ones.

    Every rank reads the same rows and updates its copy of the maps identically. Rows
    that were freed or given to a new id start fresh: their embeddings are drawn again
    (the tables' initialisation, uniform in +-1/sqrt(dim), from a generator seeded by
    ``seed``, the table and the day, so any sharding draws the same values) and their
    optimiser state is zeroed.

    Returns:
        per managed table, :meth:`~protorec.models.managed_ids.IdUpdate.as_dict`
        (``rows_used``, ``admitted``, ``evicted``, ``overflow``: ids left without a row,
        ``seen``: distinct ids of the rows).
    """
    columns = {f.name: f.column for f in features.sparse if f.managed}
    if not columns:
        return {}
    table = reader.read(sorted(set(columns.values())), rows)
    ordinal = (day - dt.date(1970, 1, 1)).days
    report = {}
    for name, column in columns.items():
        col = table.column(column)
        ids = (col.drop_null() if col.null_count else col).to_numpy()
        update = sharded.module.managed_id_maps()[name].update(ids, ordinal)
        report[name] = update.as_dict()
        if len(update.reset_rows):
            _reset_rows(sharded, name, update.reset_rows, stable_seed(seed, name, ordinal))
    return report


@torch.no_grad()
def _reset_rows(sharded: ShardedModel, name: str, rows: np.ndarray, seed: int) -> None:
    """Re-draw rows of a table and zero their optimiser state, in place on each shard."""
    key = f"sparse_arch.embedding_bags.{name}.weight"
    weight = sharded.dmp.state_dict()[key]  # views of the tables (as init_embeddings uses)
    num_rows, dim = global_shape(weight)
    bound = 1.0 / math.sqrt(dim)
    fresh = torch.empty(len(rows), dim).uniform_(
        -bound, bound, generator=torch.Generator().manual_seed(seed)
    )
    optim = sharded.optimizer.state_dict()
    row_state = [
        v
        for v in optim.get("state", {}).get(key, {}).values()
        if isinstance(v, torch.Tensor) and global_shape(v)[:1] == (num_rows,)
    ]
    for value, new in [(weight, fresh), *[(v, None) for v in row_state]]:
        for local, row0, col0 in local_shards(value):
            inside = np.flatnonzero((rows >= row0) & (rows < row0 + local.shape[0]))
            where = torch.from_numpy(rows[inside] - row0)
            if new is None:
                local[where] = 0
            else:
                cols = slice(col0, col0 + local.shape[1])
                local[where] = new[torch.from_numpy(inside), cols].to(local.dtype)
    # The optimiser's state dict may hold copies of fused state: load it back.
    sharded.optimizer.load_state_dict(optim)
