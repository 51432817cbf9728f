"""Per-scenario layers: each row goes through its own scenario's weights, and only those."""

import torch

from protorec.models.modules.scenario_linear import ScenarioLinear, ScenarioMLP


def test_scenario_linear_matches_one_linear_per_scenario():
    layer = ScenarioLinear(5, 3, num_scenarios=4)
    x, scenario = torch.randn(20, 5), torch.randint(4, (20,))
    expected = torch.stack(
        [x[b] @ layer.weight[s] + layer.bias[s] for b, s in enumerate(scenario.tolist())]
    )
    torch.testing.assert_close(layer(x, scenario), expected)


def test_scenario_mlp_rows_ignore_other_scenarios_weights():
    tower = ScenarioMLP(5, [8, 1], num_scenarios=3, activation_on_last=False)
    x, scenario = torch.randn(30, 5), torch.arange(30) % 3
    before = tower(x, scenario)
    with torch.no_grad():
        for layer in tower.layers:
            layer.weight[2].normal_()
            layer.bias[2].normal_()
    after = tower(x, scenario)
    keep = scenario != 2
    torch.testing.assert_close(after[keep], before[keep])
    assert not torch.allclose(after[~keep], before[~keep])


def test_scenario_mlp_relu_only_between_layers():
    tower = ScenarioMLP(4, [6, 2], num_scenarios=2, activation_on_last=False)
    out = tower(torch.randn(200, 4), torch.randint(2, (200,)))
    assert (out < 0).any()  # a logit layer, not clipped at zero
    relu_tower = ScenarioMLP(4, [6, 2], num_scenarios=2, activation_on_last=True)
    assert (relu_tower(torch.randn(200, 4), torch.randint(2, (200,))) >= 0).all()


def test_batch_norm_normalises_hidden_layers_and_leaves_the_logit_alone():
    tower = ScenarioMLP(5, [8, 1], num_scenarios=3, activation_on_last=False, batch_norm=True)
    assert isinstance(tower.norms[0], torch.nn.BatchNorm1d)
    assert isinstance(tower.norms[1], torch.nn.Identity)  # a logit is not normalised
    x, scenario = torch.randn(30, 5), torch.arange(30) % 3
    before = tower(x, scenario)
    with torch.no_grad():  # batch statistics absorb the hidden layer's scale
        tower.layers[0].weight.mul_(10.0)
        tower.layers[0].bias.mul_(10.0)
    torch.testing.assert_close(tower(x, scenario), before, atol=1e-4, rtol=1e-4)
