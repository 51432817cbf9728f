"""Re-seed DistProto's dead prototypes from a day's representations (the daily refresh).

A prototype that no row sends plan mass to gets no gradient from the alignment loss and
stays dead. Before a day's training, each dead prototype is moved onto the encoding of a
row of that day (drawn with a seeded generator), where the transport can reach it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from protorec.models.base import RecModel, eval_mode
from protorec.models.distproto import DistProtoArch
from protorec.models.prototype_report import PrototypeReport, prototype_report
from protorec.pipeline.batch import Batch


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
    model: RecModel, batches: Iterable[Batch], fraction: float, seed: int,
    max_rows: int = 4096,
) -> RefreshReport | None:
    """Find prototypes with less than ``fraction / K`` of the plan mass and re-seed them.

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
    arch = model.dense_arch
    if not isinstance(arch, DistProtoArch) or fraction <= 0:
        return None
    batches = list(batches)
    report: PrototypeReport = prototype_report(model, batches)
    global_usage = _all_reduce(report.global_usage.sum(0))
    dead_global = torch.nonzero(
        PrototypeReport.share(global_usage) < fraction / global_usage.numel()
    ).flatten().tolist()
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
    z_g, z_s, scen = [], [], []
    with eval_mode(model):
        for batch in batches:
            out = model.net(model.pooled(batch.sparse), batch.dense, batch.scenario)
            z_g.append(out["z_g"])
            z_s.append(out["z_s"])
            scen.append(batch.scenario)
            if sum(len(z) for z in z_g) >= max_rows:
                break
    z_g = _gather_rows(torch.cat(z_g)[:max_rows])
    z_s = _gather_rows(torch.cat(z_s)[:max_rows])
    scen = _gather_rows(torch.cat(scen)[:max_rows])
    gen = torch.Generator().manual_seed(seed)

    def reseed(weight: torch.Tensor, dead: list[int], candidates: torch.Tensor) -> None:
        if len(candidates) == 0:
            return
        pick = torch.randint(len(candidates), (len(dead),), generator=gen)
        norm = weight.norm(dim=-1).mean()
        weight[dead] = (F.normalize(candidates[pick].float(), dim=-1) * norm).to(weight)

    reseed(arch.global_prototypes.weight.data[0], dead_global, z_g)
    for s, dead in dead_scenario.items():
        reseed(arch.scenario_prototypes.weight.data[s], dead, z_s[scen.cpu() == s])
    return RefreshReport(dead_global, dead_scenario)
