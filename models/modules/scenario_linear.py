"""Layers with one set of weights per scenario: the per-scenario towers' building block."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def scenario_matmul(x: Tensor, weight: Tensor, bias: Tensor, scenario: Tensor) -> Tensor:
    """Each row through its own scenario's affine map: ``y_b = x_b W[s_b] + c[s_b]``.

    Every scenario's output is computed and each row keeps its own: S times the FLOPs of
    one layer, but a single dense matmul that fx and export trace; gathering a weight
    matrix per row instead would copy B x D_in x D_out floats.

    Args:
        x: (B, D_in) inputs.
        weight: (S, D_in, D_out) one matrix per scenario.
        bias: (S, D_out) one bias per scenario.
        scenario: (B,) int64 in [0, S).

    Returns:
        (B, D_out).

    >>> w = torch.stack([torch.eye(2), -torch.eye(2)])
    >>> scenario_matmul(torch.ones(2, 2), w, torch.zeros(2, 2), torch.tensor([0, 1]))
    tensor([[ 1.,  1.],
            [-1., -1.]])
    """
    y = torch.einsum("bi,sio->bso", x, weight) + bias
    index = scenario.view(-1, 1, 1).expand(-1, 1, weight.shape[-1])
    return y.gather(1, index).squeeze(1)


class ScenarioLinear(nn.Module):
    """A linear layer with one weight matrix and bias per scenario.

    Initialised like ``nn.Linear`` (uniform in +-1/sqrt(D_in)), independently per scenario.

    Args:
        in_features: D_in.
        out_features: D_out.
        num_scenarios: S.

    Shapes:
        x: (B, D_in), scenario: (B,) int64 in [0, S)  ->  (B, D_out)

    >>> layer = ScenarioLinear(4, 3, num_scenarios=2)
    >>> layer(torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])).shape
    torch.Size([5, 3])
    """

    def __init__(self, in_features: int, out_features: int, num_scenarios: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(
            torch.empty(num_scenarios, in_features, out_features).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(num_scenarios, out_features).uniform_(-bound, bound))

    def forward(self, x: Tensor, scenario: Tensor) -> Tensor:
        return scenario_matmul(x, self.weight, self.bias, scenario)


class ScenarioMLP(nn.Module):
    """An MLP with its own weights per scenario (ReLU between layers): a per-scenario tower.

    Args:
        in_features: D_in.
        layer_sizes: widths of the layers, the last being D_out.
        num_scenarios: S.
        activation_on_last: apply ReLU after the last layer too (False for a logit).
        batch_norm: batch-normalise each layer's output before its ReLU, over the batch
            of every scenario's rows (one BatchNorm per layer, shared by the scenarios).

    Shapes:
        x: (B, D_in), scenario: (B,) int64 in [0, S)  ->  (B, D_out)

    >>> tower = ScenarioMLP(8, [16, 1], num_scenarios=3, activation_on_last=False)
    >>> tower(torch.randn(4, 8), torch.tensor([0, 2, 1, 2])).shape
    torch.Size([4, 1])
    """

    def __init__(
        self,
        in_features: int,
        layer_sizes: list[int],
        num_scenarios: int,
        activation_on_last: bool = True,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        sizes = [in_features, *layer_sizes]
        self.layers = nn.ModuleList(
            ScenarioLinear(i, o, num_scenarios) for i, o in zip(sizes[:-1], sizes[1:])
        )
        self.activation_on_last = activation_on_last
        activated = len(layer_sizes) if activation_on_last else len(layer_sizes) - 1
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(o) if batch_norm and i < activated else nn.Identity()
            for i, o in enumerate(layer_sizes)
        )

    def forward(self, x: Tensor, scenario: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms)):
            x = norm(layer(x, scenario))
            if i < last or self.activation_on_last:
                x = torch.relu(x)
        return x
