"""What DistProto's prototypes are doing: usage per scenario, global cosine, and a PNG of both.

Usage is plan mass: for each scenario, the transport mass its rows send to each prototype,
summed over the batches given. A prototype no scenario uses is dead; global prototypes
with pairwise cosine near one have collapsed onto each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor


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


def plot_prototype_report(report: PrototypeReport, path: str | Path) -> Path:
    """Write a PNG: usage share per scenario (global, scenario) and the global cosine matrix.

    Args:
        report: from ``RecModel.prototype_report``.
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
    ax.set_title(
        f"global prototypes: cosine (max off-diagonal {report.max_off_diagonal_cosine():.2f})"
    )
    ax.set_xlabel("prototype")
    ax.set_ylabel("prototype")
    fig.colorbar(image, ax=ax)
    fig.suptitle(
        f"rows per scenario: {report.rows.tolist()}; dead (share < 0.1/K) per panel: {dead}"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=80)
    return path
