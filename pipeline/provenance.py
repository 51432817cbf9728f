"""What a result was computed with: protorec's version and the commit of its source.

Files a person reads later (compare runs, exports' metrics, ``evaluate``'s JSON) record
it, so that figures from two versions are not mistaken for one.
"""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


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
            capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def code_version() -> str:
    """``protorec <version> (git <commit>)``, the commit ``unknown`` outside a checkout.

    >>> code_version().startswith("protorec ")
    True
    """
    return f"protorec {package_version()} (git {git_commit()})"
