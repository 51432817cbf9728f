"""TR: plain regression on watch time ("Traditional Regression", the ProWTP paper's baseline)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from protorec.models.watch.head import WatchHead


class TRHead(WatchHead):
    """One output y^ per row, trained by MSE on ``t = watch_ms / unit``.

    The unit is ``scale_ms``, or the row's duration with ``ratio_target`` (y^ is then the
    watch ratio). MSE makes y^ an estimate of the conditional mean, the minimiser of RMSE.
    The prediction is ``max(y^, 0) * unit`` (watch time is never negative).

    Args:
        in_features: D.
        num_scenarios: S.
        hidden: tower hidden widths.
        scale_ms: target unit.
        ratio_target: regress watch / duration (see :class:`WatchHead`).

    Shapes:
        rep: (B, D), scenario: (B,)  ->  (B, 1); predict_ms: (B,)

    >>> import torch
    >>> head = TRHead(8, 2, [4], scale_ms=1000.0)
    >>> raw = head(torch.randn(3, 8), torch.tensor([0, 1, 1]))
    >>> raw.shape, bool((head.predict_ms(raw, torch.full((3,), 5e3)) >= 0).all())
    (torch.Size([3, 1]), True)
    """

    def __init__(
        self,
        in_features: int,
        num_scenarios: int,
        hidden: list[int],
        scale_ms: float,
        ratio_target: bool = False,
    ) -> None:
        super().__init__(in_features, num_scenarios, hidden, 1, scale_ms, ratio_target)

    def loss_terms(
        self, raw: Tensor, watch_ms: Tensor, duration_ms: Tensor, scenario: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return {"watch": F.mse_loss(raw.squeeze(-1), self.target(watch_ms, duration_ms))}, {}

    def predict_ms(self, raw: Tensor, duration_ms: Tensor) -> Tensor:
        return raw.reshape(-1).clamp_min(0) * self.unit_ms(duration_ms)
