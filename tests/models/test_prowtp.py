"""ProWTP: the plan feeding its losses, the compact loss, and the codebook refresh of a run."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from protorec.models.prowtp import compact_loss
from protorec.ot.l2_suot import l2_semirelaxed_objective
from protorec.pipeline.day_reader import DayReader
from protorec.pipeline.model_factory import build_model
from protorec.pipeline.refresh import refresh_watch_head
from tests.models.test_watch_heads import TINY_HVQVAE, TINY_WATCH, make_model, watch_rows

DAYS = [dt.date(2026, 1, 1), dt.date(2026, 1, 2)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two contract partitions of watch times: ratios from skip, partial and complete peaks."""
    root = tmp_path_factory.mktemp("contract")
    rng = np.random.default_rng(0)
    for day in DAYS:
        n = 3000
        duration = np.exp(rng.normal(9.8, 0.8, n))
        peak = rng.choice(3, n, p=[0.4, 0.3, 0.3])
        ratio = np.clip(rng.normal(np.array([0.05, 0.5, 1.0])[peak], 0.05), 0, None)
        watch = pa.array(np.where(rng.random(n) < 0.05, np.nan, ratio * duration), from_pandas=True)
        part = root / f"date={day.isoformat()}"
        part.mkdir()
        pq.write_table(
            pa.table({"watch_ms": watch, "duration_ms": duration}), part / "part-0.parquet"
        )
    return root


def _config(tiny_config, head: str):
    return tiny_config("mmoe", watch={**TINY_WATCH, "head": head}, hvqvae=TINY_HVQVAE)


def test_plan_feeding_the_losses_meets_its_constraints(tiny_config, synthetic, monkeypatch):
    model = make_model(tiny_config, synthetic, "prowtp")
    head = model.dense_arch.watch_head
    plans = []
    align = head.align
    monkeypatch.setattr(head, "align", lambda *args: plans.append(align(*args)) or plans[-1])
    batch = watch_rows(synthetic, 200, torch.Generator().manual_seed(0), unobserved=0.2)
    batch.scenario[batch.scenario == 2] = 0  # a scenario absent from the batch: no rows
    _, outputs = model(batch)
    (res,) = plans
    plan, mask = res.plan, res.row_mask
    observed = ~batch.watch_ms.isnan()
    counts = torch.bincount(batch.scenario[observed], minlength=3)
    assert mask.sum(-1).tolist() == counts.tolist()
    assert bool((plan >= 0).all())
    rows = plan.sum(-1)
    expected = mask / counts.clamp_min(1).unsqueeze(-1)
    torch.testing.assert_close(rows, expected.to(rows.dtype), atol=1e-6, rtol=0)
    assert res.result.converged and float(res.result.err_b.max()) < 1e-6
    torch.testing.assert_close(res.soft_labels.sum(-1), torch.ones(int(observed.sum())))
    # Each observed row's soft labels are its own plan row (batch order within a scenario).
    for s in (0, 1):
        n = int(counts[s])
        torch.testing.assert_close(
            res.soft_labels[batch.scenario[observed] == s], (plan[s, :n] * n).to(torch.float32)
        )
    # Optimal: no worse than the uniform plan of the same rows (objective of eq. 8).
    h = F.normalize(
        model.net(model.pooled(batch.sparse), batch.dense, batch.scenario)["watch_logit"][observed],
        dim=-1,
    ).detach()
    protos = head.prototypes().detach()
    for s in (0, 1):
        cost = 1 - h[batch.scenario[observed] == s] @ protos.T
        b = torch.full((1, protos.shape[0]), 1 / protos.shape[0])
        got = l2_semirelaxed_objective(
            plan[s, : cost.shape[0]].unsqueeze(0).double(),
            cost.unsqueeze(0).double(),
            b.double(),
            1.0,
        )
        uniform = torch.full_like(cost, 1 / cost.numel()).unsqueeze(0).double()
        assert (
            got
            <= l2_semirelaxed_objective(uniform, cost.unsqueeze(0).double(), b.double(), 1.0) + 1e-9
        )
    assert float(outputs["prowtp/ot_converged"]) == 1.0


def test_compact_loss_rewards_rows_that_share_prototypes_being_close():
    g = torch.Generator().manual_seed(0)
    labels = torch.eye(4).repeat_interleave(5, dim=0)  # 20 rows, 5 per prototype
    centres = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    tight = F.normalize(
        centres.repeat_interleave(5, 0) + 0.05 * torch.randn(20, 8, generator=g), dim=-1
    )
    loose = F.normalize(torch.randn(20, 8, generator=g), dim=-1)
    assert compact_loss(tight, labels, 0.1) < compact_loss(loose, labels, 0.1)


