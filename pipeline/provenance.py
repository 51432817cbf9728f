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


def git_commit() -> str:
    """``git rev-parse --short HEAD`` of the source tree, or ``unknown``.

    The strict editable install links each file: resolve the link to reach the checkout.
    An installed wheel, or a machine without git, has no commit to give.
    """
    try:
        done = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def code_version() -> str:
    """``protorec <version> (git <commit>)``, the commit ``unknown`` outside a checkout.

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
