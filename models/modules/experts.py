"""Expert networks and scenario-conditioned gates: the parts of MMoE, PLE and DistProto."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class StackedExperts(nn.Module):
    """E expert MLPs of the same widths, run as one batched matmul per layer (ReLU after each).

    Written by hand because torchrec's ``MLP`` runs one network: E small MLPs in a Python
    loop would cost E kernel launches per layer; stacked weights cost one einsum.
    Each expert is initialised like ``nn.Linear``.

    Args:
        in_features: D_in.
        layer_sizes: widths of every expert's layers; the last is D.
        num_experts: E.
        batch_norm: batch-normalise every layer's E x D_l outputs before its ReLU
            (``model.batch_norm``).

    Shapes:
        x: (..., D_in)  ->  (..., E, D)

    >>> experts = StackedExperts(6, [8, 4], num_experts=3)
    >>> experts(torch.randn(5, 6)).shape, experts(torch.randn(5, 2, 6)).shape
    (torch.Size([5, 3, 4]), torch.Size([5, 2, 3, 4]))
    """

    def __init__(
        self, in_features: int, layer_sizes: list[int], num_experts: int, batch_norm: bool = False
    ) -> None:
        super().__init__()
        sizes = [in_features, *layer_sizes]
        self.num_experts = num_experts
        self.out_features = sizes[-1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, o in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(i)
            weight = torch.empty(num_experts, i, o).uniform_(-bound, bound)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.empty(num_experts, o).uniform_(-bound, bound)))
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(num_experts * o) if batch_norm else nn.Identity() for o in sizes[1:]
        )

    def _normalised(self, y: Tensor, layer: int) -> Tensor:
        # Each (expert, unit) is one channel; leading dims (rows, tasks) are the batch.
        shape = y.shape
        return self.norms[layer](y.reshape(-1, shape[-2] * shape[-1])).reshape(shape)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.einsum("...i,eio->...eo", x, self.weights[0]) + self.biases[0]
        y = torch.relu(self._normalised(y, 0))
        for layer, (weight, bias) in enumerate(zip(self.weights[1:], self.biases[1:]), 1):
            y = torch.einsum("...ei,eio->...eo", y, weight) + bias
            y = torch.relu(self._normalised(y, layer))
        return y


class ScenarioGate(nn.Module):
    """Softmax gates over E experts, one linear gate per (task, scenario) pair.

    MMoE's gate made scenario-conditioned as in DistProto (seeds/000, 3.1):
    ``g_t(x, s) = softmax(W_g[t, s] x + c[t, s])``. With ``num_scenarios=1`` every row uses
    its task's one gate (MMoE as published), whatever its scenario.

    Args:
        in_features: D_in, the width of the gate input phi(x).
        num_experts: E.
        num_scenarios: S, or 1 for one gate per task shared by every scenario.
        num_tasks: T.

    Shapes:
        x: (B, T, D_in) (each task's gate input), scenario: (B,) int64  ->  (B, T, E),
        rows summing to one.

    >>> gate = ScenarioGate(4, num_experts=3, num_scenarios=2, num_tasks=1)
    >>> g = gate(torch.randn(5, 1, 4), torch.tensor([0, 1, 0, 1, 1]))
    >>> g.shape, bool(torch.allclose(g.sum(-1), torch.ones(5, 1)))
    (torch.Size([5, 1, 3]), True)
    """

    def __init__(
        self, in_features: int, num_experts: int, num_scenarios: int, num_tasks: int
    ) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.num_experts, self.num_tasks = num_experts, num_tasks
        self.shared = num_scenarios == 1  # a Python flag, not a shape read: fx traces it
        self.weight = nn.Parameter(
            torch.empty(num_tasks, num_scenarios, in_features, num_experts).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.zeros(num_tasks, num_scenarios, num_experts))

    def forward(self, x: Tensor, scenario: Tensor) -> Tensor:
        if self.shared:  # one gate per task: nothing to pick per row
            shared = torch.einsum("bti,tie->bte", x, self.weight[:, 0]) + self.bias[:, 0]
            return torch.softmax(shared, dim=-1)
        # Every scenario's gate logits, then each row's own (see scenario_matmul).
        logits = torch.einsum("bti,tsie->btse", x, self.weight) + self.bias
        index = scenario.view(-1, 1, 1, 1).expand(-1, self.num_tasks, 1, self.num_experts)
        return torch.softmax(logits.gather(2, index).squeeze(2), dim=-1)


class ScenarioGatedMMoE(nn.Module):
    """MMoE (Ma et al., KDD 2018) with gates per task, optionally per scenario (DistProto).

    ``h_t = sum_e g_{t,e}(x, s) f_e(x)`` with ``g_t(x, s) = softmax(W_g[t, s] x)``: the
    experts are shared by every task and scenario; each (task, scenario) pair mixes them
    with its own gate, reading the input x (phi = identity). Without ``scenario_gates``
    each task has one gate, ``W_g[t]``, for every scenario.

    Args:
        in_features: D_in.
        num_experts: E.
        expert_sizes: widths of each expert MLP; the last is D.
        num_scenarios: S.
        num_tasks: T.
        scenario_gates: one gate per (task, scenario) rather than per task.
        batch_norm: batch-normalise the experts' layers (see StackedExperts).

    Shapes:
        x: (B, D_in), scenario: (B,) int64 in [0, S)  ->  h: (B, T, D)

    >>> mmoe = ScenarioGatedMMoE(6, 4, [8], num_scenarios=3, num_tasks=2)
    >>> mmoe(torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])).shape
    torch.Size([5, 2, 8])
    """

    def __init__(
        self,
        in_features: int,
        num_experts: int,
        expert_sizes: list[int],
        num_scenarios: int,
        num_tasks: int,
        scenario_gates: bool = True,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.out_features = expert_sizes[-1]
        self.experts = StackedExperts(in_features, expert_sizes, num_experts, batch_norm)
        gates = num_scenarios if scenario_gates else 1
        self.gate = ScenarioGate(in_features, num_experts, gates, num_tasks)

    def forward(self, x: Tensor, scenario: Tensor) -> Tensor:
        experts = self.experts(x)  # (B, E, D)
        gates = self.gate(x.unsqueeze(1).expand(-1, self.num_tasks, -1), scenario)  # (B, T, E)
        return torch.einsum("bte,bed->btd", gates, experts)
