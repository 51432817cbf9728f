"""`protorec train` end to end on a small simulated data set, in a subprocess (1 rank)."""

import json
import os
import subprocess
import sys

import yaml

from protorec.pipeline.experiment import evaluate_model
from protorec.pipeline.export import load_export
from protorec.pipeline.job_config import CONFIG_DIR


def test_train_job_learns_and_reports_every_scenario(tmp_path, scalar_tags):
    cfg = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text())
    cfg["simulator"]["rows_per_day"] = 30_000
    cfg["data"]["dataset"] = str(tmp_path / "data")
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cli = [sys.executable, "-m", "protorec.jobs.cli"]
    subprocess.run(
        [
            *cli,
            "simulate",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "data"),
            "--start",
            "2026-01-01",
            "--days",
            "3",
            "--quiet",
        ],
        check=True,
        env=env,
    )
    out = tmp_path / "m.json"
    run = subprocess.run(
        [
            *cli,
            "train",
            "--config",
            str(config),
            "--train",
            "2026-01-01..2026-01-02",
            "--test",
            "2026-01-03",
            "--out",
            str(out),
            "--quiet",
            "--device",
            "cpu",
            "--export",
            str(tmp_path / "export"),
            "--tensorboard",
            str(tmp_path / "tb"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # TorchRec's deprecations are silenced at their source; protorec raises none of its own.
    assert "FutureWarning" not in run.stderr and "DeprecationWarning" not in run.stderr
    # nor TorchRec's planner notices or torch's is_fx_tracing line (pipeline/quiet.py)
    warnings = [line for line in run.stderr.splitlines() if " WARNING " in line or ":W" in line]
    assert warnings == []
    assert "torch thread(s) per process: OMP_NUM_THREADS=1" in run.stderr
    metrics = json.loads(out.read_text())
    assert set(metrics["per_scenario"]) == set(cfg["data"]["scenario_names"])
    # what the loader read and repaired, per table, is in the JSON and the summary
    test_rows = metrics["loader"]["test"]
    assert test_rows["rows_read"] == metrics["overall"]["samples"]
    assert set(test_rows["oov"]) == {f["name"] for f in cfg["features"]["sparse"]}
    assert "out-of-vocabulary ids: " in run.stdout and " user 0.0%" in run.stdout
    assert metrics["overall"]["samples"] == sum(
        s["samples"] for s in metrics["per_scenario"].values()
    )
    # better than chance everywhere, worse than the simulator's truth
    assert all(s["auc"] > 0.55 for s in metrics["per_scenario"].values())
    assert metrics["overall"]["auc"] < metrics["oracle"]["overall"]["auc"]
    assert "| overall |" in run.stdout
    # --export: the daily job's export, which scores the test days exactly as the job did
    config_out, model = load_export(tmp_path / "export")
    again = evaluate_model(config_out, model, tmp_path / "data", "2026-01-03")
    assert abs(again["overall"]["auc"] - metrics["overall"]["auc"]) < 1e-6
    assert abs(again["overall"]["logloss"] - metrics["overall"]["logloss"]) < 1e-6
    # --tensorboard: the steps' losses and the test figures per scenario
    tags = scalar_tags(tmp_path / "tb")
    assert {
        "train/loss",
        "train/loss/click",
        "train/samples_per_s",
        "lr/dense",
        "test/overall/auc",
        "test/scenario/feed/auc",
    } <= tags
    recorded = json.loads((tmp_path / "export" / "metrics.json").read_text())
    on = recorded["computed_on"]
    assert on["days"] == "2026-01-03" and on["train_days"] == "2026-01-01..2026-01-02"
    assert on["dataset"] == str((tmp_path / "data").resolve())
    assert on["rows"] == metrics["overall"]["samples"] and on["model"] == "mmoe"
    assert on["world_size"] == 1 and on["split"] == "every row of the test days"
