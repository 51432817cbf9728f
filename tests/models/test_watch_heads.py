"""Watch-time heads on the multi-scenario backbones: losses, masking, predictions, config.

The toy task: the synthetic clicks of conftest, plus durations and watch ratios. The
duration is ``exp(9.5 + dense_0)`` ms (a feature the model reads); a row's watch ratio is
~1 (completion) with probability ``sigmoid(8 <u, v> + 3 dense_1)`` and ~0.1 (early skip)
otherwise, so the expected watch time depends on the user x item affinity, the dense
features and the duration: every head has something to learn.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from protorec.models.base import RecModel
from protorec.models.batch import Batch
from protorec.models.config import ModelConfig
from protorec.models.prowtp import ProWTPHead
from protorec.pipeline.config import ConfigError, from_dict
from protorec.pipeline.model_factory import build_model

HEADS = ("tr", "wlr", "d2q", "tpm", "prowtp")
#: A small HVQ-VAE (C K = 2 x 4 prototypes of width 4) for ProWTP's tests.
TINY_HVQVAE = {
    "dim": 4,
    "encoder_hidden": [16],
    "decoder_hidden": [16],
    "num_clusters": 2,
    "num_prototypes": 4,
    "epochs": 5,
    "refit_epochs": 2,
    "sampling": {"num_buckets": 2, "samples_per_bucket": 32, "sample_length": 8},
}
TINY_WATCH = {
    "hidden": [16],
    "scale_ms": 10_000.0,
    "d2q": {"num_groups": 4},
    "tpm": {"depth": 3},
    "prowtp": {"dim": 8, "regressor_hidden": [8]},
}


def watch_rows(synthetic, n: int, g: torch.Generator, unobserved: float = 0.0) -> Batch:
    """A batch of the synthetic clicks with durations and watch times (a share unobserved)."""
    rows = synthetic.rows(n, g)
    batch = synthetic.make_batch(rows)
    affinity = (synthetic.user[rows["user"]] * synthetic.item[rows["item"]]).sum(-1)
    complete = torch.bernoulli(torch.sigmoid(8 * affinity + 3 * rows["dense"][:, 1]), generator=g)
    duration = torch.exp(9.5 + rows["dense"][:, 0])  # the model sees the duration
    ratio = complete * 1.0 + (1 - complete) * 0.1 + 0.05 * torch.rand(n, generator=g)
    watch = duration * ratio
    watch[torch.rand(n, generator=g) < unobserved] = float("nan")
    batch.watch_ms, batch.duration_ms = watch, duration
    return batch


def make_model(tiny_config, synthetic, head: str, name: str = "mmoe", **watch) -> RecModel:
    """A tiny model with the watch head, its statistics fitted on 4,000 toy rows."""
    torch.manual_seed(0)
    config = tiny_config(name, watch={**TINY_WATCH, "head": head, **watch}, hvqvae=TINY_HVQVAE)
    model = build_model(config, ebc_device="cpu")
    head_module = model.dense_arch.watch_head
    fit_rows = watch_rows(synthetic, 4000, torch.Generator().manual_seed(123))
    head_module.fit_statistics(fit_rows.watch_ms.numpy(), fit_rows.duration_ms.numpy())
    if isinstance(head_module, ProWTPHead):
        # Stand-in credible prototypes (their fit from data is tested with the refresh).
        head_module.set_prototypes(torch.randn(head_module.credible_prototypes.shape))
    return model


def train_steps(model: RecModel, synthetic, steps: int, rows: int, seed: int) -> None:
    """``steps`` Adam steps (lr 0.01) on fresh toy batches of ``rows`` rows."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss, _ = model(watch_rows(synthetic, rows, g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("head", HEADS)
