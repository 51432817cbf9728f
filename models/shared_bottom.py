"""SharedBottom (Caruana, "Multitask Learning", 1997): one MLP for all, per-scenario towers."""

from __future__ import annotations

from torch import Tensor, nn
from torchrec.modules.mlp import MLP

from protorec.models.base import TASKS, ScenarioNet, feature_input, scenario_towers
from protorec.models.config import ModelConfig


class SharedBottom(nn.Module):
    """One MLP shared by every scenario and task (ReLU after every layer).

    Args:
        in_features: D_in.
        layer_sizes: widths; the last is D.
        num_tasks: T (every task reads the same representation).
        batch_norm: Linear -> BatchNorm -> ReLU in every layer (``model.batch_norm``).

    Shapes:
        x: (B, D_in), scenario: (B,) (unused)  ->  (B, T, D)

    >>> import torch
    >>> SharedBottom(6, [8, 4], num_tasks=2)(torch.randn(3, 6), torch.zeros(3)).shape
    torch.Size([3, 2, 4])
    """

    def __init__(
        self, in_features: int, layer_sizes: list[int], num_tasks: int, batch_norm: bool = False
    ) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.out_features = layer_sizes[-1]
        self.mlp: nn.Module
        if batch_norm:  # torchrec's MLP has no normalisation layer
            sizes = [in_features, *layer_sizes]
            self.mlp = nn.Sequential(
                *(
                    module
                    for i, o in zip(sizes[:-1], sizes[1:])
                    for module in (nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU())
                )
            )
        else:
            self.mlp = MLP(in_features, layer_sizes)

    def forward(self, x: Tensor, scenario: Tensor) -> Tensor:
        return self.mlp(x).unsqueeze(1).expand(-1, self.num_tasks, -1)


class SharedBottomNet(ScenarioNet):
    """SharedBottom baseline: FeatureInput -> shared MLP -> per-scenario towers.

    Args:
        sparse_dim: width of the pooled embeddings.
        dense_dim: number of dense features.
        num_scenarios: S.
        config: the model section (``input``, ``shared_bottom``, ``tower``).
        tasks: the task heads.

    Shapes:
        pooled (B, sparse_dim), dense (B, dense_dim), scenario (B,)  ->  {"click_logit": (B,)}

    >>> import torch
    >>> net = SharedBottomNet(8, 2, 3, ModelConfig(name="shared_bottom"))
    >>> net(torch.randn(4, 8), torch.randn(4, 2), torch.tensor([0, 1, 2, 0]))["click_logit"].shape
    torch.Size([4])
    """

    def __init__(
        self,
        sparse_dim: int,
        dense_dim: int,
        num_scenarios: int,
        config: ModelConfig,
        tasks: tuple[str, ...] = TASKS,
    ) -> None:
        inputs = feature_input(sparse_dim, dense_dim, num_scenarios, config.input)
        backbone = SharedBottom(
            inputs.out_features, config.shared_bottom.hidden, len(tasks), config.batch_norm
        )
        towers = scenario_towers(
            backbone.out_features, num_scenarios, config.tower, tasks, config.batch_norm
        )
        super().__init__(inputs, backbone, towers)
