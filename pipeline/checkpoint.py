"""Checkpoints: torch.distributed.checkpoint of the sharded model and its optimiser.

Layout of one checkpoint (``workdir/checkpoints/<name>/``)::

    __0_0.distcp, __1_0.distcp, ...   one file per rank (DCP)
    .metadata                         DCP's index
    meta.json                         ours: what was saved and the manifest, written last

A checkpoint is *good* when ``meta.json`` exists, says ``"complete": true``, and every
other file of the directory matches its size and sha256 in ``meta.json["files"]``
(``pipeline/manifest.py``; with ``$PROTOREC_SIGNING_KEY`` set, ``meta.json`` must also
carry a matching HMAC). ``meta.json`` is written by rank 0 after every rank finished its
shard, inside a temporary directory that is then renamed into place, so a crash at any
point leaves either the old checkpoint or a temporary directory that :func:`find_latest`
ignores.

Verification comes before any byte is deserialised: DCP's ``.metadata`` is a pickle and
its shards are torch files, so :func:`load_checkpoint` checks the whole directory first
and refuses it (:class:`CheckpointError`, naming the file) on a missing, extra,
truncated or altered file. :func:`read_meta` and :func:`find_latest` treat a refused
checkpoint as absent and log why.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from protorec.pipeline.atomic import replace_dir
from protorec.pipeline.config import ConfigError
from protorec.pipeline.distributed import average_batch_norm_statistics, broadcast_from_rank0
from protorec.pipeline.manifest import ManifestError, file_entries, sign, verify
from protorec.pipeline.trainer import ShardedModel, global_shape

log = logging.getLogger(__name__)

META = "meta.json"
#: Fields of meta.json that are the manifest, not the caller's meta.
_MANIFEST_FIELDS = ("complete", "files", "hmac")


class CheckpointError(RuntimeError):
    """A checkpoint is incomplete or does not match its manifest: it is not loaded."""


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
    average_batch_norm_statistics(sharded.dmp)
    state = {"model": sharded.dmp.state_dict(), "optim": sharded.optimizer.state_dict()}
    dcp.save(state, checkpoint_id=tmp)
    _barrier()
    if not dist.is_initialized() or dist.get_rank() == 0:
        write_meta(Path(tmp), meta)
        replace_dir(Path(tmp), directory)
    _barrier()
    return directory


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Seal a checkpoint directory: ``meta`` plus the manifest of every other file.

    Called last, once every shard is written; signed when a key is set
    (``pipeline/manifest.py``).
    """
    body = {k: v for k, v in meta.items() if k not in _MANIFEST_FIELDS}
    sealed = sign({**body, "complete": True, "files": file_entries(directory, (META,))})
    Path(directory, META).write_text(json.dumps(sealed, indent=2, default=str))


