"""What DistProto's prototypes are doing: usage per scenario, global cosine, and a PNG of both.

Usage is plan mass: for each scenario, the transport mass its rows send to each prototype,
summed over the batches given. A prototype no scenario uses is dead; global prototypes
with pairwise cosine near one have collapsed onto each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from protorec.models.base import RecModel, eval_mode
from protorec.models.distproto import DistProtoArch
from protorec.pipeline.batch import Batch


@dataclass
class PrototypeReport:
    """Prototype usage per scenario and the global prototypes' geometry.

    Args:
        scenario_names: one per scenario.
        rows: (S,) rows seen per scenario.
        global_usage: (S, K_g) plan mass of each scenario's global problem per prototype.
        scenario_usage: (S, K_s) plan mass of each scenario's own-prototype problem per
            prototype; None without scenario prototypes.
        global_cosine: (K_g, K_g) pairwise cosine of the global prototypes.
    """

    scenario_names: list[str]
    rows: Tensor
    global_usage: Tensor
    scenario_usage: Tensor | None
    global_cosine: Tensor

    @staticmethod
    def share(usage: Tensor) -> Tensor:
        """Usage as a share of each scenario's mass (rows sum to 1; 0 for unseen scenarios)."""
        return usage / usage.sum(-1, keepdim=True).clamp_min(torch.finfo(usage.dtype).tiny)

    @staticmethod
    def dead(usage: Tensor, fraction: float = 0.1) -> Tensor:
        """(S,) prototypes whose share is below ``fraction`` of the uniform share 1/K."""
        return (PrototypeReport.share(usage) < fraction / usage.shape[-1]).sum(-1)

    def max_off_diagonal_cosine(self) -> float:
        """Largest cosine between two different global prototypes (1: two have collapsed)."""
        k = self.global_cosine.shape[0]
        off = self.global_cosine.masked_fill(torch.eye(k, dtype=torch.bool), float("-inf"))
        return float(off.max()) if k > 1 else float("nan")


@torch.no_grad()
def prototype_report(
    model: RecModel, batches: Iterable[Batch], scenario_names: list[str] | None = None
) -> PrototypeReport:
    """Run DistProto's transport on ``batches`` (eval mode, no training) and sum the usage.

    Args:
        model: a DistProto RecModel.
        batches: the rows to assign (e.g. a held-out slice of the day).
        scenario_names: display names (default: scenario indices).

    Returns:
        the report; usage sums equal the plans' masses.
    """
    arch = model.dense_arch
    if not isinstance(arch, DistProtoArch):
        raise ValueError(f"prototype_report needs a DistProto model, got {type(arch).__name__}")
    S = arch.num_scenarios
    k_g = arch.config.num_global_prototypes
    k_s = arch.config.num_scenario_prototypes
    rows = torch.zeros(S, dtype=torch.long)
    global_usage = torch.zeros(S, k_g, dtype=torch.float64)
    scenario_usage = (
        torch.zeros(S, k_s, dtype=torch.float64) if arch.scenario_prototypes is not None else None
    )
    with eval_mode(model):
        for batch in batches:
            out = model.net(model.pooled(batch.sparse), batch.dense, batch.scenario)
            align = arch.transport(out["z_g"], out["z_s"], batch.scenario)
            plan = align.plan.double().cpu()
            rows += align.layout.counts.cpu()
            global_usage += plan[:S, :, :k_g].sum(1)
            if scenario_usage is not None:
                scenario_usage += plan[S:, :, :k_s].sum(1)
    prototypes = arch.global_prototypes.normalized()[0].detach().double().cpu()
    names = scenario_names or [str(s) for s in range(S)]
    return PrototypeReport(names, rows, global_usage, scenario_usage, prototypes @ prototypes.t())


def plot_prototype_report(report: PrototypeReport, path: str | Path) -> Path:
    """Write a PNG: usage share per scenario (global, scenario) and the global cosine matrix.

    Args:
        report: from :func:`prototype_report`.
        path: the PNG to write.

    Returns:
        the path written.
    """
    panels = [("global prototypes: usage share", report.global_usage)]
    if report.scenario_usage is not None:
        panels.append(("scenario prototypes: usage share", report.scenario_usage))
    fig = Figure(figsize=(6 * (len(panels) + 1), 4.5), layout="constrained")
    FigureCanvasAgg(fig)  # attaches an Agg canvas: no pyplot, no global backend
    axes = fig.subplots(1, len(panels) + 1)
    dead = []
    for ax, (title, usage) in zip(axes, panels):
        image = ax.imshow(PrototypeReport.share(usage).numpy(), aspect="auto", cmap="viridis")
        ax.set_title(title)
        ax.set_xlabel("prototype")
        ax.set_yticks(range(len(report.scenario_names)), report.scenario_names)
        fig.colorbar(image, ax=ax)
        dead.append(int(PrototypeReport.dead(usage).sum()))
    ax = axes[-1]
    image = ax.imshow(report.global_cosine.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_title(f"global prototypes: cosine (max off-diagonal "
                 f"{report.max_off_diagonal_cosine():.2f})")
    ax.set_xlabel("prototype")
    ax.set_ylabel("prototype")
    fig.colorbar(image, ax=ax)
    fig.suptitle(f"rows per scenario: {report.rows.tolist()}; "
                 f"dead (share < 0.1/K) per panel: {dead}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=80)
    return path
