"""What a result was computed with: protorec's version and the commit of its source.

Files a person reads later (compare runs, exports' metrics, ``evaluate``'s JSON) record
it, and the data their figures were measured on (:func:`computed_on`), so that figures of
two versions or of two data sets are not mistaken for one.
"""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def package_version() -> str:
    """The installed version of protorec, or ``unknown (not installed)``."""
    try:
        return version("protorec")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _git(source: Path, *args: str) -> str | None:
    """``git -C source ARGS``'s output, or None (no git, not a checkout)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(source), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def git_commit(source: Path | None = None) -> str:
    """``git rev-parse --short HEAD`` of the source tree, ``+dirty`` if changed, or ``unknown``.

    ``+dirty``: ``git status`` shows changes to tracked files (untracked files do not
    count), so the commit alone does not say what ran. The strict editable install links
    each file: resolve the link to reach the checkout. An installed wheel, or a machine
    without git, has no commit to give.

    Args:
        source: a folder of the checkout; by default this file's.
    """
    source = source or Path(__file__).resolve().parent
    commit = (_git(source, "rev-parse", "--short", "HEAD") or "").strip()
    if not commit:
        return "unknown"
    changes = _git(source, "status", "--porcelain", "--untracked-files=no")
    return commit + ("+dirty" if changes else "")


def code_version() -> str:
    """``protorec <version> (git <commit>[+dirty])``, the commit ``unknown`` outside a checkout.

    >>> code_version().startswith("protorec ")
    True
    """
    return f"protorec {package_version()} (git {git_commit()})"


def computed_on(
    dataset: str | Path,
    days: str,
    rows: int,
    split: str,
    model: str,
    world_size: int,
    train_days: str | None = None,
) -> dict[str, Any]:
    """The ``computed_on`` section of a metrics file: what its figures were measured on.

    Args:
        dataset: the contract data set read.
        days: the evaluated days, ``A..B``.
        rows: the rows the figures count (the overall ``samples``).
        split: which of the days' rows, in words (every row, the hold-out slice, ...).
        model: the model's name (``model.name``).
        world_size: processes that trained (and evaluated) it.
        train_days: the training days, where they differ from ``days``.

    >>> computed_on("data", "2026-01-03", 10, "every row", "mmoe", 1)["split"]
    'every row'
    """
    section: dict[str, Any] = {"dataset": str(Path(dataset).resolve()), "days": days}
    if train_days is not None:
        section["train_days"] = train_days
    section.update(
        rows=rows, split=split, model=model, world_size=world_size, code_version=code_version()
    )
    return section
