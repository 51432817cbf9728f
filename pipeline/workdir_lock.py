"""One job per work directory: an exclusive ``fcntl.flock`` on ``W/job.lock``.

The daily job's rank 0 takes the lock before it reads or writes anything in the work
directory and holds it until the run returns; the other ranks follow its outcome (a
broadcast, ``pipeline/daily.py``). A second job finds the lock held and stops at once with
a message naming the holder (host, pid, start time, written into the file by the holder),
changing nothing.

Why ``flock`` and not "create the file if absent": the kernel drops a ``flock`` when the
last descriptor of the open file goes, which includes the death of the process by any
signal (SIGKILL, OOM) or a power loss (the lock does not survive a reboot). So a stale
lock of a dead process needs no pid check and no timeout: the file is still there, with
the dead holder's details in it, but nobody holds the lock, and the next job simply takes
it. A holder that exits normally empties the file when it releases; a non-empty file found
by a job that got the lock is therefore the trace of a job that died, and is logged as a
take-over. ``flock`` is local to one machine (and not reliable on some network file
systems): a work directory shared by jobs on several hosts needs a lock service instead.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = "job.lock"


class WorkdirLocked(RuntimeError):
    """Another live job holds the work directory's lock."""

    def __init__(self, path: Path, holder: dict | None) -> None:
        self.path = path
        self.holder = holder
        who = (
            f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')}"
            if holder
            else "holder not yet recorded"
        )
        super().__init__(f"{path.parent} is in use by another job ({who}; lock {path})")


def _read_holder(fd: int) -> dict | None:
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if not text:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {"raw": text}
    return holder if isinstance(holder, dict) else {"raw": text}


class WorkdirLock:
    """The exclusive lock of one work directory (usable as a context manager).

    >>> import tempfile
    >>> with WorkdirLock(tempfile.mkdtemp()) as lock:
    ...     sorted(lock.holder)
    ['host', 'pid', 'started']
    """

    def __init__(self, workdir: str | Path) -> None:
        self.path = Path(workdir) / LOCK_FILE
        self._fd: int | None = None
        self.holder: dict | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`WorkdirLocked` naming its holder; never waits."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise WorkdirLocked(self.path, holder) from None
        stale = _read_holder(fd)
        if stale is not None:
            log.warning(
                "%s: taking over the lock of a job that ended without releasing it "
                "(%s); its process is gone, so the kernel had dropped its lock",
                self.path,
                stale,
            )
        self.holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(self.holder) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Empty the file (a clean exit leaves no holder behind) and drop the lock."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
