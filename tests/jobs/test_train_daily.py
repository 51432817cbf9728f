"""The daily job end to end: kill-and-resume, idempotent re-runs, the gate, the export, Prometheus.

Each run is a real process (``jobs/train_daily.py``, under torchrun for 2 ranks) on a small
simulated data set: 20,000 rows a day, 18 training steps of 2 x 512 rows.
"""

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml

from protorec.pipeline.daily_report import daily_table
from protorec.pipeline.job_config import CONFIG_DIR

from ..conftest import job_env

ROOT = Path(__file__).resolve().parents[2]
JOB = str(ROOT / "jobs" / "train_daily.py")
TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))


def _write_config(path: Path, **sections) -> str:
    cfg = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text())
    cfg["simulator"]["rows_per_day"] = 20_000
    cfg["daily"] = {"checkpoint_every_steps": 5, "min_gate_rows": 100}
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Config and 3 simulated days, shared by the tests of this module (read-only)."""
    root = tmp_path_factory.mktemp("daily")
    config = _write_config(root / "config.yaml")
    data = root / "data"
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
            "2026-01-01",
            "--days",
            "3",
            "--quiet",
        ],
        check=True,
        env=job_env(),
    )
    return root, config, str(data)


def _run(config, data, workdir, date, procs=1, env=None, force=False):
    args = [
        JOB,
        "--config",
        config,
        "--dataset",
        data,
        "--workdir",
        str(workdir),
        "--date",
        date,
        "--quiet",
        "--device",
        "cpu",
        *(["--force"] if force else []),
    ]
    cmd = (
        [TORCHRUN, "--standalone", f"--nproc_per_node={procs}", *args]
        if procs > 1
        else [sys.executable, *args]
    )
    return subprocess.run(cmd, env=env or job_env(), capture_output=True, text=True)


def _weights(workdir, date):
    return torch.load(Path(workdir, "exports", date, "model.pt"), weights_only=True)


def _record(workdir, date):
    return json.loads(Path(workdir, "runs", f"{date}.json").read_text())


def test_killed_rank_resumes_without_training_a_sample_twice(sim, tmp_path):
    _, config, data = sim
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    ok = _run(config, data, whole, "2026-01-01", procs=2)
    assert ok.returncode == 0, ok.stderr[-3000:]

    # rank 1 dies right after step 13; the last checkpoint is the one of step 10
    crash = _run(
        config, data, killed, "2026-01-01", procs=2, env=job_env(PROTOREC_KILL_AT_STEP="1:13")
    )
    assert crash.returncode != 0
    assert not (killed / "runs").exists() and not (killed / "exports").exists()
    assert (killed / "checkpoints" / "2026-01-01.partial" / "meta.json").exists()

    again = _run(config, data, killed, "2026-01-01", procs=2)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    record = _record(killed, "2026-01-01")
    assert record["resumed_at"] == {"epoch": 0, "batch": 10}
    assert record["train"]["steps"] == 18 - 10
    assert not (killed / "checkpoints" / "2026-01-01.partial").exists()
    # the resumed model is the uninterrupted one, bit for bit
    a, b = _weights(whole, "2026-01-01"), _weights(killed, "2026-01-01")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # tables sharded over 2 ranks, gathered into one file, score as they did sharded
    _assert_export_scores_as_trained(whole, data, "2026-01-01")


def test_changed_config_warm_starts_what_still_matches(sim, tmp_path):
    _, config, data = sim
    wd = tmp_path / "wd"
    assert _run(config, data, wd, "2026-01-01").returncode == 0
    # day 2: a watch head is added and the author table renamed (rename map given)
    cfg = yaml.safe_load(Path(config).read_text())
    cfg["model"].setdefault("watch", {})["head"] = "tr"
    next(f for f in cfg["features"]["sparse"] if f["name"] == "author")["name"] = "creator"
    cfg["daily"]["warm_start_rename"] = {
        "sparse_arch.embedding_bags.author": "sparse_arch.embedding_bags.creator"
    }
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    day2 = _run(str(changed), data, wd, "2026-01-02")
    assert day2.returncode == 0, day2.stderr[-3000:]
    warm = _record(wd, "2026-01-02")["refresh"]["warm_start"]
    assert warm["renamed"] == {
        "sparse_arch.embedding_bags.creator.weight": "sparse_arch.embedding_bags.author.weight"
    }
    watch = [k for k in warm["initialised"] if ".towers.watch." in k]
    assert watch and not warm["skipped"] and warm["loaded"] > 0
    assert f"{watch[0]} initialised (not in the checkpoint)" in day2.stderr
    assert "the gate has no baseline today" in day2.stderr
    # a rename naming nothing in yesterday's checkpoint (a typo) stops the day: exit 2
    cfg["daily"]["warm_start_rename"] = {"sparse_arch.embedding_bags.auhtor": "x"}
    changed.write_text(yaml.safe_dump(cfg))
    day3 = _run(str(changed), data, wd, "2026-01-03")
    assert day3.returncode == 2, day3.stderr[-3000:]
    assert "daily.warm_start_rename.sparse_arch.embedding_bags.auhtor: names no tensor" in (
        day3.stderr
    )
    assert not (wd / "runs" / "2026-01-03.json").exists()


def test_managed_ids_carry_across_days_and_world_sizes(sim, tmp_path):
    _, config, data = sim
    cfg = yaml.safe_load(Path(config).read_text())
    user = next(f for f in cfg["features"]["sparse"] if f["name"] == "user")
    user.update(managed=True)
    cfg["daily"]["max_auc_drop"] = 1.0  # ids are under test here, not the gate
    managed = tmp_path / "managed.yaml"
    managed.write_text(yaml.safe_dump(cfg))
    wd = tmp_path / "wd"
    day1 = _run(str(managed), data, wd, "2026-01-01", procs=2)
    assert day1.returncode == 0, day1.stderr[-3000:]
    day2 = _run(str(managed), data, wd, "2026-01-02")  # warm start on 1 rank
    assert day2.returncode == 0, day2.stderr[-3000:]
    # saving and loading TorchRec's ShardedTensors: torch's FutureWarnings are silenced
    # at their source (pipeline/quiet.py)
    assert "Warning" not in day1.stderr + day2.stderr
    ids1 = _record(wd, "2026-01-01")["refresh"]["ids"]["user"]
    ids2 = _record(wd, "2026-01-02")["refresh"]["ids"]["user"]
    assert ids1["admitted"] == ids1["rows_used"] > 0 and ids1["overflow"] == 0
    # day 2 admits only the ids it is the first to see; day 1's keep their rows
    assert 0 < ids2["admitted"] < ids2["seen"]
    assert ids2["rows_used"] == ids1["rows_used"] + ids2["admitted"]
    raw1 = _weights(wd, "2026-01-01")["id_maps.user.raw"]
    raw2 = _weights(wd, "2026-01-02")["id_maps.user.raw"]
    used = raw1 != -1
    assert torch.equal(raw2[used], raw1[used])


def test_rerun_gate_export_and_monitoring(sim, tmp_path, pushgateway, unused_port):
    _, config, data = sim
    wd = tmp_path / "wd"
    # day 1, monitoring down: the job still publishes, and warns
    day1 = _run(
        config, data, wd, "2026-01-01", env=job_env(PROTOREC_PUSHGATEWAY=f"127.0.0.1:{unused_port}")
    )
    assert day1.returncode == 0, day1.stderr[-3000:]
    assert "not pushed" in day1.stderr
    assert "cold start" in day1.stderr
    manifest = wd / "exports" / "2026-01-01" / "manifest.json"
    before = (manifest.read_bytes(), manifest.stat().st_mtime_ns)

    # re-running a finished date changes nothing
    rerun = _run(config, data, wd, "2026-01-01")
    assert rerun.returncode == 0 and "already done" in rerun.stderr
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == before

    # day 2 with a learning rate that wrecks the model: the gate refuses, exit 3
    wrecked = _write_config(
        tmp_path / "wrecked.yaml", train={"dense_lr": 3.0, "embedding_lr": 50.0}
    )
    day2 = _run(wrecked, data, wd, "2026-01-02", env=job_env(PROTOREC_PUSHGATEWAY=pushgateway))
    assert day2.returncode == 3, day2.stderr[-3000:]
    assert "gate REFUSED: AUC fell by more than 0.01 in:" in day2.stderr
    assert not (wd / "exports" / "2026-01-02").exists()
    assert (wd / "LAST_GOOD").read_text().strip() == "2026-01-01"
    record = _record(wd, "2026-01-02")
    assert record["status"] == "refused" and not record["gate"]["passed"]
    assert record["warm_from"].endswith("2026-01-01")
    text = urllib.request.urlopen(f"http://{pushgateway}/metrics", timeout=5).read().decode()
    job = 'job="protorec_train_daily"'
    assert f'protorec_job_exported{{instance="",{job}}} 0' in text
    assert f'protorec_auc{{instance="",{job},scenario="feed"}}' in text
    assert f'protorec_watch_ratio_shift{{instance="",{job},scenario="live"}}' in text
    assert f'protorec_rows_quarantined{{instance="",{job},scenario="search"}} 0' in text
    assert f'protorec_job_samples{{instance="",{job}}}' in text

    # a day whose data has not landed: status 4, nothing written
    missing = _run(config, data, wd, "2026-01-09")
    assert missing.returncode == 4 and "the day's data has not landed" in missing.stderr
    assert not (wd / "runs" / "2026-01-09.json").exists()

    # day 3 warm-starts from day 1, the last published model, not from the refused day 2
    day3 = _run(config, data, wd, "2026-01-03")
    assert day3.returncode == 0, day3.stderr[-3000:]
    assert _record(wd, "2026-01-03")["warm_from"].endswith("2026-01-01")
    table = daily_table(wd).splitlines()
    assert len(table) == 2 + 3 * 6  # header, then overall + 5 scenarios a day
    refused_by = record["gate"]["refused_by"]
    assert refused_by and all(name in day2.stderr for name in refused_by)
    assert table[2 + 6].startswith(
        f"| 2026-01-02 | refused by {', '.join(refused_by)} | overall | "
    )
    # the export's figures say what they were measured on
    on = json.loads((wd / "exports" / "2026-01-03" / "metrics.json").read_text())["computed_on"]
    assert on["dataset"] == str(Path(data).resolve()) and on["days"] == "2026-01-03"
    assert on["rows"] == _record(wd, "2026-01-03")["metrics"]["overall"]["samples"]
    assert on["split"].startswith("hold-out: 10% of the day's rows")
    assert on["model"] == "mmoe" and on["world_size"] == 1

    _assert_export_scores_as_trained(wd, data, "2026-01-03")


def _assert_export_scores_as_trained(workdir, data, date):
    """A fresh process, without torch.distributed, scores the held-out rows as the job did."""
    check = subprocess.run(
        [sys.executable, "-c", _EXPORT_CHECK, str(Path(workdir, "exports", date)), data, date],
        env=job_env(),
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    fresh = json.loads(check.stdout)
    trained = _record(workdir, date)["metrics"]
    assert fresh["samples"] == trained["overall"]["samples"]
    assert fresh["auc"] == pytest.approx(trained["overall"]["auc"], abs=1e-6)
    assert fresh["logloss"] == pytest.approx(trained["overall"]["logloss"], abs=1e-6)


_EXPORT_CHECK = """
import json, sys
import torch.distributed as dist
from protorec.pipeline.export import load_export
from protorec.pipeline.loader import ContractLoader
from protorec.pipeline.metrics import auc, logloss
import numpy as np
config, model = load_export(sys.argv[1])
loader = ContractLoader(config, f"{sys.argv[3]}..{sys.argv[3]}", sys.argv[2],
                        split="holdout", holdout_fraction=config.daily.holdout_fraction,
                        shuffle=False)
y, p = [], []
for batch in loader:
    y.append(batch.click.numpy())
    p.append(model.predict(batch)["click_prob"].detach().numpy())
assert not dist.is_initialized()
y, p = np.concatenate(y), np.concatenate(p)
print(json.dumps({"samples": int(y.size), "auc": auc(y, p), "logloss": logloss(y, p)}))
"""
