"""MMoE (Ma et al., KDD 2018) for scenarios: shared experts, gates per task (or scenario)."""

from __future__ import annotations

from protorec.models.base import TASKS, ScenarioNet, feature_input, scenario_towers
from protorec.models.config import ModelConfig
from protorec.models.modules.experts import ScenarioGatedMMoE


class MMoENet(ScenarioNet):
    """MMoE baseline: FeatureInput -> E experts mixed by ``softmax(W_g[t] x)`` -> towers.

    Args:
        sparse_dim: width of the pooled embeddings.
        dense_dim: number of dense features.
        num_scenarios: S.
        config: the model section (``input``, ``mmoe``, ``tower``).
        tasks: the task heads (one gate per task, and per scenario with
            ``model.mmoe.scenario_gates``).

    Shapes:
        pooled (B, sparse_dim), dense (B, dense_dim), scenario (B,)  ->  {"click_logit": (B,)}

    >>> import torch
    >>> net = MMoENet(8, 2, 3, ModelConfig(name="mmoe"))
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
        backbone = ScenarioGatedMMoE(
            inputs.out_features,
            config.mmoe.num_experts,
            config.mmoe.expert_hidden,
            num_scenarios,
            len(tasks),
            scenario_gates=config.mmoe.scenario_gates,
            batch_norm=config.batch_norm,
        )
        towers = scenario_towers(
            backbone.out_features, num_scenarios, config.tower, tasks, config.batch_norm
        )
        super().__init__(inputs, backbone, towers)
