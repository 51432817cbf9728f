"""DistProto: one batched transport call, its losses, gradients, and each Table 2 ablation."""

import pytest
import torch

from protorec.models.modules import prototype_transport
from protorec.models.modules.prototypes import orthogonality_loss
from protorec.pipeline.model_factory import build_model


def _model(tiny_config, **distproto):
    torch.manual_seed(0)
    return build_model(tiny_config("distproto", distproto=distproto), ebc_device="cpu")


@pytest.fixture
def batch(synthetic):
    return synthetic.batch(96, torch.Generator().manual_seed(0))


def _cosine_cost(z, prototypes):
    """DistProto's cost, 1 - cos, written out as the paper gives it."""
    z, prototypes = (
        torch.nn.functional.normalize(z, dim=-1),
        torch.nn.functional.normalize(prototypes, dim=-1),
    )
    return 1 - z @ prototypes.T


def _net_out(model, batch):
    return model.net(model.sparse_arch(batch.sparse).values(), batch.dense, batch.scenario)


def test_one_solver_call_per_step_over_global_and_every_scenario(tiny_config, batch, monkeypatch):
    calls = []
    real = prototype_transport.solve_uot

    def counting(C, a, b, **kwargs):
        calls.append((C.shape, a.clone(), b.clone()))
        return real(C, a, b, **kwargs)

    monkeypatch.setattr(prototype_transport, "solve_uot", counting)
    model = _model(tiny_config)
    model(batch)
    assert len(calls) == 1
    shape, a, b = calls[0]
    counts = torch.bincount(batch.scenario, minlength=3)
    # 3 global problems, then 3 scenario problems; rows padded to the largest scenario.
    assert shape == (6, int(counts.max()), 16)
    assert (a > 0).sum(-1).tolist() == counts.tolist() * 2
    assert (b > 0).sum(-1).tolist() == [16] * 3 + [8] * 3
    torch.testing.assert_close(a.sum(-1), torch.ones(6))


def test_each_row_is_costed_against_the_global_and_its_own_scenarios_prototypes(tiny_config, batch):
    model = _model(tiny_config)
    arch = model.dense_arch
    out = _net_out(model, batch)
    align = arch.transport(out, batch.scenario)
    for s in range(3):
        rows = align.layout.index[s][align.layout.mask[s]]
        assert (batch.scenario[rows] == s).all()
        n = len(rows)
        global_cost = _cosine_cost(out["z_g"][rows], arch.global_prototypes.weight[0])
        own_cost = _cosine_cost(out["z_s"][rows], arch.scenario_prototypes.weight[s])
        torch.testing.assert_close(align.cost[s, :n, :16], global_cost)
        torch.testing.assert_close(align.cost[3 + s, :n, :8], own_cost)
        assert (align.plan[[s, 3 + s], n:] == 0).all()
    assert (align.plan[3:, :, 8:] == 0).all()
    counts = torch.bincount(batch.scenario, minlength=3).float()
    torch.testing.assert_close(align.weight, torch.cat([counts / 96, torch.ones(3)]))


def test_losses_follow_the_paper(tiny_config, batch):
    model = _model(tiny_config, align_weight=0.5, ortho_weight=0.01)
    arch = model.dense_arch
    _, outputs = model(batch)
    out = _net_out(model, batch)
    align = arch.transport(out, batch.scenario)
    per_problem = (align.plan * align.cost).sum((-2, -1)).detach()
    expected = 0.5 * (align.weight * per_problem).sum()
    torch.testing.assert_close(outputs["loss/align"], expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        outputs["loss/ortho"], 0.01 * orthogonality_loss(arch.global_prototypes.weight[0]).detach()
    )
    # n_iter counts quasi-Newton iterations: 0 where the cold start's sweeps already meet tol.
    assert outputs["ot/converged"] == 1.0 and outputs["ot/n_iter"] >= 0
    assert outputs["ot/sweeps"] >= 5  # the cold start's least (float32)


