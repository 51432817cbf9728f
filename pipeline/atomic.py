"""Atomic writes: a reader sees the old file or directory or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def replace_dir(tmp: Path, directory: Path) -> None:
    """Rename ``tmp`` to ``directory``; an existing one is moved aside first, then removed."""
    old = None
    if directory.exists():
        old = directory.parent / f".old-{directory.name}-{uuid.uuid4().hex[:8]}"
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)
