"""PLE (Tang et al., RecSys 2020) for scenarios: stacked CGC layers, shared and scenario experts."""

from __future__ import annotations

from torch import Tensor, nn

from protorec.models.base import TASKS, ScenarioNet, feature_input, scenario_towers
from protorec.models.config import ModelConfig, PLEConfig
from protorec.models.modules.cgc import CGCLayer


class PLE(nn.Module):
    """Progressive layered extraction: ``num_layers`` CGC layers (see CGCLayer).

    The first layer reads x on the shared and every task stream; the last returns the
    task streams.

    Args:
        in_features: D_in.
        num_scenarios: S.
        num_tasks: T.
        config: expert counts and widths.
        batch_norm: batch-normalise the experts' layers (see StackedExperts).

    Shapes:
        x: (B, D_in), scenario: (B,) int64 in [0, S)  ->  (B, T, D)

    >>> import torch
    >>> ple = PLE(6, num_scenarios=3, num_tasks=1, config=PLEConfig(expert_hidden=[8]))
    >>> ple(torch.randn(4, 6), torch.tensor([0, 1, 2, 1])).shape
    torch.Size([4, 1, 8])
    """

    def __init__(
        self,
        in_features: int,
        num_scenarios: int,
        num_tasks: int,
        config: PLEConfig,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.out_features = config.expert_hidden[-1]
        widths = [in_features] + [self.out_features] * (config.num_layers - 1)
        self.layers = nn.ModuleList(
            CGCLayer(
                width,
                config.num_shared_experts,
                config.num_scenario_experts,
                config.num_task_experts,
                config.expert_hidden,
                num_scenarios,
                num_tasks,
                shared_output=i < config.num_layers - 1,
                batch_norm=batch_norm,
            )
            for i, width in enumerate(widths)
        )

    def forward(self, x: Tensor, scenario: Tensor) -> Tensor:
        shared, tasks = x, x.unsqueeze(1).expand(-1, self.num_tasks, -1)
        for layer in self.layers:
            shared, tasks = layer(shared, tasks, scenario)
        return tasks


class PLENet(ScenarioNet):
    """PLE baseline: FeatureInput -> CGC layers -> per-scenario towers.

    Args:
        sparse_dim: width of the pooled embeddings.
        dense_dim: number of dense features.
        num_scenarios: S.
        config: the model section (``input``, ``ple``, ``tower``).
        tasks: the task heads (one expert stream and gate per task).

    Shapes:
        pooled (B, sparse_dim), dense (B, dense_dim), scenario (B,)  ->  {"click_logit": (B,)}

    >>> import torch
    >>> net = PLENet(8, 2, 3, ModelConfig(name="ple"))
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
        backbone = PLE(
            inputs.out_features, num_scenarios, len(tasks), config.ple, config.batch_norm
        )
        towers = scenario_towers(
            backbone.out_features, num_scenarios, config.tower, tasks, config.batch_norm
        )
        super().__init__(inputs, backbone, towers)
