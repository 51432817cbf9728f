"""Retention of the daily job's work directory: the newest N checkpoints and exports.

Run after a day is published (rank 0). What a resume or a warm start needs is never
removed: ``*.partial`` checkpoints (a killed run's resume point), the checkpoint and the
export of the day ``LAST_GOOD`` names (the model served and the next warm start), and any
day after the one just published. A backfill of an old date warm-starts from the newest
published checkpoint before it that is still kept (cold when none is: logged by the job).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _prune_dir(folder: Path, keep: int, protected: set[str], upto: str) -> list[str]:
    if keep <= 0 or not folder.is_dir():
        return []
    days = sorted(p.name for p in folder.iterdir() if _DATE.match(p.name) and p.name <= upto)
    removed = []
    for name in days[:-keep] if len(days) > keep else []:
        if name in protected:
            continue
        path = folder / name
        size = _size(path)
        shutil.rmtree(path)
        log.info("retention: removed %s (%.1f MB)", path, size / 1e6)
        removed.append(name)
    return removed


def prune(
    root: str | Path, day: str, keep_checkpoints: int, keep_exports: int
) -> dict[str, list[str]]:
    """Remove end-of-day checkpoints and exports older than the newest ``keep_*`` of each.

    Args:
        root: the work directory.
        day: the date just published (``YYYY-MM-DD``); later dates are left alone.
        keep_checkpoints: how many of the newest checkpoints to keep; 0 keeps all.
        keep_exports: how many of the newest exports to keep; 0 keeps all.

    Returns:
        The dates removed, under "checkpoints" and "exports".
    """
    root = Path(root)
    try:
        last_good = (root / "LAST_GOOD").read_text().strip()
    except FileNotFoundError:
        last_good = ""
    protected = {last_good} if last_good else set()
    return {
        "checkpoints": _prune_dir(root / "checkpoints", keep_checkpoints, protected, day),
        "exports": _prune_dir(root / "exports", keep_exports, protected, day),
    }
