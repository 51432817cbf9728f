"""Experts and gates: batched experts equal separate MLPs; gates per task or (task, scenario)."""

import torch

from protorec.models.modules.experts import ScenarioGate, ScenarioGatedMMoE, StackedExperts


def test_stacked_experts_equal_separate_mlps():
    experts = StackedExperts(6, [8, 4], num_experts=3)
    x = torch.randn(10, 6)
    out = experts(x)
    for e in range(3):
        h = torch.relu(x @ experts.weights[0][e] + experts.biases[0][e])
        h = torch.relu(h @ experts.weights[1][e] + experts.biases[1][e])
        torch.testing.assert_close(out[:, e], h)


def test_gates_sum_to_one_and_each_scenario_has_its_own():
    gate = ScenarioGate(5, num_experts=4, num_scenarios=3, num_tasks=2)
    x, scenario = torch.randn(30, 2, 5), torch.arange(30) % 3
    g = gate(x, scenario)
    torch.testing.assert_close(g.sum(-1), torch.ones(30, 2))
    with torch.no_grad():
        gate.weight[1, 2].normal_()  # task 1, scenario 2
    g2 = gate(x, scenario)
    changed = (g2 - g).abs().amax(-1) > 1e-6  # (B, T)
    assert changed[scenario == 2, 1].all()
    assert not changed[:, 0].any() and not changed[scenario != 2].any()


def test_mmoe_is_the_gate_weighted_sum_of_experts_and_trains_them():
    mmoe = ScenarioGatedMMoE(6, 4, [8], num_scenarios=3, num_tasks=1)
    x, scenario = torch.randn(12, 6), torch.arange(12) % 3
    h = mmoe(x, scenario)
    gates = mmoe.gate(x.unsqueeze(1), scenario)
    expected = (gates.unsqueeze(-1) * mmoe.experts(x).unsqueeze(1)).sum(2)
    torch.testing.assert_close(h, expected)
    h.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mmoe.parameters())


def test_shared_gates_ignore_the_scenario_and_equal_a_task_softmax():
    mmoe = ScenarioGatedMMoE(6, 4, [8], num_scenarios=3, num_tasks=2, scenario_gates=False)
    assert mmoe.gate.weight.shape[1] == 1  # one gate per task, not per (task, scenario)
    with torch.no_grad():
        mmoe.gate.bias.normal_()
    x = torch.randn(12, 6)
    g = mmoe.gate(x.unsqueeze(1).expand(-1, 2, -1), torch.arange(12) % 3)
    logits = torch.einsum("bi,tie->bte", x, mmoe.gate.weight[:, 0]) + mmoe.gate.bias[:, 0]
    torch.testing.assert_close(g, torch.softmax(logits, dim=-1))
    torch.testing.assert_close(mmoe(x, torch.arange(12) % 3), mmoe(x, torch.zeros(12).long()))


def test_batch_norm_makes_training_outputs_invariant_to_the_layer_scale():
    # BatchNorm before the ReLU: scaling a layer's weights and bias changes nothing in
    # training mode (batch statistics); without it the output scales.
    x = torch.randn(32, 6)
    for batch_norm in (True, False):
        torch.manual_seed(0)
        experts = StackedExperts(6, [8, 4], num_experts=3, batch_norm=batch_norm)
        before = experts(x)
        with torch.no_grad():
            experts.weights[0].mul_(10.0)
            experts.biases[0].mul_(10.0)
        assert torch.allclose(experts(x), before, atol=1e-4) == batch_norm