def test_refresh_fits_then_refits_keeping_identities(tiny_config, dataset):
    model = build_model(_config(tiny_config, "prowtp"), ebc_device="cpu")
    head = model.dense_arch.watch_head
    assert not head.is_fitted()
    assert refresh_watch_head(model, DayReader(dataset, DAYS)) is None  # first call: a fit
    first = head.credible_prototypes.clone()
    torch.testing.assert_close(first, head.hvqvae.codebook.detach().reshape(first.shape))
    assert not any(p.requires_grad for p in head.hvqvae.parameters())
    report = refresh_watch_head(model, DayReader(dataset, DAYS))
    assert report is not None and report.identity_kept
    live = ~report.revived  # a revived dead code takes a new meaning in its own slot
    assert report.relative_movement[live].max() < 0.5
    torch.testing.assert_close(
        head.credible_prototypes, head.hvqvae.codebook.detach().reshape(first.shape)
    )
    # Same seed, same data: the same codebook (as on every rank of a distributed job).
    other = build_model(_config(tiny_config, "prowtp"), ebc_device="cpu")
    refresh_watch_head(other, DayReader(dataset, DAYS))
    torch.testing.assert_close(other.dense_arch.watch_head.credible_prototypes, first)


def test_refresh_fits_tables_once_and_ignores_other_heads(tiny_config, dataset):
    tr = build_model(_config(tiny_config, "tr"), ebc_device="cpu")
    assert refresh_watch_head(tr, DayReader(dataset, DAYS)) is None
    d2q = build_model(_config(tiny_config, "d2q"), ebc_device="cpu")
    refresh_watch_head(d2q, DayReader(dataset, DAYS[:1]))
    head = d2q.dense_arch.watch_head
    assert head.is_fitted()
    table = head.quantile_ms.clone()
    refresh_watch_head(d2q, DayReader(dataset, DAYS[1:]))
    torch.testing.assert_close(head.quantile_ms, table)  # kept: outputs keep their meaning


def test_kmeans_prototypes_are_sorted_ratio_centroids_kept_through_refits(tiny_config, dataset):
    config = _config(tiny_config, "prowtp")
    config.model.watch.prowtp.prototype_source = "kmeans"
    model = build_model(config, ebc_device="cpu")
    head = model.dense_arch.watch_head
    assert head.hvqvae is None and head.wants_statistics() and not head.is_fitted()
    assert refresh_watch_head(model, DayReader(dataset, DAYS)) is None  # first call: a fit
    first = head.credible_prototypes.clone()
    assert first.shape == (8, 8)  # C K centroids of n = sample_length watch ratios
    assert bool((first.diff(dim=-1) >= 0).all())  # means of sorted vectors: sorted
    # The data's ratios: peaks at 0.05, 0.5 and 1.0 (std 0.05), all within [0, 1.4].
    assert float(first.min()) >= 0 and float(first.max()) < 1.4
    assert len({round(float(m), 1) for m in first.mean(-1)}) >= 3  # every peak has centroids
    # The edges and centroids travel in the state dict: a loaded model refits.
    other = build_model(config, ebc_device="cpu")
    other.load_state_dict(model.state_dict())
    report = refresh_watch_head(other, DayReader(dataset, DAYS))
    assert report is not None and report.identity_kept
    # Same data: Lloyd's from the converged centroids does not move them.
    torch.testing.assert_close(other.dense_arch.watch_head.credible_prototypes, first)
    assert float(report.movement.max()) < 1e-6


def test_kmeans_with_one_prototype_is_the_mean_sampled_vector():
    from protorec.models.kmeans_prototypes import fit_kmeans
    from protorec.models.watch.ratio import (
        WatchRatioConfig,
        WatchRatios,
        sample_watch_ratio_vectors,
    )

    rng = np.random.default_rng(0)
    ratios = WatchRatios(rng.gamma(2.0, 0.4, 600), rng.uniform(1e3, 9e3, 600), 600, {})
    samples = sample_watch_ratio_vectors(ratios, WatchRatioConfig(2, [], 20, 6), num_peaks=2)
    (centroid,) = fit_kmeans(samples, 1, iterations=5, seed=0)
    np.testing.assert_allclose(centroid, samples.vectors.mean(0), rtol=1e-5)


def test_vqvae_prototypes_are_a_one_level_codebook_refitted_with_identities(tiny_config, dataset):
    config = _config(tiny_config, "prowtp")
    config.model.watch.prowtp.prototype_source = "vqvae"
    model = build_model(config, ebc_device="cpu")
    head = model.dense_arch.watch_head
    assert head.hvqvae.codebook.shape == (1, 8, 4)  # one cluster of C K = 2 x 4 codes
    assert refresh_watch_head(model, DayReader(dataset, DAYS)) is None
    torch.testing.assert_close(head.credible_prototypes, head.hvqvae.codebook.detach()[0])
    report = refresh_watch_head(model, DayReader(dataset, DAYS))
    assert report is not None and report.identity_kept
    torch.testing.assert_close(head.credible_prototypes, head.hvqvae.codebook.detach()[0])