def verify_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Check a checkpoint against its manifest without deserialising it; return its meta.

    Raises:
        CheckpointError: no readable or complete ``meta.json``, a manifest missing (a
            checkpoint written before manifests), a signature refused, or a file
            missing, extra, truncated or altered; the message names the file.
    """
    directory = Path(directory)
    path = directory / META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (not a complete checkpoint)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("complete") is not True:
        raise CheckpointError(f"{path}: not complete")
    if "files" not in meta:
        raise CheckpointError(f'{path}: has no manifest ("files"): refused unverified')
    try:
        verify(directory, meta, META)
    except ManifestError as exc:
        raise CheckpointError(str(exc)) from None
    return {k: v for k, v in meta.items() if k not in _MANIFEST_FIELDS}


def read_meta(directory: str | Path) -> dict[str, Any] | None:
    """The checkpoint's meta after :func:`verify_checkpoint`; None when absent or refused.

    A checkpoint that exists but is refused is logged as a warning naming the file.
    """
    try:
        return verify_checkpoint(directory)
    except CheckpointError as exc:
        if (Path(directory) / META).exists():
            log.warning("checkpoint refused: %s", exc)
        return None


def load_checkpoint(sharded: ShardedModel, directory: str | Path) -> dict[str, Any]:
    """Load a good checkpoint into ``sharded`` (model and optimiser), return its meta.

    Every file is verified first (:func:`verify_checkpoint`; raises
    :class:`CheckpointError`), so nothing unverified is unpickled. The sharding plan may
    differ from the one that saved it (DCP reshards on load).
    """
    meta = verify_checkpoint(directory)
    state = _state(sharded)
    dcp.load(state, checkpoint_id=str(directory))
    sharded.dmp.load_state_dict(state["model"])
    sharded.optimizer.load_state_dict(state["optim"])
    return meta


@dataclass
class WarmStart:
    """What a warm start took from a checkpoint whose model differs from today's.

    Keys are the model's state-dict names; optimiser state follows its parameter.
    """

    loaded: int = 0
    #: model key -> why it keeps its fresh initialisation
    initialised: dict[str, str] = field(default_factory=dict)
    #: checkpoint keys no model key maps to (a removed feature, table or head)
    skipped: list[str] = field(default_factory=list)
    #: model key -> checkpoint key it was loaded from (``daily.warm_start_rename``)
    renamed: dict[str, str] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return bool(self.initialised or self.skipped or self.renamed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "initialised": self.initialised,
            "skipped": self.skipped,
            "renamed": self.renamed,
        }


def _shape(stored: Any) -> tuple[int, ...]:
    """A checkpoint entry's global shape (DCP's non-tensor entries have none)."""
    return tuple(getattr(stored, "size", ()))


def _source_key(key: str, rename: dict[str, str]) -> str:
    """The checkpoint key a model key is read from: ``rename`` maps old prefix -> new."""
    for old, new in rename.items():
        if key == new or key.startswith(new + "."):
            return old + key[len(new) :]
    return key


def warm_start_checkpoint(
    sharded: ShardedModel, directory: str | Path, rename: dict[str, str] | None = None
) -> WarmStart:
    """Load what still matches from a good checkpoint of a possibly different model.

    A model state key is loaded when the checkpoint holds it (under its ``rename``d
    name) with the same global shape; its optimiser state then follows where it matches
    too. Everything else keeps the fresh initialisation the model was built with: a new
    feature, scenario, head or a resized table is initialised, a removed one skipped,
    each named in the returned :class:`WarmStart` (and logged by the caller). Nothing is
    deserialised before the whole directory is verified (:func:`verify_checkpoint`).

    Raises:
        CheckpointError: the checkpoint is refused.
        ConfigError: a ``rename`` source prefix names nothing in it (a typo would
            otherwise silently re-initialise the module).
    """
    verify_checkpoint(directory)
    rename = rename or {}
    saved = dcp.FileSystemReader(str(directory)).read_metadata().state_dict_metadata
    for old in rename:
        prefix = f"model.{old}"
        if not any(k == prefix or k.startswith(prefix + ".") for k in saved):
            raise ConfigError(
                "config",
                f"daily.warm_start_rename.{old}",
                f"names no tensor of checkpoint {directory}",
            )
    state = _state(sharded)
    report = WarmStart()
    model_part: dict[str, Any] = {}
    claimed: set[str] = set()
    for key, value in state["model"].items():
        source = _source_key(key, rename)
        stored = saved.get(f"model.{source}")
        if stored is None:
            report.initialised[key] = "not in the checkpoint"
            continue
        claimed.add(f"model.{source}")
        shape = _shape(stored)
        if isinstance(value, torch.Tensor) and global_shape(value) != shape:
            report.initialised[key] = (
                f"shape {list(shape)} in the checkpoint, {list(global_shape(value))} now"
            )
            continue
        model_part[source] = value
        report.loaded += 1
        if source != key:
            report.renamed[key] = source
    optim_part: dict[str, dict[str, Any]] = {}
    for param, entries in state["optim"].get("state", {}).items():
        source = _source_key(param, rename)
        if source not in model_part:
            continue
        for name, value in entries.items():
            flat = f"optim.state.{source}.{name}"
            stored = saved.get(flat)
            if stored is not None and (
                not isinstance(value, torch.Tensor) or global_shape(value) == _shape(stored)
            ):
                optim_part.setdefault(source, {})[name] = value
    report.skipped = sorted(
        k[len("model.") :] for k in saved if k.startswith("model.") and k not in claimed
    )
    # DCP loads in place into the tensors it is given, so naming today's tensors by
    # their checkpoint keys loads renamed modules; the full dicts are then re-applied.
    dcp.load({"model": model_part, "optim": {"state": optim_part}}, checkpoint_id=str(directory))
    sharded.dmp.load_state_dict(state["model"])
    sharded.optimizer.load_state_dict(state["optim"])
    return report


def find_latest(root: str | Path, before: str | None = None) -> Path | None:
    """The newest good checkpoint under ``root`` whose name sorts before ``before``.

    Names are dates (``YYYY-MM-DD``) or ``YYYY-MM-DD.step-N`` for mid-day checkpoints,
    so string order is time order.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    names = sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (before is None or p.name < before)
    )
    for name in reversed(names):
        if read_meta(root / name) is not None:
            return root / name
    return None
