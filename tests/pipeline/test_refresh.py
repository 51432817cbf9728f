"""Refreshes before training: watch-head statistics from training rows only, dead prototypes."""

from __future__ import annotations

import dataclasses
import datetime as dt
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protorec.models.base import eval_mode
from protorec.pipeline import daily
from protorec.pipeline.config import from_dict
from protorec.pipeline.day_reader import holdout_mask
from protorec.pipeline.job_config import load_config
from protorec.pipeline.loader import ContractLoader
from protorec.pipeline.model_factory import build_model
from protorec.pipeline.refresh import refresh_watch_head, reseed_dead_prototypes
from protorec.pipeline.simulator import simulate

DAY = dt.date(2026, 1, 1)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A simulated day of 4,000 rows and a config whose model has a D2Q watch head."""
    root = tmp_path_factory.mktemp("refresh")
    config = load_config("simulator")
    config.simulator = dataclasses.replace(config.simulator, rows_per_day=4_000)
    simulate(root, DAY, 1, config.simulator, config.data.scenarios, progress=False)
    config.model = from_dict(type(config.model), {"name": "distproto", "watch": {"head": "d2q"}})
    return config, root


def test_the_daily_refresh_fits_on_training_rows_only(small, monkeypatch):
    config, root = small
    fraction = 0.3
    loader = ContractLoader(
        config,
        [DAY],
        dataset_dir=root,
        split="train",
        holdout_fraction=fraction,
        shuffle=False,
        progress=False,
    )
    seen = []

    def spy(model, reader, rows=None):
        seen.append(rows)
        return refresh_watch_head(model, reader, rows)

    monkeypatch.setattr(daily, "refresh_watch_head", spy)
    model = build_model(config, ebc_device="cpu")
    daily._refresh(SimpleNamespace(module=model), loader, config, DAY, root)
    (rows,) = seen
    held_out = np.flatnonzero(holdout_mask(loader.reader.num_rows, fraction, config.loader.seed))
    assert rows is not None and len(rows) == loader.num_rows
    assert not np.intersect1d(rows, held_out).size  # not one hold-out row reaches the refit
    head = model.dense_arch.watch_head
    assert head.is_fitted()
    # The tables are those of the training rows, which differ from those of every row.
    alone = build_model(config, ebc_device="cpu").dense_arch.watch_head
    alone.refresh_statistics(loader.reader.watch_ratios(rows))
    torch.testing.assert_close(head.quantile_ms, alone.quantile_ms)
    every = build_model(config, ebc_device="cpu").dense_arch.watch_head
    every.refresh_statistics(loader.reader.watch_ratios())
    assert not torch.equal(every.quantile_ms, alone.quantile_ms)


def test_dead_prototypes_move_onto_rows_and_others_stay(small):
    config, root = small
    torch.manual_seed(0)
    model = build_model(config, ebc_device="cpu")
    loader = ContractLoader(config, [DAY], dataset_dir=root, shuffle=False, progress=False)
    batches = [b for _, b in zip(range(3), loader)]
    arch = model.dense_arch
    before = arch.global_prototypes.weight.detach().clone()[0]
    # fraction 1: every prototype below the uniform share counts as dead
    report = reseed_dead_prototypes(model, batches, fraction=1.0, seed=0)
    assert report is not None and report.dead_global
    after = arch.global_prototypes.weight.detach()[0]
    alive = sorted(set(range(after.shape[0])) - set(report.dead_global))
    torch.testing.assert_close(after[alive], before[alive])
    with torch.no_grad(), eval_mode(model):  # as the reseeding encodes (BatchNorm)
        z_g = torch.cat([model.encode(b)["z_g"] for b in batches])
    moved = F.normalize(after[report.dead_global], dim=-1)
    # each re-seeded prototype points at one of the day's rows
    best = (moved @ F.normalize(z_g, dim=-1).t()).max(dim=1).values
    torch.testing.assert_close(best, torch.ones_like(best))
    assert report.reseeded >= len(report.dead_global)


def test_models_without_prototypes_have_nothing_to_reseed(small):
    config, root = small
    config = dataclasses.replace(config, model=from_dict(type(config.model), {"name": "mmoe"}))
    model = build_model(config, ebc_device="cpu")
    loader = ContractLoader(config, [DAY], dataset_dir=root, shuffle=False, progress=False)
    assert reseed_dead_prototypes(model, [next(iter(loader))], 1.0, seed=0) is None
    assert model.prototype_report([next(iter(loader))]) is None