def test_each_head_trains_with_finite_losses_and_its_loss_falls(head, tiny_config, synthetic):
    model = make_model(tiny_config, synthetic, head)
    held_out = watch_rows(synthetic, 2000, torch.Generator().manual_seed(10_000))

    def watch_loss() -> float:
        with torch.no_grad():
            return float(model(held_out)[1]["loss/watch"])

    before = watch_loss()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        loss, outputs = model(watch_rows(synthetic, 256, g, unobserved=0.2))
        assert all(math.isfinite(float(v)) for k, v in outputs.items() if k.startswith("loss"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = watch_loss()
    assert after < 0.9 * before, f"{head}: held-out watch loss {before:.4f} -> {after:.4f}"
    pred = model.predict(held_out)["watch_pred_ms"]
    assert pred.shape == (2000,) and bool(torch.isfinite(pred).all()) and bool((pred >= 0).all())


@pytest.mark.parametrize("head", HEADS)
def test_watch_prediction_does_not_depend_on_the_rest_of_the_batch(head, tiny_config, synthetic):
    model = make_model(tiny_config, synthetic, head)
    train_steps(model, synthetic, steps=3, rows=64, seed=0)
    g = torch.Generator().manual_seed(1_000)
    alone = watch_rows(synthetic, 8, g)
    for n in (56, 120):
        others = watch_rows(synthetic, n, g)
        mixed = synthetic.make_batch(
            {
                "user": torch.cat([alone.user_id, others.user_id]),
                "item": torch.cat([alone.sparse["item"].values(), others.sparse["item"].values()]),
                "scenario": torch.cat([alone.scenario, others.scenario]),
                "dense": torch.cat([alone.dense, others.dense]),
                "click": torch.cat([alone.click, others.click]),
            }
        )
        mixed.duration_ms = torch.cat([alone.duration_ms, others.duration_ms])
        got = model.predict(mixed)["watch_pred_ms"][:8]
        torch.testing.assert_close(got, model.predict(alone)["watch_pred_ms"], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", ["shared_bottom", "mmoe", "ple", "star", "distproto"])
def test_every_backbone_serves_click_and_watch(name, tiny_config, synthetic):
    model = make_model(tiny_config, synthetic, "tr", name=name)
    loss, outputs = model(watch_rows(synthetic, 128, torch.Generator().manual_seed(0)))
    assert {"loss/click", "loss/watch", "click_logit"} <= outputs.keys()
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


def test_unobserved_rows_do_not_feed_the_watch_loss_and_are_counted(tiny_config, synthetic):
    model = make_model(tiny_config, synthetic, "tr")
    batch = watch_rows(synthetic, 64, torch.Generator().manual_seed(0), unobserved=0.3)
    observed = ~batch.watch_ms.isnan()
    _, outputs = model(batch)
    raw = model.net(model.pooled(batch.sparse), batch.dense, batch.scenario)["watch_logit"]
    expected = ((raw - batch.watch_ms / 10_000.0)[observed] ** 2).mean()
    torch.testing.assert_close(outputs["loss/watch"], expected.detach())
    assert outputs["watch/rows"] == observed.sum()
    assert outputs["watch/unobserved"] == (~observed).sum()
    batch.watch_ms[:] = float("nan")  # no observed row: a zero term, gradients defined
    loss, outputs = model(batch)
    assert float(outputs["loss/watch"]) == 0.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_watch_alone_keeps_the_click_logit_but_not_its_loss(tiny_config, synthetic):
    model = make_model(tiny_config, synthetic, "wlr", click_weight=0.0)
    _, outputs = model(watch_rows(synthetic, 32, torch.Generator().manual_seed(0)))
    assert "loss/click" not in outputs and "loss/watch" in outputs
    assert outputs["click_logit"].shape == (32,)


def test_default_is_click_only(tiny_config, synthetic):
    model = build_model(tiny_config("mmoe"), ebc_device="cpu")
    assert model.dense_arch.watch_head is None
    batch = watch_rows(synthetic, 16, torch.Generator().manual_seed(0))
    assert model.predict(batch).keys() == {"click_prob"}
    assert not any(k.startswith("loss/watch") for k in model(batch)[1])


def test_a_head_with_statistics_refuses_to_train_before_they_are_fitted(tiny_config, synthetic):
    model = build_model(tiny_config("mmoe", watch={**TINY_WATCH, "head": "d2q"}), ebc_device="cpu")
    with pytest.raises(RuntimeError, match="refresh_watch_head"):
        model(watch_rows(synthetic, 16, torch.Generator().manual_seed(0)))


def test_watch_statistics_travel_in_the_state_dict(tiny_config, synthetic):
    for head in ("d2q", "tpm", "prowtp"):
        trained = make_model(tiny_config, synthetic, head)
        fresh = build_model(
            tiny_config("mmoe", watch={**TINY_WATCH, "head": head}, hvqvae=TINY_HVQVAE),
            ebc_device="cpu",
        )
        fresh.load_state_dict(trained.state_dict())
        batch = watch_rows(synthetic, 16, torch.Generator().manual_seed(0))
        torch.testing.assert_close(
            fresh.predict(batch)["watch_pred_ms"], trained.predict(batch)["watch_pred_ms"]
        )


def test_d2q_label_is_the_quantile_within_the_duration_group(tiny_config, synthetic):
    head = make_model(tiny_config, synthetic, "d2q").dense_arch.watch_head
    rows = watch_rows(synthetic, 4000, torch.Generator().manual_seed(123))
    group = np.searchsorted(head.group_edges_ms.numpy(), rows.duration_ms.numpy(), "right")
    assert np.bincount(group).min() > 800  # equal-count groups of the 4,000 rows
    # The predicted watch time of quantile 1/2 is each group's median.
    medians = [np.median(rows.watch_ms.numpy()[group == g]) for g in range(4)]
    centre = torch.tensor([float(rows.duration_ms[group == g][0]) for g in range(4)])
    torch.testing.assert_close(
        head.predict_ms(torch.zeros(4, 1), centre),
        torch.tensor(medians, dtype=torch.float32),
        rtol=1e-4,
        atol=1.0,
    )


def test_tpm_leaf_probabilities_sum_to_one_and_follow_the_tree():
    from protorec.models.watch.tpm import TPMConfig, TPMHead

    head = TPMHead(4, 1, [4], 1e3, TPMConfig(depth=3))
    raw = torch.randn(5, 7)
    p = head.leaf_probabilities(raw)
    torch.testing.assert_close(p.sum(-1), torch.ones(5))
    # Leaves under the root's right child carry P(right at the root).
    torch.testing.assert_close(p[:, 4:].sum(-1), torch.sigmoid(raw[:, 0]))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("head", "ltv", "head"),
        ("click_weight", -1.0, "click_weight"),
        ("prowtp", {"compact_sample": 0.0}, "compact_sample"),
        ("d2q", {"num_groups": 3, "group_edges_ms": [5.0]}, "group_edges_ms"),
    ],
)
def test_bad_watch_config_names_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelConfig, {"watch": {"head": "tr", key: value}}, key="model")


