"""The batch every model, trainer and evaluator exchanges.

One :class:`Batch` holds B rows: dense features, a ``KeyedJaggedTensor`` with one key per
sparse feature (one TorchRec embedding table each), the scenario index, the labels and
the grouping keys evaluation needs. It implements TorchRec's ``Pipelineable`` so that
``TrainPipelineSparseDist`` can move it to the device and overlap the copy with compute.
Oracle columns of simulated data are never part of a batch: no training code can read them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable


@dataclass
class Batch(Pipelineable):
    """B rows in model-ready form.

    Shapes:
        dense: (B, D_dense) float32, already normalised as the config says.
        sparse: KeyedJaggedTensor with one key per sparse feature, B values per key
            (one id per row and feature), ids already hashed or range-mapped to the table.
        scenario: (B,) int64 index into the config's scenario list, in [0, S).
        click: (B,) float32 in {0, 1}.
        watch_ms: (B,) float32, watch time in ms; NaN where not observed.
        duration_ms: (B,) float32, item duration in ms; NaN where not given.
        user_id: (B,) int64 raw user id (groups for GAUC / XGAUC / NDCG).
        day: (B,) int64 day index (days since 1970-01-01, UTC) of the impression.
    """

    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    scenario: torch.Tensor
    click: torch.Tensor
    watch_ms: torch.Tensor
    duration_ms: torch.Tensor
    user_id: torch.Tensor
    day: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.scenario.shape[0])

    def _map(self, fn) -> Batch:
        return Batch(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device=device, non_blocking=non_blocking))

    def record_stream(self, stream: torch.Stream) -> None:
        for f in fields(self):
            getattr(self, f.name).record_stream(stream)

    def pin_memory(self) -> Batch:
        return self._map(lambda t: t.pin_memory())
