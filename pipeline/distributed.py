"""Process-group set-up: the same code path for 1 process on a laptop and N under torchrun.

Under ``torchrun`` the rendezvous comes from the environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``...). Started as a plain ``python`` process, protorec still opens a
one-rank process group, because DistributedModelParallel needs one; the port is a free
one on 127.0.0.1, so two plain runs on one machine do not collide. That group is opened
with an explicit ``tcp://`` address rather than by writing ``MASTER_PORT`` & co. into
``os.environ``: children started from this process (tests, tools) would inherit a port it
still holds and fail with EADDRINUSE.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, local rank, device and backend."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device_type(device: str) -> str:
    """``cpu`` or ``cuda`` for a ``--device`` flag (``auto``: CUDA when torch sees one)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or auto, got {device!r}")
    return device


def init_distributed(device: str = "auto") -> DistContext:
    """Open (or reuse) the default process group: NCCL on CUDA, gloo on CPU.

    Args:
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available).
    """
    device = device_type(device)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA device")
    backend = "nccl" if device == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(
                backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
            )
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend)


def broadcast_from_rank0(obj):
    """Rank 0's ``obj`` on every rank (``obj`` itself without a multi-rank group)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_rank0(local: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """Every rank's arrays, concatenated rank after rank, on rank 0; None on the others.

    A collective (every rank must call it). Only rank 0 ever holds every rank's rows (the
    evaluation's predictions: an exact AUC needs every score in one place); the others
    send theirs and keep nothing more. Without a multi-rank group: ``local`` itself.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return local
    main = dist.get_rank() == 0
    parts: list[dict[str, np.ndarray]] | None = (
        [{} for _ in range(dist.get_world_size())] if main else None
    )
    dist.gather_object(local, parts, dst=0)
    if parts is None:
        return None
    return {k: np.concatenate([p[k] for p in parts if k in p]) for k in local}


def average_batch_norm_statistics(module: torch.nn.Module) -> None:
    """Set every BatchNorm's running mean and variance to their mean over the ranks.

    TorchRec wraps the dense part in DDP with ``broadcast_buffers=False``, so each rank
    normalises its own rows and keeps its own statistics. A checkpoint holds one copy of
    a replicated tensor, from whichever rank DCP picks: averaging first makes that copy
    the same on every rank (so a resumed job continues as the uninterrupted one) and an
    estimate over every rank's rows (the mean of the variances ignores the spread of the
    ranks' means, small for shuffled rows). All ranks must call this.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    buffers = [
        buf
        for m in module.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for buf in (m.running_mean, m.running_var)
        if buf is not None
    ]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    dist.all_reduce(flat)  # gloo has no AVG: sum, then divide
    flat /= dist.get_world_size()
    for buf, part in zip(buffers, flat.split([b.numel() for b in buffers])):
        buf.copy_(part.view_as(buf))


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
