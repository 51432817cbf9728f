"""PLE's CGC layer: shapes for several tasks, and a row never reads another scenario's experts."""

import torch

from protorec.models.modules.cgc import CGCLayer


def _layer(shared_output: bool) -> CGCLayer:
    return CGCLayer(6, 2, 2, 1, [8], num_scenarios=3, num_tasks=2, shared_output=shared_output)


def test_shapes_with_task_experts_and_two_tasks():
    x = torch.randn(5, 6)
    shared, tasks = _layer(True)(x, x.unsqueeze(1).expand(-1, 2, -1), torch.arange(5) % 3)
    assert shared.shape == (5, 8) and tasks.shape == (5, 2, 8)
    shared, tasks = _layer(False)(x, x.unsqueeze(1).expand(-1, 2, -1), torch.arange(5) % 3)
    assert shared is None and tasks.shape == (5, 2, 8)


def test_rows_ignore_other_scenarios_experts_on_every_output():
    layer = _layer(True)
    x, scenario = torch.randn(30, 6), torch.arange(30) % 3
    streams = x.unsqueeze(1).expand(-1, 2, -1)
    shared0, tasks0 = layer(x, streams, scenario)
    n = layer.num_scenario_experts
    with torch.no_grad():  # experts of scenario 1 are slots [n, 2n) of the stacked group
        for w in layer.scenario_experts.weights:
            w[n : 2 * n].normal_()
    shared1, tasks1 = layer(x, streams, scenario)
    keep = scenario != 1
    torch.testing.assert_close(tasks1[keep], tasks0[keep])
    torch.testing.assert_close(shared1[keep], shared0[keep])
    assert not torch.allclose(tasks1[~keep], tasks0[~keep])


def test_task_experts_feed_only_their_task():
    layer = _layer(False)
    x, scenario = torch.randn(12, 6), torch.arange(12) % 3
    streams = x.unsqueeze(1).expand(-1, 2, -1)
    _, before = layer(x, streams, scenario)
    with torch.no_grad():  # task 1's experts: slot 1 of the (T * 1) group
        for w in layer.task_experts.weights:
            w[1].normal_()
    _, after = layer(x, streams, scenario)
    torch.testing.assert_close(after[:, 0], before[:, 0])
    assert not torch.allclose(after[:, 1], before[:, 1])
