"""WLR: weighted logistic regression, odds = watch time (Covington et al., RecSys 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from protorec.models.watch.head import WatchHead

#: Largest logit exponentiated at prediction (e^30 units of scale_ms is far past any video).
_MAX_LOGIT = 30.0


class WLRHead(WatchHead):
    """A logit z per row whose odds ``e^z`` estimate the watch time in units of ``scale_ms``.

    YouTube's WLR weighs a clicked impression by its watch time and an unclicked one by 1,
    so that the learnt odds approximate the expected watch time. Here every observed row
    counts both ways, a positive of weight ``t = watch_ms / scale_ms`` and a negative of
    weight 1: the per-row loss ``t softplus(-z) + softplus(z)`` is minimised at
    ``sigmoid(z) = t / (1 + t)``, i.e. ``e^z = E[t | x]`` exactly (not only for a small
    click rate). Prediction: ``e^z * scale_ms``.

    Args:
        in_features: D.
        num_scenarios: S.
        hidden: tower hidden widths.
        scale_ms: the unit of the odds.

    Shapes:
        rep: (B, D), scenario: (B,)  ->  (B, 1); predict_ms: (B,)

    >>> head = WLRHead(8, 2, [4], scale_ms=1000.0)
    >>> head.predict_ms(torch.zeros(2, 1), torch.full((2,), 5e3)).tolist()
    [1000.0, 1000.0]
    """

    def __init__(
        self, in_features: int, num_scenarios: int, hidden: list[int], scale_ms: float
    ) -> None:
        super().__init__(in_features, num_scenarios, hidden, 1, scale_ms)

    def loss_terms(
        self, raw: Tensor, watch_ms: Tensor, duration_ms: Tensor, scenario: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        z, t = raw.squeeze(-1), self.target(watch_ms, duration_ms)
        return {"watch": (t * F.softplus(-z) + F.softplus(z)).mean()}, {}

    def predict_ms(self, raw: Tensor, duration_ms: Tensor) -> Tensor:
        return torch.exp(raw.reshape(-1).clamp(max=_MAX_LOGIT)) * self.scale_ms