def test_ortho_loss_is_zero_for_orthonormal_prototypes_and_positive_otherwise(tiny_config, batch):
    model = _model(tiny_config)
    _, outputs = model(batch)
    assert outputs["loss/ortho"] < 1e-8  # prototypes start orthonormal
    weight = model.dense_arch.global_prototypes.weight
    with torch.no_grad():
        weight[0, 1] += weight[0, 0]
    _, outputs = model(batch)
    assert outputs["loss/ortho"] > 1e-4


def test_gradients_reach_prototypes_encoders_and_experts(tiny_config, batch):
    model = _model(tiny_config, gpd=True)
    loss, _ = model(batch)
    loss.backward()
    arch = model.dense_arch
    for name in (
        "global_prototypes.weight",
        "scenario_prototypes.weight",
        "net.backbone.experts.weights.0",
        "net.backbone.gate.weight",
        "net.global_encoder._mlp.0._linear.weight",
        "net.scenario_encoder.layers.0.weight",
    ):
        grad = arch.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    # Every scenario's prototype set is trained by its own rows.
    assert (arch.scenario_prototypes.weight.grad.abs().sum((1, 2)) > 0).all()


def test_alignment_alone_trains_the_prototypes(tiny_config, batch):
    # The plan is a constant: the align loss's gradient flows through the costs only.
    model = _model(tiny_config)
    arch = model.dense_arch
    out = _net_out(model, batch)
    align = arch.transport(out, batch.scenario)
    assert not align.plan.requires_grad
    align.alignment().backward()
    assert arch.global_prototypes.weight.grad.abs().sum() > 0
    assert arch.net.get_parameter("backbone.experts.weights.0").grad.abs().sum() > 0


def _names(model):
    return {n for n, _ in model.named_parameters()}


def _loss_names(outputs):
    return {k for k in outputs if k.startswith("loss/")}


def test_ablation_balanced_ot_changes_only_the_solver(tiny_config, batch):
    full, ablated = (
        _model(tiny_config),
        _model(tiny_config, ot={"balanced": True, "max_iter": 3000, "tol": 1e-6}),
    )
    assert _names(full) == _names(ablated)
    (_, out_full), (_, out_abl) = full(batch), ablated(batch)
    assert _loss_names(out_full) == _loss_names(out_abl)
    torch.testing.assert_close(out_full["click_logit"], out_abl["click_logit"])
    z = _net_out(ablated, batch)
    plan = ablated.dense_arch.transport(z, batch.scenario).plan
    n = int((batch.scenario == 0).sum())
    torch.testing.assert_close(plan[0, :n].sum(-1), torch.full((n,), 1 / n), atol=1e-5, rtol=0)
    torch.testing.assert_close(plan[0].sum(-2), torch.full((16,), 1 / 16), atol=1e-5, rtol=0)
    assert not torch.allclose(out_full["loss/align"], out_abl["loss/align"])


def test_ablation_no_scenario_prototypes_removes_them_and_their_problems(
    tiny_config, batch, monkeypatch
):
    # Towers on the encodings: with the default "both" the ablation reads z_s in place of
    # the scenario mixture, so only here must the same draws give the same logits.
    full = _model(tiny_config, tower_input="encodings")
    ablated = _model(tiny_config, scenario_prototypes=False, tower_input="encodings")
    assert _names(full) - _names(ablated) == {"dense_arch.net.scenario_prototypes.weight"}
    assert _names(ablated) <= _names(full)
    shapes = []
    real = prototype_transport.solve_uot
    monkeypatch.setattr(
        prototype_transport,
        "solve_uot",
        lambda C, a, b, **kw: shapes.append(C.shape) or real(C, a, b, **kw),
    )
    (_, out_full), (_, out_abl) = full(batch), ablated(batch)
    n = int(torch.bincount(batch.scenario).max())
    assert shapes == [(6, n, 16), (3, n, 16)]
    assert _loss_names(out_full) == _loss_names(out_abl)
    torch.testing.assert_close(out_full["click_logit"], out_abl["click_logit"])


