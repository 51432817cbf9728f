"""`protorec predict` on tiny exports: every row scored, in the data's order, streamed."""

import dataclasses
import datetime as dt
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from protorec.jobs.cli import main
from protorec.pipeline import export
from protorec.pipeline.day_reader import DayReader
from protorec.pipeline.distributed import init_distributed, shutdown_distributed
from protorec.pipeline.experiment import predict_rows
from protorec.pipeline.export import export_model, load_export
from protorec.pipeline.job_config import load_config
from protorec.pipeline.loader import ContractLoader
from protorec.pipeline.manifest import SIGNING_KEY_ENV
from protorec.pipeline.model_factory import build_model
from protorec.pipeline.simulator import simulate
from protorec.pipeline.trainer import shard_model, train_pass
from protorec.pipeline.variants import apply_overrides, variant_config

DAYS = "2026-01-02..2026-01-03"
TINY = {
    "model.mmoe.num_experts": 2,
    "model.mmoe.expert_hidden": [16],
    "model.tower.hidden": [8],
    "loader.batch_size": 256,
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Simulated days 01..03 and exports of a click and a watch model."""
    root = tmp_path_factory.mktemp("predict")
    config = apply_overrides(load_config("simulator"), TINY)
    sim = dataclasses.replace(config.simulator, rows_per_day=1000)
    simulate(root / "data", dt.date(2026, 1, 1), 3, sim, config.data.scenarios, progress=False)
    key = os.environ.pop(SIGNING_KEY_ENV, None)
    ctx = init_distributed("cpu")
    try:
        for name, cfg in (("mmoe", config), ("tr", variant_config(config, "tr"))):
            torch.manual_seed(0)
            sharded = shard_model(build_model(cfg, "meta"), ctx, cfg.train, 256)
            train_pass(
                sharded,
                ContractLoader(cfg, "2026-01-01", root / "data"),
                ctx,
                cfg.train,
                progress=False,
            )
            export_model(sharded, cfg, root / name)
    finally:
        shutdown_distributed()
        if key is not None:
            os.environ[SIGNING_KEY_ENV] = key
    return root


def _predict(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "protorec.jobs.cli", "predict", *args],
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("name", ["mmoe", "tr"])
def test_predict_scores_every_row_as_predict_rows_does(exported, tmp_path, name):
    out = tmp_path / "scores" / "p.parquet"
    run = _predict(
        "--model",
        str(exported / name),
        "--dataset",
        str(exported / "data"),
        "--dates",
        DAYS,
        "--out",
        str(out),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert [p.name for p in out.parent.iterdir()] == ["p.parquet"]  # no temporary left
    scores = pq.read_table(out)
    config, model = load_export(exported / name)
    reader = DayReader(exported / "data", [dt.date(2026, 1, 2), dt.date(2026, 1, 3)])
    assert len(reader.row_groups) == 2  # the stream crosses days, 4 batches each
    keys = reader.read(["user_id", "item_id", "scenario", "ts_ms"])
    assert scores.num_rows == reader.num_rows == 2000
    assert scores.select(keys.column_names).to_pydict() == keys.to_pydict()
    loader = ContractLoader(config, DAYS, exported / "data", rank=0, world_size=1, shuffle=False)
    expected = predict_rows(model, loader)
    np.testing.assert_allclose(
        scores.column("p_click").to_numpy(), expected["click_prob"], rtol=0, atol=1e-6
    )
    if name == "tr":
        np.testing.assert_allclose(
            scores.column("watch_pred_ms").to_numpy(),
            expected["watch_pred_ms"],
            rtol=1e-5,
            atol=1e-3,
        )
        assert scores.column("watch_pred_ms").to_numpy().std() > 0
    else:
        assert "watch_pred_ms" not in scores.column_names


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--model": "nowhere"}, "no readable manifest.json"),
        ({"--dates": "2026-01-03..2026-01-02"}, "ends before it starts"),
        ({"--dates": "2026-13-01"}, "month must be in 1..12"),
        ({"--dates": "2026-01-03..2026-01-05"}, "no Parquet files for day 2026-01-04"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(exported, tmp_path, change, message, capsys, monkeypatch):
    def never(*args):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(export, "load_export", never)
    args = {
        "--model": str(exported / "mmoe"),
        "--dataset": str(exported / "data"),
        "--dates": DAYS,
        "--out": str(tmp_path / "p.parquet"),
        **change,
    }
    assert main(["predict", *[x for pair in args.items() for x in pair]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_leaves_no_file(exported, tmp_path, monkeypatch):
    from protorec.pipeline import predict

    config, model = load_export(exported / "mmoe")
    reader = DayReader(exported / "data", [dt.date(2026, 1, 2)])
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return scored(*args)

    scored = predict._scored
    monkeypatch.setattr(predict, "_scored", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        predict.predict_to_parquet(config, model, reader, tmp_path / "p.parquet")
    assert list(tmp_path.iterdir()) == []
