"""`protorec evaluate` on a tiny export: the figures of the trained model, watch time too."""

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from protorec.pipeline.experiment import evaluate_model, predict_rows, prediction_metrics
from protorec.pipeline.export import load_export
from protorec.pipeline.job_config import load_config
from protorec.pipeline.loader import ContractLoader
from protorec.pipeline.simulator import simulate

TEST_DAYS = "2026-01-02..2026-01-03"

# Trains a tiny MMoE for one day on one rank, keeps the sharded model's own predictions of
# the test days, and exports it: what evaluate reads back must give the same.
TRAIN_AND_EXPORT = textwrap.dedent(f"""
    import sys
    import numpy as np
    from protorec.pipeline.model_factory import build_model
    from protorec.pipeline.distributed import init_distributed, shutdown_distributed
    from protorec.pipeline.export import export_model
    from protorec.pipeline.job_config import load_config
    from protorec.pipeline.loader import ContractLoader
    from protorec.pipeline.trainer import predict_pass, shard_model, train_pass
    from protorec.pipeline.variants import apply_overrides

    data, out = sys.argv[1], sys.argv[2]
    config = apply_overrides(load_config("simulator"), {{
        "model.mmoe.num_experts": 2, "model.mmoe.expert_hidden": [16],
        "model.tower.hidden": [8]}})
    ctx = init_distributed("cpu")
    sharded = shard_model(build_model(config, "meta"), ctx, config.train, 512)
    train_pass(sharded, ContractLoader(config, "2026-01-01", data), ctx, config.train,
               progress=False)
    test = ContractLoader(config, "{TEST_DAYS}", data, shuffle=False)
    np.savez(out + "/preds.npz", **predict_pass(sharded, test, ctx))
    export_model(sharded, config, out + "/export")
    shutdown_distributed()
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    config = load_config("simulator")
    sim = dataclasses.replace(config.simulator, rows_per_day=3000)
    simulate(root / "data", dt.date(2026, 1, 1), 3, sim, config.data.scenarios, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    run = subprocess.run(
        [sys.executable, "-c", TRAIN_AND_EXPORT, str(root / "data"), str(root)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return root


def test_evaluate_gives_the_trained_models_figures(exported, tmp_path):
    out = tmp_path / "metrics.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "protorec.jobs.cli",
            "evaluate",
            "--model",
            str(exported / "export"),
            "--dataset",
            str(exported / "data"),
            "--dates",
            TEST_DAYS,
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| overall |" in run.stdout and "oracle" in run.stdout
    assert "deprecated" not in run.stderr
    metrics = json.loads(out.read_text())
    config, _ = load_export(exported / "export")
    trained = prediction_metrics(config, dict(np.load(exported / "preds.npz")))
    assert metrics["overall"]["samples"] == trained["overall"]["samples"] == 6000
    for scope in ["overall", *trained["per_scenario"]]:
        got = metrics["overall"] if scope == "overall" else metrics["per_scenario"][scope]
        want = trained["overall"] if scope == "overall" else trained["per_scenario"][scope]
        for key in ("auc", "gauc", "ndcg@10", "logloss"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), (scope, key)
    assert metrics["oracle"]["overall"]["auc"] > metrics["overall"]["auc"]
    on = metrics["computed_on"]
    assert on["dataset"] == str((exported / "data").resolve()) and on["days"] == TEST_DAYS
    assert on["rows"] == 6000 and on["split"] == "every row of the days"
    assert on["model"] == config.model.name and on["world_size"] == 1


def test_evaluate_reads_the_old_data_flag_and_prints_without_out(exported, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "protorec.jobs.cli",
            "evaluate",
            "--model",
            str(exported / "export"),
            "--data",
            str(exported / "data"),
            "--dates",
            "2026-01-03",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "--data is deprecated, use --dataset" in run.stderr
    assert "on 2026-01-03:" in run.stdout and "| overall |" in run.stdout
    assert list(tmp_path.iterdir()) == []  # no --out: nothing written


def test_the_loaded_export_predicts_what_the_sharded_model_did(exported):
    config, model = load_export(exported / "export")
    preds = predict_rows(
        model,
        ContractLoader(config, TEST_DAYS, exported / "data", rank=0, world_size=1, shuffle=False),
    )
    trained = np.load(exported / "preds.npz")
    np.testing.assert_array_equal(preds["user_id"], trained["user_id"])
    np.testing.assert_allclose(preds["click_prob"], trained["click_prob"], atol=1e-6)


class _FakeWatchModel(nn.Module):
    """A click model that also predicts watch time: half of each item's duration."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def predict(self, batch):
        return {**self.model.predict(batch), "watch_pred_ms": 0.5 * batch.duration_ms}

    def managed_id_maps(self):
        return self.model.managed_id_maps()


def test_watch_figures_appear_when_the_model_predicts_watch_time(exported):
    config, model = load_export(exported / "export")
    data = exported / "data"
    click_only = evaluate_model(config, model, data, "2026-01-03")
    assert "xauc" not in click_only["overall"]
    with_watch = evaluate_model(config, _FakeWatchModel(model), data, "2026-01-03")
    watch = with_watch["overall"]
    assert {"mae", "rmse", "xauc", "xgauc"} <= set(watch)
    assert watch["xauc"] > 0.5  # longer videos are watched longer
    assert watch["auc"] == click_only["overall"]["auc"]
    assert with_watch["per_scenario"]["feed"]["xauc"] is not None
    # the oracle's expected watch time ranks better than half the duration
    assert with_watch["oracle"]["overall"]["xauc"] > watch["xauc"]
    assert torch.is_tensor(
        _FakeWatchModel(model).predict(
            next(iter(ContractLoader(config, "2026-01-03", data, shuffle=False)))
        )["watch_pred_ms"]
    )
