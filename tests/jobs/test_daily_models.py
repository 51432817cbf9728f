"""The daily job with the papers' models, two days each (cold, then warm), one process.

DistProto: dead-prototype re-seeding and prototype-mass drift in the record; ProWTP: the
HVQ-VAE codebook fitted on day 1 and refitted warm, identities kept, on day 2.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from protorec.pipeline.job_config import CONFIG_DIR

from ..conftest import job_env

ROOT = Path(__file__).resolve().parents[2]
JOB = str(ROOT / "jobs" / "train_daily.py")
DAYS = ("2026-01-01", "2026-01-02")


def _config(path: Path, model: dict) -> str:
    cfg = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text())
    cfg["simulator"]["rows_per_day"] = 6_000
    # the gate is not under test here: any AUC passes
    cfg["daily"] = {
        "checkpoint_every_steps": 100,
        "min_gate_rows": 100,
        "max_auc_drop": 1.0,
        "dead_prototype_fraction": 0.5,
        "tensorboard": True,
        "keep_checkpoints": 1,
        "keep_exports": 1,
    }
    cfg.setdefault("train", {})["log_every"] = 2
    cfg["model"] = {**cfg.get("model", {}), **model}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _two_days(tmp_path: Path, model: dict) -> list[dict]:
    config = _config(tmp_path / "config.yaml", model)
    data, workdir = tmp_path / "data", tmp_path / "work"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "protorec.jobs.cli",
            "simulate",
            "--config",
            config,
            "--out",
            str(data),
            "--start",
            DAYS[0],
            "--days",
            "2",
            "--quiet",
        ],
        check=True,
        env=job_env(),
    )
    records = []
    for day in DAYS:
        run = subprocess.run(
            [
                sys.executable,
                JOB,
                "--config",
                config,
                "--dataset",
                str(data),
                "--workdir",
                str(workdir),
                "--date",
                day,
                "--quiet",
                "--device",
                "cpu",
            ],
            env=job_env(),
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        records.append(json.loads((workdir / "runs" / f"{day}.json").read_text()))
    return records


@pytest.mark.slow
def test_distproto_reseeds_and_reports_prototype_drift(tmp_path, scalar_tags):
    first, second = _two_days(tmp_path, {"name": "distproto"})
    assert first["warm_from"] is None and second["warm_from"].endswith(DAYS[0])
    for record in (first, second):
        protos = record["refresh"]["prototypes"]
        assert protos is not None and set(protos) == {"dead_global", "dead_scenario"}
        assert record["prototype_mass"] is not None
    # the mass shift needs yesterday's mass: absent on day 1, a number on day 2
    assert all(d["prototype_mass_shift"] is None for d in first["drift"].values())
    shifts = [d["prototype_mass_shift"] for d in second["drift"].values()]
    assert all(s is not None and s >= 0 for s in shifts)
    # daily.tensorboard: each day's steps (the solver's iterations too) and hold-out figures
    tags = scalar_tags(tmp_path / "work" / "tensorboard" / DAYS[1])
    assert {
        "train/loss",
        "train/loss/align",
        "train/ot/n_iter",
        "train/ot/sweeps",
        "train/samples_per_s",
        "lr/embedding",
        "holdout/overall/auc",
        "holdout/scenario/feed/auc",
    } <= tags


@pytest.mark.slow
def test_prowtp_fits_then_refits_its_codebook_keeping_identities(tmp_path):
    model = {
        "name": "mmoe",
        "watch": {"head": "prowtp", "hidden": [16], "prowtp": {"dim": 8, "regressor_hidden": [8]}},
        "hvqvae": {
            "dim": 4,
            "encoder_hidden": [16],
            "decoder_hidden": [16],
            "num_clusters": 2,
            "num_prototypes": 4,
            "epochs": 5,
            "refit_epochs": 2,
            "sampling": {"num_buckets": 2, "samples_per_bucket": 32, "sample_length": 8},
        },
    }
    first, second = _two_days(tmp_path, model)
    # retention (daily.keep_*: 1): day 2 published, day 1's checkpoint and export pruned
    assert second["retention"] == {"checkpoints": [DAYS[0]], "exports": [DAYS[0]]}
    assert not (tmp_path / "work" / "exports" / DAYS[0]).exists()
    assert first["refresh"]["codebook"] is None  # the first fit has nothing to compare with
    codebook = second["refresh"]["codebook"]
    assert codebook is not None and codebook["identity_kept"] is True
    assert codebook["median_relative_movement"] >= 0
    assert second["metrics"]["overall"]["xauc"] is not None  # the head's figures are recorded
