"""STAR (Sheng et al., CIKM 2021): star-topology FCN, partitioned normalisation, auxiliary net."""

from __future__ import annotations

from torch import Tensor, nn
from torchrec.modules.mlp import MLP

from protorec.models.base import TASKS, ScenarioNet, feature_input
from protorec.models.config import ModelConfig, STARConfig
from protorec.models.modules.star_layers import PartitionedNorm, StarMLP


class StarBackbone(nn.Module):
    """Partitioned normalisation of x, then star-topology layers (shared x scenario weights).

    Args:
        in_features: D_in.
        num_scenarios: S.
        num_tasks: T (every task reads the same representation).
        config: widths and normalisation settings.

    Shapes:
        x: (B, D_in), scenario: (B,) int64 in [0, S)  ->  (B, T, D)

    >>> import torch
    >>> star = StarBackbone(6, 2, 1, STARConfig(hidden=[8]))
    >>> star(torch.randn(4, 6), torch.tensor([0, 1, 1, 0])).shape
    torch.Size([4, 1, 8])
    """

    def __init__(
        self, in_features: int, num_scenarios: int, num_tasks: int, config: STARConfig
    ) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.out_features = config.hidden[-1]
        self.norm = PartitionedNorm(
            in_features, num_scenarios, momentum=config.norm_momentum, eps=config.norm_eps
        )
        self.fcn = StarMLP(in_features, config.hidden, num_scenarios)

    def forward(self, x: Tensor, scenario: Tensor) -> Tensor:
        rep = self.fcn(self.norm(x, scenario), scenario)
        return rep.unsqueeze(1).expand(-1, self.num_tasks, -1)


class StarTower(nn.Module):
    """A task's STAR head: star-topology layers to one logit plus the auxiliary network's.

    STAR's auxiliary network reads the scenario indicator and other scenario-describing
    features; the data contract has none of the latter, so it reads a scenario embedding
    alone and learns a per-scenario logit offset through a small MLP.

    Args:
        in_features: D.
        num_scenarios: S.
        hidden: hidden widths of the star layers.
        aux_hidden: hidden widths of the auxiliary network.
        scenario_dim: width of the auxiliary network's scenario embedding.

    Shapes:
        rep: (B, D), scenario: (B,) int64  ->  (B, 1)

    >>> import torch
    >>> StarTower(8, 2, [4], [4], 3)(torch.randn(5, 8), torch.tensor([0, 1, 1, 0, 1])).shape
    torch.Size([5, 1])
    """

    def __init__(
        self,
        in_features: int,
        num_scenarios: int,
        hidden: list[int],
        aux_hidden: list[int],
        scenario_dim: int,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.main = StarMLP(in_features, [*hidden, 1], num_scenarios, activation_on_last=False)
        self.aux_embedding = nn.Embedding(num_scenarios, scenario_dim)
        self.aux = MLP(scenario_dim, [*aux_hidden, 1], activation_on_last=False)

    def forward(self, rep: Tensor, scenario: Tensor) -> Tensor:
        return self.main(rep, scenario) + self.aux(self.aux_embedding(scenario))


class StarNet(ScenarioNet):
    """STAR baseline: FeatureInput -> partitioned norm -> star FCN -> star towers + auxiliary.

    Args:
        sparse_dim: width of the pooled embeddings.
        dense_dim: number of dense features.
        num_scenarios: S.
        config: the model section (``input``, ``star``, ``tower`` widths for the star towers).
        tasks: the task heads.

    Shapes:
        pooled (B, sparse_dim), dense (B, dense_dim), scenario (B,)  ->  {"click_logit": (B,)}

    >>> import torch
    >>> net = StarNet(8, 2, 3, ModelConfig(name="star"))
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
        backbone = StarBackbone(inputs.out_features, num_scenarios, len(tasks), config.star)
        towers = nn.ModuleDict(
            {
                task: StarTower(
                    backbone.out_features,
                    num_scenarios,
                    config.tower.hidden,
                    config.star.aux_hidden,
                    config.input.scenario_dim,
                )
                for task in tasks
            }
        )
        super().__init__(inputs, backbone, towers)
