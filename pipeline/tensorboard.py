"""TensorBoard event files of a run: training scalars per step, evaluation per scenario.

Optional: needs the ``tensorboard`` package (``pip install tensorboard``), asked for only
when a run writes events. Open with ``tensorboard --logdir DIR``. Only the main rank
writes (scalars are the global step's, the same on every rank).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TensorBoardLog:
    """Scalars of one run into ``directory`` (created), tagged ``train/...``, ``eval/...``."""

    def __init__(self, directory: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # the optional dependency is missing
            raise RuntimeError(
                f"writing TensorBoard events to {directory} needs the tensorboard package: "
                "pip install tensorboard"
            ) from exc
        self.directory = Path(directory)
        self._writer = SummaryWriter(log_dir=str(self.directory))

    def train_step(
        self,
        step: int,
        outputs: dict[str, Any],
        samples_per_s: float,
        learning_rates: dict[str, float],
    ) -> None:
        """Scalars of global step ``step``: losses, diagnostics, throughput, learning rates.

        Every scalar term of the step's outputs (``loss/*``, ``ot/*``, ``watch/*``).
        """
        scalars = {
            key: float(value) for key, value in outputs.items() if "/" in key and value.numel() == 1
        }
        # the loss the step minimised: its terms sum to it (models/base.py)
        scalars["loss"] = sum(v for k, v in scalars.items() if k.startswith("loss/"))
        for key, value in scalars.items():
            self._writer.add_scalar(f"train/{key}", value, step)
        self._writer.add_scalar("train/samples_per_s", samples_per_s, step)
        for name, lr in learning_rates.items():
            self._writer.add_scalar(f"lr/{name}", lr, step)

    def evaluation(self, step: int, metrics: dict[str, Any], prefix: str = "eval") -> None:
        """Overall and per-scenario figures of ``compute_metrics`` (pipeline/metrics.py)."""
        groups = {
            "overall": metrics.get("overall", {}),
            **{
                f"scenario/{name}": figures
                for name, figures in metrics.get("per_scenario", {}).items()
            },
        }
        for group, figures in groups.items():
            for key, value in figures.items():
                if isinstance(value, int | float) and value == value:  # skips NaN
                    self._writer.add_scalar(f"{prefix}/{group}/{key}", float(value), step)

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()