def test_ratio_target_is_refused_for_a_head_that_regresses_no_target():
    with pytest.raises(ConfigError, match="target 'ratio'.*'d2q'"):
        from_dict(ModelConfig, {"watch": {"head": "d2q", "target": "ratio"}}, key="model")


@pytest.mark.parametrize(
    "head, options",
    [
        ("tr", {"target": "ratio"}),
        ("prowtp", {"target": "ratio"}),
        ("prowtp", {"prowtp": {"dim": 8, "regressor_hidden": [8], "regressor_input": "both"}}),
        ("prowtp", {"prowtp": {"dim": 8, "regressor_hidden": [8], "prototype_source": "random"}}),
        ("prowtp", {"prowtp": {"dim": 8, "regressor_hidden": [8], "prototype_source": "kmeans"}}),
        ("prowtp", {"prowtp": {"dim": 8, "regressor_hidden": [8], "transport": "entropic"}}),
    ],
)
def test_watch_head_options_train_and_predict_per_row(head, options, tiny_config, synthetic):
    model = make_model(tiny_config, synthetic, head, **options)
    held_out = watch_rows(synthetic, 2000, torch.Generator().manual_seed(10_000))
    with torch.no_grad():
        before = float(model(held_out)[1]["loss/watch"])
    train_steps(model, synthetic, steps=100, rows=256, seed=1)
    with torch.no_grad():
        assert float(model(held_out)[1]["loss/watch"]) < 0.9 * before
    head_module = model.dense_arch.watch_head
    if options.get("target") == "ratio":
        # The output is a watch ratio: the same row at twice the duration, twice the time.
        raw = torch.randn(4, head_module.out_features)
        d = torch.full((4,), 5e3)
        torch.testing.assert_close(
            head_module.predict_ms(raw, 2 * d), 2 * head_module.predict_ms(raw, d)
        )
    if options.get("prowtp", {}).get("prototype_source") == "random":
        assert not head_module.wants_statistics()  # nothing fitted from the labels
        assert head_module.learned_prototypes.grad is not None  # learned with the network
    if options.get("prowtp", {}).get("prototype_source") == "kmeans":
        # Centroids of n = sample_length watch ratios, projected by W_p: n -> d.
        assert head_module.credible_prototypes.shape == (8, 8)
        assert head_module.projection.weight.grad is not None
    if options.get("prowtp", {}).get("transport") == "entropic":
        h = torch.nn.functional.normalize(torch.randn(32, 8), dim=-1)
        align = head_module.align(h, head_module.prototypes(), torch.arange(32) % 2)
        assert align.result.plan.shape[0] == head_module.num_scenarios  # one per scenario
        torch.testing.assert_close(align.soft_labels.sum(-1), torch.ones(32))


def test_mean_ratio_yardstick_is_duration_times_the_training_mean_ratio(tiny_config, synthetic):
    model = make_model(tiny_config, synthetic, "mean_ratio")
    fit_rows = watch_rows(synthetic, 4000, torch.Generator().manual_seed(123))
    r = float((fit_rows.watch_ms / fit_rows.duration_ms).double().mean())
    batch = watch_rows(synthetic, 64, torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        model.predict(batch)["watch_pred_ms"], batch.duration_ms * r, rtol=1e-6, atol=1e-3
    )
    head = model.dense_arch.watch_head
    raw = model.net(model.pooled(batch.sparse), batch.dense, batch.scenario)["watch_logit"]
    terms, _ = head.losses(raw, batch)
    assert float(terms["watch"].detach()) == 0.0  # it trains nothing
    terms["watch"].backward()
    assert all(p.grad is None or not p.grad.any() for p in model.net.parameters())


def test_click_weight_zero_needs_a_head():
    with pytest.raises(ConfigError, match="needs a watch head"):
        from_dict(ModelConfig, {"watch": {"click_weight": 0.0}}, key="model")
