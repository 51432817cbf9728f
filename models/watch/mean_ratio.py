"""The no-training yardstick: duration x the training days' mean watch ratio.

Not a model: a head every watch-time model must beat to be worth its training. Its
prediction reads only the row's duration; its XAUC is the duration's own ordering power,
its MAE what one constant ratio achieves. It sits in the head registry so that
``protorec compare --models tr,prowtp,mean_ratio`` reports it on the same test rows, with
the same metrics and the same backbone training click.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from protorec.models.watch.head import WatchHead, check_fitted


class MeanRatioHead(WatchHead):
    """``watch^ = duration_ms * r``, r the mean of watch / duration over the training rows.

    Trains nothing: its loss is a zero that touches the (unused) tower, so that DDP sees
    the same parameters on every rank. ``r`` is fitted once from the training days
    (:meth:`fit_statistics`, called by ``refresh_statistics``) and kept in the state dict.

    Args:
        in_features: D.
        num_scenarios: S.
        scale_ms: unused (the prediction's unit is the row's duration); the common contract.

    Shapes:
        rep: (B, D), scenario: (B,)  ->  (B, 1); predict_ms: (B,)

    >>> head = MeanRatioHead(8, 2, scale_ms=1e4)
    >>> head.fit_statistics(np.array([500.0, 3000.0]), np.array([1000.0, 2000.0]))
    >>> head.predict_ms(torch.zeros(2, 1), torch.tensor([1000.0, 4000.0])).tolist()
    [1000.0, 4000.0]
    """

    needs_duration = True
    mean_ratio: Tensor

    def __init__(self, in_features: int, num_scenarios: int, scale_ms: float) -> None:
        super().__init__(in_features, num_scenarios, [], 1, scale_ms)
        self.register_buffer("mean_ratio", torch.tensor(float("nan"), dtype=torch.float64))

    def is_fitted(self) -> bool:
        return not bool(self.mean_ratio.isnan())

    def fit_statistics(self, watch_ms: np.ndarray, duration_ms: np.ndarray) -> None:
        if watch_ms.size == 0:
            raise ValueError("no training row with an observed watch time and duration")
        with torch.no_grad():
            self.mean_ratio.fill_(float(np.mean(watch_ms / duration_ms)))

    def loss_terms(
        self, raw: Tensor, watch_ms: Tensor, duration_ms: Tensor, scenario: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return {"watch": raw.sum() * 0}, {}

    def predict_ms(self, raw: Tensor, duration_ms: Tensor) -> Tensor:
        check_fitted(self)
        return duration_ms * self.mean_ratio.to(duration_ms.dtype)
