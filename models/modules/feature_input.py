"""A row's input vector: pooled embeddings, dense features through an MLP, scenario embedding."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchrec.modules.mlp import MLP


class FeatureInput(nn.Module):
    """``x = [pooled sparse embeddings, MLP(dense), E_scenario[s]]``, the input of every backbone.

    The scenario is both an input (its embedding here) and the condition of the gates
    and towers downstream.

    Args:
        sparse_dim: width of the pooled embeddings (sum of the tables' widths).
        dense_dim: number of dense features (0: none, no dense MLP).
        num_scenarios: S.
        dense_hidden: widths of the dense MLP (ReLU after every layer).
        scenario_dim: width of the scenario embedding.

    Shapes:
        pooled: (B, sparse_dim), dense: (B, dense_dim), scenario: (B,) int64  ->
        x: (B, out_features), ``out_features = sparse_dim + dense_hidden[-1] + scenario_dim``.

    >>> inputs = FeatureInput(12, 3, num_scenarios=2, dense_hidden=[8], scenario_dim=4)
    >>> inputs(torch.randn(5, 12), torch.randn(5, 3), torch.zeros(5, dtype=torch.long)).shape
    torch.Size([5, 24])
    """

    def __init__(
        self,
        sparse_dim: int,
        dense_dim: int,
        num_scenarios: int,
        dense_hidden: list[int],
        scenario_dim: int,
    ) -> None:
        super().__init__()
        self.dense_mlp = MLP(dense_dim, dense_hidden) if dense_dim > 0 else None
        self.scenario_embedding = nn.Embedding(num_scenarios, scenario_dim)
        dense_out = dense_hidden[-1] if dense_dim > 0 else 0
        self.out_features = sparse_dim + dense_out + scenario_dim

    def forward(self, pooled: Tensor, dense: Tensor, scenario: Tensor) -> Tensor:
        parts = [pooled]
        if self.dense_mlp is not None:
            parts.append(self.dense_mlp(dense))
        parts.append(self.scenario_embedding(scenario))
        return torch.cat(parts, dim=-1)
