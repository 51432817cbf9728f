"""Checkpoints: torch.distributed.checkpoint of the sharded model and its optimiser.

Layout of one checkpoint (``workdir/checkpoints/<name>/``)::

    __0_0.distcp, __1_0.distcp, ...   one file per rank (DCP)
    .metadata                         DCP's index
    meta.json                         ours: what was saved, written last

A checkpoint is *good* when ``meta.json`` exists and says ``"complete": true``: it is
written by rank 0 after every rank finished its shard and the directory has been
renamed into place, so a crash at any point leaves either the old checkpoint or a
temporary directory that :func:`find_latest` ignores.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from protorec.pipeline.atomic import replace_dir
from protorec.pipeline.distributed import broadcast_from_rank0
from protorec.pipeline.trainer import ShardedModel

META = "meta.json"


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _state(sharded: ShardedModel) -> dict[str, Any]:
    # A fresh dense optimiser has no state yet: create it so that DCP can load into it.
    sharded.optimizer.init_state()
    return {"model": sharded.dmp.state_dict(), "optim": sharded.optimizer.state_dict()}


def save_checkpoint(sharded: ShardedModel, directory: str | Path, meta: dict[str, Any]) -> Path:
    """Save every rank's shards and ``meta`` to ``directory``, replacing it atomically.

    All ranks must call this. ``meta`` (JSON-serialisable) records what the caller needs
    to resume: the date, the data position, the step, metrics...
    """
    directory = Path(directory)
    tmp = broadcast_from_rank0(
        str(directory.parent / f".tmp-{directory.name}-{uuid.uuid4().hex[:8]}")
        if not dist.is_initialized() or dist.get_rank() == 0
        else None
    )
    state = {"model": sharded.dmp.state_dict(), "optim": sharded.optimizer.state_dict()}
    dcp.save(state, checkpoint_id=tmp)
    _barrier()
    if not dist.is_initialized() or dist.get_rank() == 0:
        Path(tmp, META).write_text(json.dumps({**meta, "complete": True}, indent=2, default=str))
        replace_dir(Path(tmp), directory)
    _barrier()
    return directory


def read_meta(directory: str | Path) -> dict[str, Any] | None:
    """The checkpoint's ``meta.json``, or None when it is missing or not complete."""
    path = Path(directory) / META
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta if meta.get("complete") is True else None


def load_checkpoint(sharded: ShardedModel, directory: str | Path) -> dict[str, Any]:
    """Load a good checkpoint into ``sharded`` (model and optimiser), return its meta.

    The sharding plan may differ from the one that saved it (DCP reshards on load).
    """
    meta = read_meta(directory)
    if meta is None:
        raise FileNotFoundError(f"{directory}: not a complete checkpoint (no good {META})")
    state = _state(sharded)
    dcp.load(state, checkpoint_id=str(directory))
    sharded.dmp.load_state_dict(state["model"])
    sharded.optimizer.load_state_dict(state["optim"])
    return meta


def find_latest(root: str | Path, before: str | None = None) -> Path | None:
    """The newest good checkpoint under ``root`` whose name sorts before ``before``.

    Names are dates (``YYYY-MM-DD``) or ``YYYY-MM-DD.step-N`` for mid-day checkpoints,
    so string order is time order.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    names = sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (before is None or p.name < before)
    )
    for name in reversed(names):
        if read_meta(root / name) is not None:
            return root / name
    return None
