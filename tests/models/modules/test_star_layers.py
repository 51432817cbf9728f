"""STAR layers: with one scenario, nn.Linear and nn.BatchNorm1d; with several, per scenario."""

import torch
from torch import nn

from protorec.models.modules.star_layers import PartitionedNorm, StarLinear, StarMLP


def test_star_linear_with_one_scenario_is_a_linear_layer():
    star = StarLinear(5, 3, num_scenarios=1)
    with torch.no_grad():
        star.scenario_weight.uniform_(0.5, 1.5)
        star.scenario_bias.normal_()
    linear = nn.Linear(5, 3)
    with torch.no_grad():
        linear.weight.copy_((star.shared_weight * star.scenario_weight[0]).t())
        linear.bias.copy_(star.shared_bias + star.scenario_bias[0])
    x = torch.randn(8, 5)
    torch.testing.assert_close(star(x, torch.zeros(8, dtype=torch.long)), linear(x))


def test_star_weights_are_shared_times_scenario():
    mlp = StarMLP(4, [6, 2], num_scenarios=2, activation_on_last=False)
    x, scenario = torch.randn(10, 4), torch.arange(10) % 2
    y = mlp(x, scenario)
    mlp.zero_grad()
    y.sum().backward()
    layer = mlp.layers[0]
    assert layer.shared_weight.grad.abs().sum() > 0
    assert (layer.scenario_weight.grad.abs().sum((1, 2)) > 0).all()


def test_partitioned_norm_with_one_scenario_is_batchnorm():
    pn = PartitionedNorm(4, num_scenarios=1, momentum=0.2, eps=1e-3)
    with torch.no_grad():
        pn.shared_weight.uniform_(0.5, 2)
        pn.scenario_weight.uniform_(0.5, 2)
        pn.shared_bias.normal_()
        pn.scenario_bias.normal_()
    bn = nn.BatchNorm1d(4, momentum=0.2, eps=1e-3)
    with torch.no_grad():
        bn.weight.copy_(pn.shared_weight * pn.scenario_weight[0])
        bn.bias.copy_(pn.shared_bias + pn.scenario_bias[0])
    zeros = torch.zeros(16, dtype=torch.long)
    for _ in range(3):
        x = torch.randn(16, 4) * 3 + 1
        torch.testing.assert_close(pn(x, zeros), bn(x))
    torch.testing.assert_close(pn.running_mean[0], bn.running_mean)
    torch.testing.assert_close(pn.running_var[0], bn.running_var)
    pn.eval()
    bn.eval()
    x = torch.randn(5, 4)
    torch.testing.assert_close(pn(x, zeros[:5]), bn(x))


def test_partitioned_norm_uses_each_scenarios_own_statistics():
    pn = PartitionedNorm(3, num_scenarios=3)
    x, scenario = torch.randn(12, 3), torch.tensor([0] * 5 + [1] * 6 + [2])
    y = pn(x, scenario)
    shifted = x.clone()
    shifted[scenario == 1] = shifted[scenario == 1] * 10 + 7
    y2 = pn(shifted, scenario)
    torch.testing.assert_close(y2[scenario == 0], y[scenario == 0])
    torch.testing.assert_close(y2[scenario == 1], y[scenario == 1], rtol=1e-4, atol=1e-4)
    # Scenario 2 had one row per batch: no unbiased variance, running statistics untouched.
    torch.testing.assert_close(pn.running_mean[2], torch.zeros(3))
    torch.testing.assert_close(pn.running_var[2], torch.ones(3))
    assert not torch.allclose(pn.running_mean[0], torch.zeros(3))
