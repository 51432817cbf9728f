"""Inference exports: the trained model as plain files that load without torch.distributed.

Layout of one export (``workdir/exports/<date>/``)::

    model.pt        the unsharded state dict of the RecModel (tensors only: loads with
                    ``torch.load(weights_only=True)``)
    model.pt2       the scoring function as a ``torch.export`` ExportedProgram on plain
                    tensors (:class:`~protorec.models.inference.InferenceModule`), with
                    ``inputs.json`` inside describing its inputs: loads with
                    ``torch.export.load`` in a process without protorec or TorchRec
                    (docs/daily.md); left out, with the reason in the manifest's
                    ``inference_skipped`` and a warning, for a model that does not export
    config.yaml     the job's config, so the model can be rebuilt exactly
    metrics.json    the figures the job measured before publishing (optional)
    manifest.json   every other file with its size and sha256, written last (with an
                    HMAC when ``$PROTOREC_SIGNING_KEY`` is set: ``pipeline/manifest.py``)

An export is written into a temporary directory beside its destination and renamed
into place, so a reader never sees half of one; :func:`load_export` checks the
signature (when a key is set) and every checksum of the manifest before it builds
anything, and refuses a file the manifest does not list.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from protorec.models.base import RecModel, eval_mode
from protorec.models.inference import InferenceModule
from protorec.pipeline.atomic import replace_dir
from protorec.pipeline.config import from_dict, to_dict
from protorec.pipeline.job_config import ProtorecConfig
from protorec.pipeline.manifest import ManifestError, file_entries, sign, verify
from protorec.pipeline.model_factory import build_model
from protorec.pipeline.trainer import ShardedModel

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
WEIGHTS = "model.pt"
INFERENCE = "model.pt2"
#: The description of the inference program's inputs, stored inside model.pt2.
INFERENCE_INPUTS = "inputs.json"
CONFIG = "config.yaml"
METRICS = "metrics.json"
FORMAT_VERSION = 1


class ExportError(RuntimeError):
    """An export is missing, incomplete or does not match its manifest."""


def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def gather_state_dict(sharded: ShardedModel) -> dict[str, torch.Tensor] | None:
    """The full, unsharded model state on rank 0 (None on the other ranks).

    Collective: every rank must call it. Sharded tables are gathered with
    ``ShardedTensor.gather``; replicated tensors (dense layers, data-parallel tables)
    are taken from rank 0's copy.
    """
    rank0 = _is_rank0()
    full: dict[str, torch.Tensor] = {}
    for name, tensor in sharded.dmp.state_dict().items():
        if hasattr(tensor, "local_shards"):  # ShardedTensor
            # metadata(), not size() / dtype: those go through ShardedTensor's deprecated
            # __torch_function__, which warns.
            meta = tensor.metadata()
            out = torch.empty(meta.size, dtype=meta.tensor_properties.dtype) if rank0 else None
            tensor.gather(dst=0, out=out)
            if out is not None:  # rank 0
                full[name] = out
        elif rank0:
            full[name] = tensor.detach().cpu().clone()
    return full if rank0 else None


def export_model(
    sharded: ShardedModel,
    config: ProtorecConfig,
    directory: str | Path,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write an export of ``sharded`` to ``directory``, replacing it atomically.

    Every rank must call this (the tables are gathered to rank 0, which writes).
    """
    directory = Path(directory)
    state = gather_state_dict(sharded)
    if _is_rank0():
        assert state is not None
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".tmp-{directory.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            torch.save(state, tmp / WEIGHTS)
            (tmp / CONFIG).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
            if metrics is not None:
                (tmp / METRICS).write_text(json.dumps(metrics, indent=2, allow_nan=False))
            # The tables take the gathered tensors themselves (meta, assign): no second copy.
            # The dense init's draws stay off the global RNG, which only rank 0 runs here.
            with torch.random.fork_rng(devices=[]):
                model = build_model(config, ebc_device="meta")
            model.load_state_dict(state, strict=True, assign=True)
            skipped = save_inference_program(model, config, tmp / INFERENCE)
            manifest = {
                "format_version": FORMAT_VERSION,
                "model": config.model.name,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "files": file_entries(tmp, (MANIFEST,)),
            }
            if skipped is not None:
                manifest["inference_skipped"] = skipped
            manifest = sign(manifest)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            replace_dir(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if dist.is_initialized():
        dist.barrier()
    return directory


def inference_inputs(config: ProtorecConfig, model: RecModel) -> dict[str, Any]:
    """What a server feeds the inference program and how to make it from contract rows.

    The order of ``sparse`` is the order of the program's ``values`` and ``offsets`` lists;
    the conversions are the loader's (``pipeline/loader.py``).
    """
    sparse = {f.name: f for f in config.features.sparse}
    return {
        "args": ["values", "offsets", "dense", "scenario", "duration_ms"],
        "sparse": [
            {
                "name": name,
                "column": sparse[name].column,
                "num_embeddings": sparse[name].num_embeddings,
                "hashed": sparse[name].hashed,
            }
            for name in model.feature_names
        ],
        "dense": [
            {
                "name": d.name,
                "column": d.column,
                "transform": d.transform,
                "shift": d.shift,
                "scale": d.scale,
                "fill": d.fill,
            }
            for d in config.features.dense
        ],
        "scenarios": list(config.data.scenarios),
        "outputs": ["click_prob"] + (["watch_pred_ms"] if model.dense_arch.watch_head else []),
    }


def save_inference_program(model: RecModel, config: ProtorecConfig, path: Path) -> str | None:
    """Write ``model``'s scoring function to ``path`` as a torch.export program.

    The batch size and each feature's number of ids are dynamic (1 row and up). Returns
    None when written, else the reason it could not be (logged as a warning, no file):
    one model that does not export must not cost the day's export.
    """
    rows = 4  # above 1: torch.export would specialise a size-0/1 example to that size
    names = model.feature_names
    example = (
        [torch.zeros(rows, dtype=torch.int64) for _ in names],
        [torch.arange(rows) for _ in names],
        torch.zeros(rows, len(config.features.dense)),
        torch.zeros(rows, dtype=torch.int64),
        torch.full((rows,), 1000.0),
    )
    batch = torch.export.Dim("batch", min=1)
    dynamic = (
        [{0: torch.export.Dim(f"ids_{name}", min=1)} for name in names],
        [{0: batch} for _ in names],
        {0: batch},
        {0: batch},
        {0: batch},
    )
    try:
        with torch.no_grad(), eval_mode(model):
            module = InferenceModule(model)  # raises for a watch head without statistics
            program = torch.export.export(module, example, dynamic_shapes=dynamic, strict=False)
        torch.export.save(
            program,
            path,
            extra_files={INFERENCE_INPUTS: json.dumps(inference_inputs(config, model))},
        )
    except Exception as exc:  # noqa: BLE001 - any tracing failure skips the artifact only
        path.unlink(missing_ok=True)
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log.warning(
            "%s: no %s for model %s (%s)", path.parent, INFERENCE, config.model.name, reason
        )
        return reason
    return None


def verify_export(directory: str | Path) -> dict[str, Any]:
    """Check ``directory`` against its manifest; return the manifest.

    Raises:
        ExportError: no manifest, a listed file missing, a size or checksum differing, a
            file not listed, or (with ``$PROTOREC_SIGNING_KEY`` set) the manifest unsigned
            or its HMAC differing; the message names the file.
    """
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{directory}: no readable {MANIFEST} ({exc})") from exc
    try:
        verify(directory, manifest, MANIFEST)
    except ManifestError as exc:
        raise ExportError(str(exc)) from None
    for required in (WEIGHTS, CONFIG):
        if required not in manifest.get("files", {}):
            raise ExportError(f"{directory}: {MANIFEST} does not list {required}")
    return manifest


def read_export_config(directory: str | Path) -> ProtorecConfig:
    """The config of the export in ``directory``, after checking the manifest (no model)."""
    directory = Path(directory)
    verify_export(directory)
    config_path = directory / CONFIG
    return from_dict(
        ProtorecConfig, yaml.safe_load(config_path.read_text()), source=str(config_path)
    )


def load_export(directory: str | Path) -> tuple[ProtorecConfig, RecModel]:
    """Rebuild the exported model on CPU, in eval mode, after checking the manifest.

    Needs no process group: the tables are plain EmbeddingBagCollections here.
    """
    directory = Path(directory)
    config = read_export_config(directory)
    try:
        state = torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        # The checksum matched: the file was written so (or re-listed by hand), not damaged.
        # torch's own message advises weights_only=False, which would run the file's code.
        raise ExportError(
            f"{directory / WEIGHTS}: not a weights-only state dict "
            f"(torch.load refused it: {type(exc).__name__}); export the model "
            "again (protorec train --export DIR, or the daily job)"
        ) from None
    if not isinstance(state, dict):
        raise ExportError(
            f"{directory / WEIGHTS}: holds a {type(state).__name__}, not a state dict"
        )
    model = build_model(config, ebc_device="cpu")
    model.load_state_dict(state, strict=True)
    model.eval()
    return config, model
