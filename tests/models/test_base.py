"""The RecModel contract, for every model: forward, predict, tracing, tasks, losses."""

import pytest
import torch
from torchrec.distributed.train_pipeline.tracing import Tracer

from protorec.models.base import DenseArch, RecModel, click_loss
from protorec.models.registry import MODELS
from protorec.pipeline.model_factory import build_model


def _model(tiny_config, name, **model) -> RecModel:
    torch.manual_seed(0)
    return build_model(tiny_config(name, **model), ebc_device="cpu")


def test_forward_returns_scalar_loss_and_detached_outputs(model_name, tiny_config, synthetic):
    model = _model(tiny_config, model_name)
    batch = synthetic.batch(64, torch.Generator().manual_seed(0))
    loss, outputs = model(batch)
    assert loss.dim() == 0 and loss.requires_grad
    assert outputs["click_logit"].shape == (64,)
    assert not any(v.requires_grad for v in outputs.values())
    terms = [v for k, v in outputs.items() if k.startswith("loss/")]
    assert "loss/click" in outputs
    torch.testing.assert_close(torch.stack(terms).sum(), loss.detach())


def test_gradients_reach_every_parameter(model_name, tiny_config, synthetic):
    model = _model(tiny_config, model_name)
    loss, _ = model(synthetic.batch(128, torch.Generator().manual_seed(0)))
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


def test_prediction_does_not_depend_on_the_rest_of_the_batch(model_name, tiny_config, synthetic):
    model = _model(tiny_config, model_name)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # move running statistics and weights off their initial values
        loss, _ = model(synthetic.batch(64, g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    rows = synthetic.rows(8, g)
    alone = synthetic.make_batch(rows)
    for companions in (synthetic.rows(56, g), synthetic.rows(120, g)):
        mixed = synthetic.make_batch({k: torch.cat([rows[k], companions[k]]) for k in rows})
        got = model.predict(mixed)["click_prob"][:8]
        torch.testing.assert_close(got, model.predict(alone)["click_prob"], rtol=1e-5, atol=1e-6)
    assert model.training  # predict gave the mode back
    probs = model.predict(alone)["click_prob"]
    assert probs.shape == (8,) and ((probs > 0) & (probs < 1)).all()


@pytest.mark.parametrize("how", ["fx", "export"])
def test_dense_part_traces_to_the_same_outputs(model_name, how, tiny_config, synthetic):
    model = _model(tiny_config, model_name).eval()
    batch = synthetic.batch(16, torch.Generator().manual_seed(0))
    args = (model.sparse_arch(batch.sparse).values().detach(), batch.dense, batch.scenario)
    if how == "fx":
        traced = torch.fx.symbolic_trace(model.net)
    else:
        traced = torch.export.export(model.net, args).module()
    expected, got = model.net(*args), traced(*args)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


def test_forward_traces_as_torchrec_pipelines_need(tiny_config):
    # TrainPipelineSparseDist fx-traces forward with every sharded-module-free child as a
    # leaf, to find the embedding lookup's input in the batch.
    model = _model(tiny_config, "distproto")
    graph = Tracer(leaf_modules=["sparse_arch", "dense_arch"]).trace(model)
    calls = [n for n in graph.nodes if n.op == "call_module"]
    assert [n.target for n in calls] == ["sparse_arch", "dense_arch"]
    (kjt,) = calls[0].args
    assert kjt.op == "call_function" and kjt.args[1] == "sparse"


def test_backbones_serve_several_tasks(model_name, tiny_config):
    cfg = tiny_config(model_name, ple={"num_task_experts": 1})
    net = MODELS[model_name].net(16, 2, 3, cfg.model, tasks=("click", "watch"))
    out = net(torch.randn(5, 16), torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1]))
    assert out["click_logit"].shape == out["watch_logit"].shape == (5,)
    assert not torch.allclose(out["click_logit"], out["watch_logit"])


def test_scenario_weighting_averages_each_scenarios_mean_loss():
    logit = torch.randn(10)
    click = torch.randint(2, (10,)).float()
    scenario = torch.tensor([0] * 7 + [2] * 3)
    per_row = torch.nn.functional.binary_cross_entropy_with_logits(logit, click, reduction="none")
    expected = (per_row[:7].mean() + per_row[7:].mean()) / 2  # scenario 1 absent
    torch.testing.assert_close(click_loss(logit, click, scenario, 3, "scenario"), expected)
    torch.testing.assert_close(click_loss(logit, click, scenario, 3, "rows"), per_row.mean())


def test_l2_term_is_lambda_times_squared_norm_of_the_dense_net(tiny_config, synthetic):
    batch = synthetic.batch(32, torch.Generator().manual_seed(0))
    model = _model(tiny_config, "mmoe", l2_weight=0.01)
    _, out = model(batch)
    expected = 0.01 * sum(p.detach().square().sum() for p in model.net.parameters())
    torch.testing.assert_close(out["loss/l2"], expected)
    _, out = _model(tiny_config, "mmoe", l2_weight=0.0)(batch)
    assert "loss/l2" not in out


def test_dense_arch_of_baselines_is_the_plain_one(tiny_config):
    for name in ("shared_bottom", "mmoe", "ple", "star"):
        assert type(_model(tiny_config, name).dense_arch) is DenseArch
