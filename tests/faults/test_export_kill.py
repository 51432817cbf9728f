"""A job killed while it writes the day's export leaves nothing half-published.

The export is written into a temporary folder beside its destination and renamed into
place; the checkpoint that says "exported", LAST_GOOD and the run record come after it.
The kill is the rename never happening (the process dies first): the day must then be
unfinished — no export, no record, no LAST_GOOD — and its rerun publishes it and sweeps
the temporary folder.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
import torch
import yaml

from protorec.jobs.cli import main as protorec
from protorec.pipeline import export
from protorec.pipeline.daily import EXIT_OK, run_day
from protorec.pipeline.distributed import DistContext, init_distributed, shutdown_distributed
from protorec.pipeline.job_config import CONFIG_DIR, load_config

DAY = dt.date(2026, 1, 1)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not an Exception, so nothing catches it)."""


@pytest.fixture
def day(tmp_path):
    cfg = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text())
    cfg["simulator"]["rows_per_day"] = 5_000
    cfg["daily"] = {"min_gate_rows": 100}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert (
        protorec(
            [
                "simulate",
                "--config",
                str(tmp_path / "config.yaml"),
                "--out",
                str(tmp_path / "data"),
                "--start",
                DAY.isoformat(),
                "--days",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    init_distributed("cpu")
    yield load_config(str(tmp_path / "config.yaml")), tmp_path / "data", tmp_path / "wd"
    shutdown_distributed()


def test_kill_during_export_leaves_the_day_unfinished_and_the_rerun_publishes(
    day, monkeypatch, caplog
):
    config, data, wd = day
    ctx = DistContext(0, 1, 0, torch.device("cpu"), "gloo")

    def killed(tmp, directory):
        assert any(tmp.iterdir())  # the export was written, only the rename is missing
        raise Killed

    monkeypatch.setattr(export, "replace_dir", killed)
    # a SIGKILL runs no cleanup either: the temporary folder stays, as after a real kill
    monkeypatch.setattr(export.shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(Killed):
        run_day(config, DAY, wd, ctx, dataset=data, progress=False)
    assert not (wd / "exports" / DAY.isoformat()).exists()
    assert not (wd / "runs").exists() and not (wd / "LAST_GOOD").exists()
    assert not (wd / "checkpoints" / DAY.isoformat()).exists()  # "exported" comes after
    leftover = [p for p in (wd / "exports").iterdir() if p.name.startswith(".tmp-")]
    assert len(leftover) == 1

    monkeypatch.undo()
    (wd / "job.lock").unlink(missing_ok=True)  # a killed process's lock: stale
    with caplog.at_level(logging.INFO, logger="protorec.pipeline"):
        assert run_day(config, DAY, wd, ctx, dataset=data, progress=False) == EXIT_OK
    assert f"removing {leftover[0]}" in caplog.text
    assert not leftover[0].exists()
    assert (wd / "exports" / DAY.isoformat() / "manifest.json").exists()
    assert (wd / "LAST_GOOD").read_text().strip() == DAY.isoformat()
