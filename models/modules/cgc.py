"""PLE's Customized Gate Control layer, with expert groups per scenario as well as per task."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from protorec.models.modules.experts import ScenarioGate, StackedExperts


class CGCLayer(nn.Module):
    """One CGC layer (Tang et al., RecSys 2020, "Progressive Layered Extraction").

    Expert groups: shared (every row), per scenario (a row uses its scenario's) and per
    task (PLE's task-specific experts). Task t of a row in scenario s mixes the shared,
    scenario-s and task-t experts with its gate g[t, s]; scenario and task experts read
    that task's stream. Between layers a shared gate (per scenario) mixes every expert of
    the row into the next layer's shared stream. All scenarios' and tasks' experts run on
    every row (one batched matmul each, see ``scenario_matmul``); each row keeps its own.

    Args:
        in_features: D_in of both streams.
        num_shared_experts, num_scenario_experts, num_task_experts: group sizes
            (0 turns a group off).
        expert_sizes: widths of each expert MLP; the last is D.
        num_scenarios: S.
        num_tasks: T.
        shared_output: compute the next layer's shared stream (False for the last layer).
        batch_norm: batch-normalise the experts' layers (see StackedExperts).

    Shapes:
        shared_in: (B, D_in), task_in: (B, T, D_in), scenario: (B,) int64  ->
        (shared_out (B, D) or None, task_out (B, T, D))

    >>> layer = CGCLayer(6, 2, 1, 1, [8], num_scenarios=3, num_tasks=2, shared_output=True)
    >>> x = torch.randn(4, 6)
    >>> shared, tasks = layer(x, x.unsqueeze(1).expand(-1, 2, -1), torch.tensor([0, 1, 2, 0]))
    >>> shared.shape, tasks.shape
    (torch.Size([4, 8]), torch.Size([4, 2, 8]))
    """

    def __init__(
        self,
        in_features: int,
        num_shared_experts: int,
        num_scenario_experts: int,
        num_task_experts: int,
        expert_sizes: list[int],
        num_scenarios: int,
        num_tasks: int,
        shared_output: bool,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.num_scenario_experts = num_scenario_experts
        self.num_task_experts = num_task_experts
        self.out_features = expert_sizes[-1]

        def group(count: int) -> StackedExperts | None:
            return StackedExperts(in_features, expert_sizes, count, batch_norm) if count else None

        self.shared_experts = group(num_shared_experts)
        self.scenario_experts = group(num_scenarios * num_scenario_experts)
        self.task_experts = group(num_tasks * num_task_experts)
        self.task_gate = ScenarioGate(
            in_features,
            num_shared_experts + num_scenario_experts + num_task_experts,
            num_scenarios,
            num_tasks,
        )
        self.shared_gate = (
            ScenarioGate(
                in_features,
                num_shared_experts + num_tasks * (num_scenario_experts + num_task_experts),
                num_scenarios,
                1,
            )
            if shared_output
            else None
        )

    def forward(
        self, shared_in: Tensor, task_in: Tensor, scenario: Tensor
    ) -> tuple[Tensor | None, Tensor]:
        T, D = self.num_tasks, self.out_features
        per_task = []  # (B, T, n, D) expert outputs each task's gate mixes
        everything = []  # (B, n, D) every expert output of the row, for the shared gate
        if self.shared_experts is not None:
            shared = self.shared_experts(shared_in)
            per_task.append(shared.unsqueeze(1).expand(-1, T, -1, -1))
            everything.append(shared)
        if self.scenario_experts is not None:
            n = self.num_scenario_experts
            scen = self.scenario_experts(task_in)  # (B, T, S * n, D)
            scen = scen.view(scen.shape[0], T, -1, n, D)
            index = scenario.view(-1, 1, 1, 1, 1).expand(-1, T, 1, n, D)
            scen = scen.gather(2, index).squeeze(2)  # (B, T, n, D): the row's scenario
            per_task.append(scen)
            everything.append(scen.flatten(1, 2))
        if self.task_experts is not None:
            n = self.num_task_experts
            task = self.task_experts(task_in)  # (B, T, T * n, D): every task's on every stream
            task = task.view(task.shape[0], T, T, n, D)
            task = torch.diagonal(task, dim1=1, dim2=2).permute(0, 3, 1, 2)  # task t on stream t
            per_task.append(task)
            everything.append(task.flatten(1, 2))
        gates = self.task_gate(task_in, scenario)  # (B, T, n)
        task_out = torch.einsum("btn,btnd->btd", gates, torch.cat(per_task, dim=2))
        if self.shared_gate is None:
            return None, task_out
        shared_gates = self.shared_gate(shared_in.unsqueeze(1), scenario).squeeze(1)
        shared_out = torch.einsum("bn,bnd->bd", shared_gates, torch.cat(everything, dim=1))
        return shared_out, task_out
