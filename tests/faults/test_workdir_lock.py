"""One job per work directory: a second job exits with EXIT_LOCKED naming the holder.

The holder is a real process that takes the lock and says so on stdout; the test waits
for that line (no sleeps), then starts the daily job on the same work directory.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from protorec.pipeline.daily import EXIT_LOCKED
from protorec.pipeline.workdir_lock import LOCK_FILE, WorkdirLock, WorkdirLocked

from ..conftest import job_env

HOLDER = (
    "import sys\n"
    "from protorec.pipeline.workdir_lock import WorkdirLock\n"
    "lock = WorkdirLock(sys.argv[1]); lock.acquire()\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"  # hold until the test closes stdin
    "lock.release()\n"
)


@pytest.fixture
def holder(tmp_path):
    workdir = tmp_path / "wd"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(workdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=job_env(),
    )
    assert proc.stdout.readline().strip() == "held"
    yield workdir, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_second_daily_job_exits_locked_naming_the_holder(holder, tmp_path):
    workdir, proc = holder
    dataset = tmp_path / "data"  # a data set folder (its days are read after the lock)
    dataset.mkdir()
    job = subprocess.run(
        [
            sys.executable,
            "-m",
            "protorec.jobs.train_daily",
            "--config",
            "simulator",
            "--date",
            "2026-01-01",
            "--workdir",
            str(workdir),
            "--dataset",
            str(dataset),
            "--device",
            "cpu",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=job_env(),
        timeout=300,
    )
    assert job.returncode == EXIT_LOCKED == 5, job.stderr
    lines = [line for line in job.stderr.splitlines() if "in use by another job" in line]
    assert len(lines) == 1, job.stderr
    assert f"pid {proc.pid}" in lines[0] and socket.gethostname() in lines[0]
    assert "started 20" in lines[0]
    assert sorted(p.name for p in workdir.iterdir()) == [LOCK_FILE]  # nothing else written

    with pytest.raises(WorkdirLocked, match=f"pid {proc.pid}"):
        WorkdirLock(workdir).acquire()
    proc.stdin.close()  # the holder releases and exits
    assert proc.wait(timeout=60) == 0
    assert (workdir / LOCK_FILE).read_text() == ""  # a clean release leaves no holder
    with WorkdirLock(workdir) as lock:
        assert lock.holder["pid"] == os.getpid()


def test_lock_of_a_killed_job_is_taken_over_and_logged(holder, caplog):
    workdir, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert f'"pid": {proc.pid}' in (workdir / LOCK_FILE).read_text()  # its trace remains
    with caplog.at_level(logging.WARNING, logger="protorec.pipeline.workdir_lock"):
        with WorkdirLock(workdir) as lock:
            assert lock.holder["pid"] == os.getpid()
    assert "taking over" in caplog.text and str(proc.pid) in caplog.text
