"""STAR: with one scenario the backbone and tower are a plain shared MLP with batch norm."""

import torch
from torch import nn

from protorec.models.star import StarNet


def _shared_mlp(net: StarNet) -> nn.Sequential:
    """The nn.Sequential STAR computes with one scenario: BN, then Linear/ReLU with W * W_[0]."""
    norm = net.backbone.norm
    bn = nn.BatchNorm1d(norm.shared_weight.shape[0], momentum=norm.momentum, eps=norm.eps)
    with torch.no_grad():
        bn.weight.copy_(norm.shared_weight * norm.scenario_weight[0])
        bn.bias.copy_(norm.shared_bias + norm.scenario_bias[0])
    layers: list[nn.Module] = [bn]
    star_layers = [*net.backbone.fcn.layers, *net.towers["click"].main.layers]
    for i, star in enumerate(star_layers):
        weight, bias = star.effective()
        linear = nn.Linear(*weight.shape[1:])
        with torch.no_grad():
            linear.weight.copy_(weight[0].t())
            linear.bias.copy_(bias[0])
        layers.append(linear)
        if i < len(star_layers) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def test_star_with_one_scenario_is_a_shared_mlp(tiny_config):
    torch.manual_seed(0)
    net = StarNet(16, 2, 1, tiny_config("star", num_scenarios=1).model)
    with torch.no_grad():  # scenario factors away from their initial ones
        for name, p in net.named_parameters():
            if "scenario_weight" in name:
                p.uniform_(0.5, 1.5)
            elif "scenario_bias" in name:
                p.normal_(0, 0.1)
    mlp = _shared_mlp(net)
    zeros = torch.zeros(32, dtype=torch.long)
    for _ in range(2):  # training mode: batch statistics, running statistics updated alike
        x = torch.randn(32, net.inputs.out_features)
        star = net.towers["click"].main(net.backbone(x, zeros)[:, 0], zeros)
        torch.testing.assert_close(star, mlp(x))
    net.eval()
    mlp.eval()
    x = torch.randn(7, net.inputs.out_features)
    star = net.towers["click"].main(net.backbone(x, zeros[:7])[:, 0], zeros[:7])
    torch.testing.assert_close(star, mlp(x))


def test_auxiliary_network_adds_a_per_scenario_offset(tiny_config):
    net = StarNet(16, 2, 3, tiny_config("star").model)
    tower = net.towers["click"]
    rep, scenario = torch.randn(9, 16), torch.arange(9) % 3
    offset = tower(rep, scenario) - tower.main(rep, scenario)
    for s in range(3):
        rows = offset[scenario == s]
        torch.testing.assert_close(rows, rows[:1].expand_as(rows))
