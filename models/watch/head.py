"""The contract every watch-time head keeps, so the dense arch and ``predict`` never ask which.

A head is the watch task's tower: ``forward(rep, scenario)`` gives its raw outputs (read as
"watch_logit" by :class:`protorec.models.base.ScenarioNet`), :meth:`WatchHead.losses` turns
them into loss terms on the rows whose watch time is observed, and
:meth:`WatchHead.predict_ms` into a watch time in milliseconds from each row alone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from protorec.models.batch import Batch
from protorec.models.modules.scenario_linear import ScenarioMLP
from protorec.models.watch.ratio import WatchRatios

if TYPE_CHECKING:
    from protorec.models.hvqvae import RefitReport

log = logging.getLogger(__name__)


class WatchHead(nn.Module):
    """A per-scenario MLP tower with ``out_features`` raw outputs, its loss and its prediction.

    Subclasses implement :meth:`loss_terms` and :meth:`predict_ms`; heads that need
    statistics of the training data (quantile tables) override :meth:`fit_statistics` and
    :meth:`is_fitted`.

    Rows whose ``watch_ms`` is NaN (unobserved), or whose duration is NaN for a head that
    reads it (``needs_duration``), take no part in the loss; :meth:`losses` counts them in
    the diagnostics "watch/rows" and "watch/unobserved".

    Args:
        in_features: D, width of the task representation.
        num_scenarios: S.
        hidden: hidden widths of the tower (ReLU).
        out_features: m, raw outputs per row.
        scale_ms: the unit of regression targets: ``t = watch_ms / scale_ms`` (keeps
            targets near 1 whatever the data set's scale).
        ratio_target: regress the watch ratio instead: each row's unit is its own duration
            (``t = watch_ms / duration_ms``, prediction ``y * duration_ms``); the head then
            reads the duration (:attr:`needs_duration`). Only heads whose output is a
            regression in the target's unit (TR, ProWTP) offer it.

    Shapes:
        rep: (B, D), scenario: (B,) int64 in [0, S)  ->  (B, m)
    """

    #: Whether the head reads ``duration_ms`` (in its loss and prediction).
    needs_duration: bool = False

    def __init__(
        self,
        in_features: int,
        num_scenarios: int,
        hidden: list[int],
        out_features: int,
        scale_ms: float,
        ratio_target: bool = False,
    ) -> None:
        super().__init__()
        self.tower = ScenarioMLP(
            in_features, [*hidden, out_features], num_scenarios, activation_on_last=False
        )
        self.out_features = out_features
        self.scale_ms = scale_ms
        self.ratio_target = ratio_target
        if ratio_target:
            self.needs_duration = True

    def forward(self, rep: Tensor, scenario: Tensor) -> Tensor:
        return self.tower(rep, scenario)

    def losses(self, raw: Tensor, batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Loss terms on the observed rows; diagnostics with "watch/rows", "watch/unobserved".

        A batch without an observed row gives one zero term that still touches every
        parameter of the head, so that DDP sees the same parameters used on every rank.

        Shapes:
            raw: (B, m) or (B,) the head's outputs; batch of B rows  ->  scalars
        """
        raw = raw.reshape(raw.shape[0], -1)
        observed = ~batch.watch_ms.isnan()
        if self.needs_duration:
            observed &= ~batch.duration_ms.isnan()
        rows = observed.sum()
        diagnostics = {
            "watch/rows": rows.detach().float(),
            "watch/unobserved": (~observed).sum().detach().float(),
        }
        if int(rows) == 0:
            zero = raw.sum() * 0 + sum(p.sum() for p in self.parameters()) * 0
            return {"watch": zero}, diagnostics
        terms, own = self.loss_terms(
            raw[observed],
            batch.watch_ms[observed],
            batch.duration_ms[observed],
            batch.scenario[observed],
        )
        return terms, {**diagnostics, **own}

    def loss_terms(
        self, raw: Tensor, watch_ms: Tensor, duration_ms: Tensor, scenario: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Loss terms of N observed rows (before ``model.watch.weight``) and diagnostics.

        Shapes:
            raw (N, m), watch_ms (N,), duration_ms (N,), scenario (N,)  ->
            ({name: ()}, {name: ()})
        """
        raise NotImplementedError

    def predict_ms(self, raw: Tensor, duration_ms: Tensor) -> Tensor:
        """Predicted watch time in ms of each row from its own outputs.

        Shapes:
            raw (B, m) or (B,), duration_ms (B,)  ->  (B,)
        """
        raise NotImplementedError

    def is_fitted(self) -> bool:
        """Whether the head's data statistics are set (always, for heads without any)."""
        return True

    def fit_statistics(self, watch_ms: np.ndarray, duration_ms: np.ndarray) -> None:
        """Set the head's data statistics from training rows (none by default).

        Args:
            watch_ms: (N,) observed watch times.
            duration_ms: (N,) their durations, > 0.
        """

    def refresh_statistics(self, ratios: WatchRatios) -> RefitReport | None:
        """Fit the head's statistics from the training days' watch ratios, once.

        The hook every job calls before training (and the daily job every day): tables
        are fitted on the first call and then kept, so a warm-started model's outputs keep
        their meaning. Returns a refit report where a head refits (ProWTP), else None.
        """
        if self.is_fitted():
            return None
        self.fit_statistics(ratios.ratio * ratios.duration_ms, ratios.duration_ms)
        log.info(
            "%s statistics fitted on %d rows (%s left out)",
            type(self).__name__,
            ratios.ratio.shape[0],
            ratios.excluded,
        )
        return None

    def wants_statistics(self) -> bool:
        """Whether :meth:`refresh_statistics` would use the data (else it need not be read)."""
        return not self.is_fitted()

    def target(self, watch_ms: Tensor, duration_ms: Tensor) -> Tensor:
        """The regression target ``watch_ms / unit``, (N,), (N,) -> (N,) (see :meth:`unit_ms`)."""
        return watch_ms / self.unit_ms(duration_ms)

    def unit_ms(self, duration_ms: Tensor) -> Tensor | float:
        """Each row's target unit: its duration with ``ratio_target``, else ``scale_ms``.

        Shapes:
            duration_ms (N,)  ->  (N,) or a float
        """
        return duration_ms if self.ratio_target else self.scale_ms


def check_fitted(head: WatchHead) -> None:
    """Raise a RuntimeError naming the fix when ``head`` has no data statistics yet.

    Not checked under ``torch.export``, which cannot branch on a buffer's values: the
    exporter (``models/inference.py``) checks once, eagerly, before tracing.
    """
    if not torch.compiler.is_exporting() and not head.is_fitted():
        raise RuntimeError(
            f"{type(head).__name__} has no statistics of the training data yet: call "
            "protorec.pipeline.refresh.refresh_watch_head "
            "before training (train_and_evaluate does), or load a checkpoint that has them"
        )


def interpolate(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear ``np.interp`` per row: each row of x on its own table (xp, fp).

    Values outside ``[xp[0], xp[-1]]`` take the end values; ``xp`` must be
    non-decreasing along its last axis (ties take the rightmost segment).

    Shapes:
        x (N,), xp (N, Q), fp (N, Q)  ->  (N,)

    >>> xp = torch.tensor([[0.0, 1.0, 3.0]]).expand(2, -1)
    >>> fp = torch.tensor([[0.0, 10.0, 30.0]]).expand(2, -1)
    >>> interpolate(torch.tensor([2.0, 5.0]), xp, fp).tolist()
    [20.0, 30.0]
    """
    q = xp.shape[-1]
    upper = torch.searchsorted(xp.contiguous(), x.unsqueeze(-1), right=True).clamp(1, q - 1)
    lower = upper - 1
    x0, x1 = xp.gather(-1, lower).squeeze(-1), xp.gather(-1, upper).squeeze(-1)
    y0, y1 = fp.gather(-1, lower).squeeze(-1), fp.gather(-1, upper).squeeze(-1)
    span = x1 - x0
    share = torch.where(
        span > 0, (x - x0) / span.clamp_min(torch.finfo(span.dtype).tiny), torch.ones_like(x)
    ).clamp(0, 1)
    return y0 + share * (y1 - y0)
