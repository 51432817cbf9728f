"""Train a model on a day range and evaluate it on another: the engine of `protorec train`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from protorec.models.base import RecModel
from protorec.models.batch import Batch
from protorec.pipeline.contract import parse_day_range
from protorec.pipeline.day_reader import DayReader
from protorec.pipeline.distributed import DistContext, broadcast_from_rank0
from protorec.pipeline.export import export_model
from protorec.pipeline.job_config import ProtorecConfig
from protorec.pipeline.loader import ContractLoader
from protorec.pipeline.metrics import compute_metrics
from protorec.pipeline.model_factory import build_model
from protorec.pipeline.provenance import computed_on
from protorec.pipeline.refresh import refresh_id_maps, refresh_watch_head
from protorec.pipeline.tensorboard import TensorBoardLog
from protorec.pipeline.trainer import predict_pass, shard_model, train_pass

log = logging.getLogger(__name__)


def _days(text: str):
    import datetime as dt

    lo, hi = parse_day_range(text)
    return [lo + dt.timedelta(days=i) for i in range((hi - lo).days + 1)]


def oracle_metrics(
    config: ProtorecConfig,
    dataset: str | Path,
    days: str,
    holdout_fraction: float | None = None,
    valid: np.ndarray | None = None,
) -> dict | None:
    """The figures of the simulator's true click probability on ``days`` (None elsewhere).

    With ``holdout_fraction``, on the loader's held-out rows only (``split="holdout"``:
    the same :class:`~protorec.pipeline.day_reader.DayReader` split),
    the rows the daily job gates on. Rows that break the contract are left out: ``valid``
    is their mask over the days' rows when the caller has it (the daily job), else it is
    computed here. Read here, in evaluation only: no training code reads the oracle
    columns.
    """
    reader = DayReader(dataset, _days(days))
    names = reader.schema_names()
    if "oracle_p_click" not in names:
        return None
    columns = ["click", "oracle_p_click", "scenario", "user_id", "ts_ms"]
    # The true expected watch time, when the data has it, is the oracle's watch prediction.
    with_watch = "oracle_watch_ms" in names
    if with_watch:
        columns += ["watch_ms", "oracle_watch_ms"]
    # The loader's reader and split: row i here is the loader's row i. Rows that break
    # the contract are left out, as the daily job leaves them out of its hold-out.
    rows = (
        np.arange(reader.num_rows)
        if holdout_fraction is None
        else reader.split_rows("holdout", holdout_fraction, config.loader.seed)
    )
    assert rows is not None
    if valid is None:  # the caller has not checked the rows yet
        valid = reader.invalid_reasons(config.data.scenarios) < 0
    table = reader.read(columns, rows[valid[rows]])
    codes = {c: i for i, c in enumerate(config.data.scenarios)}
    scenario = np.vectorize(codes.__getitem__)(table.column("scenario").to_numpy())
    watch = {}
    if with_watch:
        watch = {
            "watch_ms": table.column("watch_ms").to_numpy().astype(np.float64),
            "pred_watch_ms": table.column("oracle_watch_ms").to_numpy().astype(np.float64),
        }
    return compute_metrics(
        table.column("click").to_numpy().astype(np.float64),
        table.column("oracle_p_click").to_numpy(),
        scenario,
        table.column("user_id").to_numpy(),
        table.column("ts_ms").to_numpy() // 86_400_000,
        scenario_names=[config.data.scenario_name(i) for i in range(len(codes))],
        **watch,
    )


def prediction_metrics(config: ProtorecConfig, preds: dict[str, np.ndarray]) -> dict:
    """:func:`compute_metrics` of a model's predictions and the rows' keys.

    Args:
        config: names the scenarios.
        preds: ``predict`` outputs with the rows' keys (:func:`predict_rows` or
            ``trainer.predict_pass``); the watch-time figures are computed when the model
            predicts watch time ("watch_pred_ms", in ms).
    """
    names = [config.data.scenario_name(i) for i in range(len(config.data.scenarios))]
    with_watch = "watch_pred_ms" in preds
    return compute_metrics(
        preds["click"],
        preds["click_prob"],
        preds["scenario"],
        preds["user_id"],
        preds["day"],
        watch_ms=preds["watch_ms"] if with_watch else None,
        pred_watch_ms=preds["watch_pred_ms"] if with_watch else None,
        scenario_names=names,
    )


@torch.no_grad()
def predict_rows(model: RecModel, batches: Iterable[Batch]) -> dict[str, np.ndarray]:
    """One process's ``model.predict`` over ``batches``, with the rows' keys, as numpy.

    The single-process counterpart of ``trainer.predict_pass`` (same keys), for a plain
    RecModel such as an export loaded by ``protorec evaluate``.
    """
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        cols = dict(model.predict(batch))
        for key in ("scenario", "click", "watch_ms", "duration_ms", "user_id", "day"):
            cols[key] = getattr(batch, key)
        for key, value in cols.items():
            value = value.detach().cpu()
            parts.setdefault(key, []).append(
                value.float().numpy() if value.is_floating_point() else value.numpy()
            )
    if not parts:
        raise ValueError("no batches to predict")
    return {key: np.concatenate(values) for key, values in parts.items()}


def evaluate_model(
    config: ProtorecConfig,
    model: RecModel,
    dataset: str | Path,
    days: str,
    progress: bool = False,
) -> dict:
    """The figures of a plain (single-process) model on ``days``, the oracle's beside.

    Returns :func:`prediction_metrics`' dict, plus "oracle" (the simulator's truth, on
    simulated data only).
    """
    # One process reads every row in file order: world size 1, no shuffle.
    loader = ContractLoader(
        config,
        days,
        dataset_dir=dataset,
        rank=0,
        world_size=1,
        shuffle=False,
        progress=progress,
        id_maps=model.managed_id_maps(),
    )
    metrics = prediction_metrics(config, predict_rows(model, loader))
    metrics["loader"] = {"test": loader.stats.as_dict()}
    oracle = oracle_metrics(config, dataset, days)
    if oracle is not None:
        metrics["oracle"] = oracle
    return metrics


def train_and_evaluate(
    config: ProtorecConfig,
    dataset: str | Path,
    train_days: str,
    test_days: str,
    ctx: DistContext,
    progress: bool = True,
    export_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
) -> dict:
    """Train ``config.model`` on ``train_days`` and return the metrics on ``test_days``.

    With ``export_dir``, the trained model is also exported there (the daily job's format,
    :func:`~protorec.pipeline.export.export_model`, with these metrics). With
    ``tensorboard_dir``, TensorBoard events of the training steps and the test figures.
    """
    torch.manual_seed(config.train.seed)
    model = build_model(config, ebc_device="meta")
    sharded = shard_model(model, ctx, config.train, config.loader.batch_size)
    # Watch heads' tables / ProWTP's codebook from the training days (same on every rank).
    reader = DayReader(dataset, _days(train_days))
    refresh_watch_head(sharded.module, reader)
    # Managed ids: every id of the training days admitted at once, as of their last day.
    ids = refresh_id_maps(
        sharded, config.features, reader, None, reader.days[-1], config.train.seed
    )
    for name, counts in ids.items():
        log.info("ids of %s: %s", name, counts)
    id_maps = sharded.module.managed_id_maps()
    loader = ContractLoader(
        config, train_days, dataset_dir=dataset, progress=False, id_maps=id_maps
    )
    stats = None
    board = TensorBoardLog(tensorboard_dir) if tensorboard_dir and ctx.is_main else None
    for epoch in range(config.train.epochs):
        loader.set_epoch(epoch)
        stats = train_pass(
            sharded,
            loader,
            ctx,
            config.train,
            len(loader),
            progress=progress,
            tensorboard=board,
            step_offset=epoch * len(loader),
        )
        if ctx.is_main:
            log.info("epoch %d: %d steps, %.0f samples/s", epoch, stats.steps, stats.samples_per_s)
    test = ContractLoader(
        config, test_days, dataset_dir=dataset, shuffle=False, progress=False, id_maps=id_maps
    )
    preds = predict_pass(sharded, test, ctx)  # on rank 0 only: the metrics are computed there
    metrics = broadcast_from_rank0(prediction_metrics(config, preds) if preds is not None else None)
    metrics["train"] = {
        "model": config.model.name,
        "steps": stats.steps if stats else 0,
        "samples_per_s": stats.samples_per_s if stats else 0.0,
        "world_size": ctx.world_size,
    }
    if ids:
        metrics["train"]["ids"] = ids
    # What the loader read and repaired (OOV ids per table, filled dense values): the
    # last training pass and the test pass, summed over ranks.
    metrics["loader"] = {
        "train": loader.stats.all_reduce().as_dict(),
        "test": test.stats.all_reduce().as_dict(),
    }
    metrics["computed_on"] = computed_on(
        dataset,
        test_days,
        metrics["overall"]["samples"],
        "every row of the test days",
        config.model.name,
        ctx.world_size,
        train_days=train_days,
    )
    if board is not None:
        board.evaluation(config.train.epochs * len(loader), metrics, prefix="test")
        board.close()
    if export_dir is not None:
        export_model(sharded, config, export_dir, metrics=metrics)
    return metrics
