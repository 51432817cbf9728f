"""Train a model on a day range and evaluate it on another: the engine of `protorec train`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import torch

from protorec.models.build import build_model
from protorec.pipeline.contract import parse_day_range
from protorec.pipeline.distributed import DistContext
from protorec.pipeline.job_config import ProtorecConfig
from protorec.pipeline.loader import ContractLoader
from protorec.pipeline.metrics import compute_metrics
from protorec.pipeline.trainer import predict_pass, shard_model, train_pass

log = logging.getLogger(__name__)


def _days(text: str):
    import datetime as dt

    lo, hi = parse_day_range(text)
    return [lo + dt.timedelta(days=i) for i in range((hi - lo).days + 1)]


def oracle_metrics(config: ProtorecConfig, dataset: str | Path, days: str) -> dict | None:
    """The figures of the simulator's true click probability on ``days`` (None elsewhere).

    Read here, in evaluation only: no training code reads the oracle columns.
    """
    files = [str(f) for d in _days(days)
             for f in sorted((Path(dataset) / f"date={d.isoformat()}").glob("*.parquet"))]
    data = pads.dataset(files, format="parquet")
    if "oracle_p_click" not in data.schema.names:
        return None
    table = data.to_table(columns=["click", "oracle_p_click", "scenario", "user_id", "ts_ms"])
    codes = {c: i for i, c in enumerate(config.data.scenarios)}
    scenario = np.vectorize(codes.__getitem__)(table.column("scenario").to_numpy())
    return compute_metrics(
        table.column("click").to_numpy().astype(np.float64),
        table.column("oracle_p_click").to_numpy(),
        scenario,
        table.column("user_id").to_numpy(),
        table.column("ts_ms").to_numpy() // 86_400_000,
        scenario_names=[config.data.scenario_name(i) for i in range(len(codes))],
    )


def train_and_evaluate(
    config: ProtorecConfig,
    dataset: str | Path,
    train_days: str,
    test_days: str,
    ctx: DistContext,
    progress: bool = True,
) -> dict:
    """Train ``config.model`` on ``train_days`` and return the metrics on ``test_days``."""
    torch.manual_seed(config.train.seed)
    model = build_model(config, ebc_device="meta")
    sharded = shard_model(model, ctx, config.train, config.loader.batch_size)
    loader = ContractLoader(config, train_days, dataset_dir=dataset, progress=False)
    stats = None
    for epoch in range(config.train.epochs):
        loader.set_epoch(epoch)
        stats = train_pass(sharded, loader, ctx, config.train, len(loader), progress=progress)
        if ctx.is_main:
            log.info("epoch %d: %d steps, %.0f samples/s", epoch, stats.steps,
                     stats.samples_per_s)
    test = ContractLoader(config, test_days, dataset_dir=dataset, shuffle=False, progress=False)
    preds = predict_pass(sharded, test, ctx)
    names = [config.data.scenario_name(i) for i in range(len(config.data.scenarios))]
    metrics = compute_metrics(
        preds["click"], preds["click_prob"], preds["scenario"], preds["user_id"], preds["day"],
        scenario_names=names,
    )
    metrics["train"] = {
        "model": config.model.name,
        "steps": stats.steps if stats else 0,
        "samples_per_s": stats.samples_per_s if stats else 0.0,
        "world_size": ctx.world_size,
    }
    return metrics
