"""D2Q: duration-deconfounded quantile regression of watch time (Zhan et al., KDD 2022).

Watch time grows with duration, and duration drives exposure: a model regressing raw watch
time learns the duration bias. D2Q splits the rows into G equal-count duration groups and
regresses, within each group, the watch time's quantile ``q = F_g(watch)`` in [0, 1], a
label from which duration's effect is removed; the prediction maps the predicted quantile
back through the row's group, ``watch^ = F_g^{-1}(q^)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from protorec.models.watch.head import WatchHead, check_fitted, interpolate


@dataclass
class D2QConfig:
    """D2Q's duration groups and quantile tables.

    Args:
        num_groups: G, duration groups.
        group_edges_ms: the G - 1 inner group edges in ms, increasing; empty: equal-count
            quantiles of the training durations, fitted once by
            :func:`protorec.pipeline.refresh.refresh_watch_head` and then kept.
        num_quantiles: Q, points of each group's watch-time quantile table (levels
            ``0, 1/(Q-1), ..., 1``); F_g and its inverse interpolate linearly between them.
    """

    num_groups: int = 20
    group_edges_ms: list[float] = field(default_factory=list)
    num_quantiles: int = 101

    def __post_init__(self) -> None:
        if self.num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {self.num_groups}")
        if self.num_quantiles < 2:
            raise ValueError(f"num_quantiles must be >= 2, got {self.num_quantiles}")
        edges = self.group_edges_ms
        if edges and (
            len(edges) != self.num_groups - 1 or any(b <= a for a, b in zip(edges[:-1], edges[1:]))
        ):
            raise ValueError(
                f"group_edges_ms must list num_groups - 1 = {self.num_groups - 1} "
                f"increasing edges, got {edges}"
            )


class D2QHead(WatchHead):
    """One logit per row; ``sigmoid`` of it is the watch-time quantile within the duration group.

    Loss: ``MSE(sigmoid(z), F_g(watch))``. Prediction: ``F_g^{-1}(sigmoid(z))``. A row with
    no duration is predicted in the group of the median training duration. Buffers (in
    the state dict, so in checkpoints): ``group_edges_ms`` (G - 1,), ``quantile_ms`` (G, Q)
    the watch-time quantiles of each group, ``fallback_duration_ms`` (); NaN until fitted.

    Args:
        in_features: D.
        num_scenarios: S.
        hidden: tower hidden widths.
        scale_ms: unused by the loss (the label is a quantile); kept for the common contract.
        config: groups and tables.

    Shapes:
        rep: (B, D), scenario: (B,)  ->  (B, 1); predict_ms: raw (B, 1), duration (B,) -> (B,)

    >>> head = D2QHead(8, 1, [4], 1e3, D2QConfig(num_groups=2, num_quantiles=3))
    >>> head.fit_statistics(np.array([0.0, 10.0, 20.0, 0.0, 100.0, 200.0]),
    ...                     np.array([1.0, 1.0, 1.0, 9.0, 9.0, 9.0]))
    >>> head.predict_ms(torch.zeros(2, 1), torch.tensor([1.0, 9.0])).tolist()
    [10.0, 100.0]
    """

    needs_duration = True

    group_edges_ms: Tensor
    quantile_ms: Tensor
    fallback_duration_ms: Tensor
    levels: Tensor

    def __init__(
        self,
        in_features: int,
        num_scenarios: int,
        hidden: list[int],
        scale_ms: float,
        config: D2QConfig,
    ) -> None:
        super().__init__(in_features, num_scenarios, hidden, 1, scale_ms)
        self.config = config
        g, q = config.num_groups, config.num_quantiles
        nan = float("nan")
        self.register_buffer("group_edges_ms", torch.full((g - 1,), nan))
        self.register_buffer("quantile_ms", torch.full((g, q), nan))
        self.register_buffer("fallback_duration_ms", torch.tensor(nan))
        self.register_buffer("levels", torch.linspace(0, 1, q), persistent=False)

    def is_fitted(self) -> bool:
        return not bool(self.quantile_ms.isnan().any())

    def fit_statistics(self, watch_ms: np.ndarray, duration_ms: np.ndarray) -> None:
        cfg = self.config
        levels = self.levels.cpu().numpy().astype(np.float64)
        if cfg.group_edges_ms:
            edges = np.asarray(cfg.group_edges_ms, dtype=np.float64)
        else:
            edges = np.quantile(duration_ms, np.arange(1, cfg.num_groups) / cfg.num_groups)
        group = np.searchsorted(edges, duration_ms, side="right")
        overall = np.quantile(watch_ms, levels)
        # A group without rows (tied duration quantiles, or edges past the data) gets the
        # overall table: its rows, if any come later, are treated as an average group.
        table = np.stack(
            [
                np.quantile(watch_ms[group == g], levels) if (group == g).any() else overall
                for g in range(cfg.num_groups)
            ]
        )
        with torch.no_grad():
            self.group_edges_ms.copy_(torch.as_tensor(edges))
            self.quantile_ms.copy_(torch.as_tensor(table))
            self.fallback_duration_ms.fill_(float(np.median(duration_ms)))

    def _tables(self, duration_ms: Tensor) -> Tensor:
        """Each row's group quantile table (N, Q) from its duration (N,)."""
        duration = torch.where(duration_ms.isnan(), self.fallback_duration_ms, duration_ms)
        group = torch.searchsorted(
            self.group_edges_ms, duration.to(self.group_edges_ms.dtype), right=True
        )
        return self.quantile_ms[group]

    def loss_terms(
        self, raw: Tensor, watch_ms: Tensor, duration_ms: Tensor, scenario: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        check_fitted(self)
        table = self._tables(duration_ms)
        label = interpolate(watch_ms.to(table.dtype), table, self.levels.expand(table.shape[0], -1))
        return {"watch": F.mse_loss(torch.sigmoid(raw.squeeze(-1)), label.to(raw.dtype))}, {}

    def predict_ms(self, raw: Tensor, duration_ms: Tensor) -> Tensor:
        check_fitted(self)
        table = self._tables(duration_ms)
        q = torch.sigmoid(raw.reshape(-1)).to(table.dtype)
        return interpolate(q, self.levels.expand(table.shape[0], -1), table)