def test_ablation_no_orthogonality_drops_only_that_loss(tiny_config, batch):
    full, ablated = _model(tiny_config), _model(tiny_config, orthogonality=False)
    assert _names(full) == _names(ablated)
    (_, out_full), (_, out_abl) = full(batch), ablated(batch)
    assert _loss_names(out_full) - _loss_names(out_abl) == {"loss/ortho"}
    for key in _loss_names(out_abl) | {"click_logit"}:
        torch.testing.assert_close(out_full[key], out_abl[key])


def test_ablation_single_encoder_replaces_only_the_extractor(tiny_config, batch):
    full, ablated = _model(tiny_config), _model(tiny_config, extractor="single")
    outside = {
        n for n in _names(full) ^ _names(ablated) if not n.startswith("dense_arch.net.backbone.")
    }
    assert outside == set()
    assert any("gate" in n for n in _names(full)) and not any("gate" in n for n in _names(ablated))
    (_, out_full), (_, out_abl) = full(batch), ablated(batch)
    assert _loss_names(out_full) == _loss_names(out_abl)


def test_gpd_option_adds_only_the_plan_cross_entropy(tiny_config, batch):
    full, gpd = _model(tiny_config), _model(tiny_config, gpd=True)
    assert _names(full) == _names(gpd)
    (_, out_full), (_, out_gpd) = full(batch), gpd(batch)
    assert _loss_names(out_gpd) - _loss_names(out_full) == {"loss/proto_ce"}
    assert out_gpd["loss/proto_ce"] > 0
    for key in _loss_names(out_full) | {"click_logit"}:
        torch.testing.assert_close(out_full[key], out_gpd[key])


@pytest.mark.parametrize("tower_input", ["prototypes", "both"])
def test_towers_reading_prototype_mixtures_train_them_and_stay_batch_independent(
    tiny_config, batch, synthetic, tower_input
):
    model = _model(tiny_config, tower_input=tower_input, align_weight=0.0)
    # the click loss alone (no alignment) reaches both prototype sets through the towers
    loss, outputs = model(batch)
    (loss - outputs["loss/ortho"]).backward()
    arch = model.dense_arch
    assert arch.global_prototypes.weight.grad.abs().sum() > 0
    assert arch.scenario_prototypes.weight.grad.abs().sum() > 0
    # a row's prediction needs neither transport nor the rest of its batch
    g = torch.Generator().manual_seed(1)
    rows, companions = synthetic.rows(8, g), synthetic.rows(120, g)
    mixed = synthetic.make_batch({k: torch.cat([rows[k], companions[k]]) for k in rows})
    torch.testing.assert_close(
        model.predict(mixed)["click_prob"][:8],
        model.predict(synthetic.make_batch(rows))["click_prob"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_prototypes_are_not_under_the_weight_penalty(tiny_config):
    arch = _model(tiny_config).dense_arch
    penalised = {id(p) for p in arch.l2_parameters()}
    assert id(arch.global_prototypes.weight) not in penalised
    assert id(arch.scenario_prototypes.weight) not in penalised
    assert id(arch.net.get_parameter("backbone.gate.weight")) in penalised


def test_alignment_warmup_ramps_the_weight_over_training_steps_only(tiny_config, batch):
    model = _model(tiny_config, align_weight=0.4, align_warmup_steps=4)
    arch = model.dense_arch

    def expected_align():
        out = _net_out(model, batch)
        align = arch.transport(out, batch.scenario)
        return align.alignment().detach()

    seen = []
    for _ in range(6):
        _, outputs = model(batch)
        seen.append((outputs["loss/align"] / expected_align()).item())
    torch.testing.assert_close(torch.tensor(seen), 0.4 * torch.tensor([0.25, 0.5, 0.75, 1, 1, 1]))
    model.eval()
    model(batch)  # an evaluation pass is no training step
    assert int(arch.align_step) == 6
    assert "dense_arch.align_step" in model.state_dict()
    # Without a warm-up nothing is counted into checkpoints: their keys stay as they were.
    assert not any("align_step" in key for key in _model(tiny_config).state_dict())
