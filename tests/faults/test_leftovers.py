"""Start-up sweeps what killed runs left (``.tmp-*``, ``.old-*``), logged with sizes."""

from __future__ import annotations

import datetime as dt
import logging

import torch

from protorec.pipeline.daily import EXIT_NO_DATA, run_day
from protorec.pipeline.distributed import DistContext
from protorec.pipeline.job_config import load_config


def test_daily_job_sweeps_leftovers_at_start(tmp_path, caplog):
    wd = tmp_path / "wd"
    leftovers = [
        wd / "checkpoints" / ".tmp-2026-01-02.partial-1a2b3c4d",
        wd / "checkpoints" / ".tmp-2026-01-01-5e6f7a8b",
        wd / "checkpoints" / ".old-2026-01-01-9c0d1e2f",
        wd / "exports" / ".tmp-2026-01-01-3a4b5c6d",
    ]
    for i, path in enumerate(leftovers):
        path.mkdir(parents=True)
        (path / "__0_0.distcp").write_bytes(b"x" * (1000 + i))
    kept = wd / "checkpoints" / "2026-01-01"
    kept.mkdir()
    (kept / "meta.json").write_text("{}")
    (wd / "exports" / "2026-01-01").mkdir()

    ctx = DistContext(0, 1, 0, torch.device("cpu"), "gloo")
    with caplog.at_level(logging.WARNING, logger="protorec.pipeline.daily"):
        status = run_day(
            load_config("simulator"),
            dt.date(2026, 1, 2),
            wd,
            ctx,
            dataset=tmp_path / "no-data",
            progress=False,
        )
    assert status == EXIT_NO_DATA  # the sweep comes first, under the lock
    assert not any(p.exists() for p in leftovers)
    assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == ["2026-01-01"]
    assert sorted(p.name for p in (wd / "exports").iterdir()) == ["2026-01-01"]
    for i, path in enumerate(leftovers):
        assert f"removing {path} ({1000 + i:,} bytes)" in caplog.text
