"""STAR's layers (Sheng et al., CIKM 2021): star-topology FCN and partitioned normalisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protorec.models.modules.scenario_linear import scenario_matmul


class StarLinear(nn.Module):
    """Star-topology linear layer: ``W_s = W_shared * W_[s]`` (element-wise), ``b_s = b + b_[s]``.

    The shared weights start like ``nn.Linear``; the scenario factors start at one and
    the scenario biases at zero, so at initialisation every scenario computes the shared
    layer, and with one scenario the layer is ``nn.Linear`` with weight ``(W * W_[0])^T``.

    Args:
        in_features: D_in.
        out_features: D_out.
        num_scenarios: S.

    Shapes:
        x: (B, D_in), scenario: (B,) int64 in [0, S)  ->  (B, D_out)

    >>> layer = StarLinear(4, 3, num_scenarios=2)
    >>> x = torch.randn(5, 4)
    >>> s0, s1 = torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long)
    >>> bool(torch.equal(layer(x, s0), layer(x, s1)))  # scenario factors start at one
    True
    """

    def __init__(self, in_features: int, out_features: int, num_scenarios: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        weight = torch.empty(in_features, out_features).uniform_(-bound, bound)
        self.shared_weight = nn.Parameter(weight)
        self.shared_bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.scenario_weight = nn.Parameter(torch.ones(num_scenarios, in_features, out_features))
        self.scenario_bias = nn.Parameter(torch.zeros(num_scenarios, out_features))

    def effective(self) -> tuple[Tensor, Tensor]:
        """Each scenario's weight (S, D_in, D_out) and bias (S, D_out)."""
        return self.shared_weight * self.scenario_weight, self.shared_bias + self.scenario_bias

    def forward(self, x: Tensor, scenario: Tensor) -> Tensor:
        weight, bias = self.effective()
        return scenario_matmul(x, weight, bias, scenario)


class StarMLP(nn.Module):
    """STAR's star-topology fully-connected network: StarLinear layers with ReLU between.

    Args:
        in_features: D_in.
        layer_sizes: widths; the last is D_out.
        num_scenarios: S.
        activation_on_last: ReLU after the last layer too.

    Shapes:
        x: (B, D_in), scenario: (B,) int64  ->  (B, D_out)

    >>> StarMLP(4, [8, 2], num_scenarios=3)(torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])).shape
    torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int,
        layer_sizes: list[int],
        num_scenarios: int,
        activation_on_last: bool = True,
    ) -> None:
        super().__init__()
        sizes = [in_features, *layer_sizes]
        self.layers = nn.ModuleList(
            StarLinear(i, o, num_scenarios) for i, o in zip(sizes[:-1], sizes[1:])
        )
        self.activation_on_last = activation_on_last

    def forward(self, x: Tensor, scenario: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, scenario)
            if i < last or self.activation_on_last:
                x = torch.relu(x)
        return x


class PartitionedNorm(nn.Module):
    """STAR's partitioned normalisation: batch norm with statistics and scale per scenario.

    ``y = (gamma * gamma_[s]) (x - mu_s) / sqrt(var_s + eps) + (beta + beta_[s])``. In
    training, mu_s and var_s are the (biased) statistics of the batch's scenario-s rows,
    and per-scenario running statistics are updated as BatchNorm does (unbiased variance,
    ``momentum``); a scenario with fewer than two rows in the batch leaves its running
    statistics as they are. In eval mode the running statistics are used, so a row's
    output does not depend on the rest of the batch. With one scenario this is
    ``nn.BatchNorm1d`` with weight ``gamma * gamma_[0]`` and bias ``beta + beta_[0]``.

    Args:
        num_features: D.
        num_scenarios: S.
        momentum: weight of the batch in the running statistics.
        eps: variance floor.

    Shapes:
        x: (B, D), scenario: (B,) int64 in [0, S)  ->  (B, D)

    >>> pn = PartitionedNorm(3, num_scenarios=2)
    >>> y = pn(torch.randn(6, 3) * 5 + 2, torch.tensor([0, 0, 0, 1, 1, 1]))
    >>> bool(torch.allclose(y[:3].mean(0), torch.zeros(3), atol=1e-5))
    True
    """

    running_mean: Tensor
    running_var: Tensor

    def __init__(
        self, num_features: int, num_scenarios: int, momentum: float = 0.1, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.num_scenarios, self.momentum, self.eps = num_scenarios, momentum, eps
        self.shared_weight = nn.Parameter(torch.ones(num_features))
        self.shared_bias = nn.Parameter(torch.zeros(num_features))
        self.scenario_weight = nn.Parameter(torch.ones(num_scenarios, num_features))
        self.scenario_bias = nn.Parameter(torch.zeros(num_scenarios, num_features))
        self.register_buffer("running_mean", torch.zeros(num_scenarios, num_features))
        self.register_buffer("running_var", torch.ones(num_scenarios, num_features))

    def forward(self, x: Tensor, scenario: Tensor) -> Tensor:
        if self.training:
            onehot = F.one_hot(scenario, self.num_scenarios).to(x.dtype)  # (B, S)
            count = onehot.sum(0).unsqueeze(-1)  # (S, 1)
            mean = onehot.t() @ x / count.clamp_min(1)
            centred = x - mean[scenario]
            var = onehot.t() @ centred.square() / count.clamp_min(1)
            self._update_running(mean, var, count)
            mean_row, var_row = mean[scenario], var[scenario]
        else:
            mean_row, var_row = self.running_mean[scenario], self.running_var[scenario]
        weight = self.shared_weight * self.scenario_weight[scenario]
        bias = self.shared_bias + self.scenario_bias[scenario]
        return (x - mean_row) * torch.rsqrt(var_row + self.eps) * weight + bias

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        # Only scenarios with an unbiased variance estimate (>= 2 rows) move.
        step = self.momentum * (count >= 2).to(mean.dtype)
        unbiased = var * count / (count - 1).clamp_min(1)
        self.running_mean.mul_(1 - step).add_(step * mean)
        self.running_var.mul_(1 - step).add_(step * unbiased)
