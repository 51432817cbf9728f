"""Managed ids: raw 64-bit ids of an open vocabulary mapped onto a fixed number of table rows.

A table of ``num_embeddings`` rows gives ``num_embeddings - 1`` rows to ids and keeps the
last for ids without one (out of vocabulary, OOV). Ids are *admitted* from a day's rows
(the most frequent first) into free rows; an id not seen for ``evict_after_days`` days is
*evicted* and its row freed for a newcomer; ids left over when no row is free are counted
as ``overflow`` (they read the OOV row). The map lives in buffers, so checkpoints and
exports carry it and every rank holds the same copy.

Written here rather than with TorchRec's ``ManagedCollisionEmbeddingBagCollection``
(MCH / ZCH) because the pinned CPU stack (fbgemm-gpu-cpu 1.8.0) lacks the kernels ZCH
needs, and because the daily job wants admission and eviction decided once a day from
the day's whole training split, identically on every rank, not per batch on each rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

#: ``raw`` of a free row.
FREE = -1


@dataclass
class IdUpdate:
    """What one :meth:`ManagedIds.update` did (counts of ids and rows)."""

    rows_used: int
    admitted: int
    evicted: int
    overflow: int
    seen: int
    #: rows evicted or newly given to an id: their embeddings and optimiser state should
    #: start fresh (the caller owns the table)
    reset_rows: np.ndarray

    def as_dict(self) -> dict[str, int]:
        return {
            "rows_used": self.rows_used,
            "admitted": self.admitted,
            "evicted": self.evicted,
            "overflow": self.overflow,
            "seen": self.seen,
        }


class ManagedIds(nn.Module):
    """The id -> row map of one table.

    Args:
        num_embeddings: the table's rows; ``num_embeddings - 1`` are given to ids, the last
            is the OOV row.
        evict_after_days: an id unseen for this many days frees its row; 0 never evicts.

    >>> m = ManagedIds(4, evict_after_days=2)
    >>> m.update(np.array([10**12, 7, 7, 5]), day=0).as_dict()
    {'rows_used': 3, 'admitted': 3, 'evicted': 0, 'overflow': 0, 'seen': 3}
    >>> m.lookup(np.array([7, 10**12, 99]))[0].tolist()
    [0, 2, 3]
    >>> m.update(np.array([8]), day=3).as_dict()  # 7, 5 and 10**12 unseen for 3 days
    {'rows_used': 1, 'admitted': 1, 'evicted': 3, 'overflow': 0, 'seen': 1}
    """

    raw: torch.Tensor  # (num_embeddings - 1,) the id of each row, FREE when none
    last_seen: torch.Tensor  # (num_embeddings - 1,) the day each row's id was last seen

    def __init__(self, num_embeddings: int, evict_after_days: int = 0) -> None:
        super().__init__()
        if num_embeddings < 2:
            raise ValueError("num_embeddings must be >= 2")
        self.evict_after_days = evict_after_days
        self.oov_row = num_embeddings - 1
        self.register_buffer("raw", torch.full((num_embeddings - 1,), FREE, dtype=torch.int64))
        self.register_buffer(
            "last_seen", torch.full((num_embeddings - 1,), FREE, dtype=torch.int64)
        )
        self._index: tuple[np.ndarray, np.ndarray] | None = None

    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """Used ids sorted, and their rows: a binary search beats a dict at 1e6+ lookups."""
        raw = self.raw.cpu().numpy()
        rows = np.flatnonzero(raw != FREE)
        order = np.argsort(raw[rows], kind="stable")
        return raw[rows][order], rows[order]

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._index = None  # a checkpoint or export replaced the buffers
        super()._load_from_state_dict(*args, **kwargs)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``ids`` and a mask of those without one (they get the OOV row).

        Shapes:
            ids (N,) int64  ->  rows (N,) int64 in [0, num_embeddings), unknown (N,) bool
        """
        if self._index is None:
            self._index = self._sorted()
        keys, rows = self._index
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(keys, ids)
        found = pos < len(keys)
        found[found] = keys[pos[found]] == ids[found]
        out = np.full(ids.shape, self.oov_row, dtype=np.int64)
        out[found] = rows[pos[found]]
        return out, ~found

    @torch.no_grad()
    def update(self, ids: np.ndarray, day: int) -> IdUpdate:
        """Admit the ids of a day's rows, refresh their last-seen day, evict stale ones.

        Deterministic in its inputs: every rank that passes the same rows gets the same map.

        Args:
            ids: the raw ids of the day's (training) rows, repeats allowed.
            day: the day's ordinal (any increasing day number).

        Returns:
            the counts, and the rows to re-initialise.
        """
        uniq, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
        raw, last = self.raw.cpu().numpy().copy(), self.last_seen.cpu().numpy().copy()
        self._index = self._sorted()
        rows, unknown = self.lookup(uniq)
        last[rows[~unknown]] = day
        evicted = np.zeros(0, dtype=np.int64)
        if self.evict_after_days > 0:
            evicted = np.flatnonzero((raw != FREE) & (last < day - self.evict_after_days + 1))
            raw[evicted], last[evicted] = FREE, FREE
        new, new_counts = uniq[unknown], counts[unknown]
        # most frequent first; ties by id, so the map does not depend on row order
        order = np.lexsort((new, -new_counts))
        free = np.flatnonzero(raw == FREE)
        take = min(len(free), len(new))
        admitted_rows = free[:take]
        raw[admitted_rows], last[admitted_rows] = new[order[:take]], day
        self.raw.copy_(torch.from_numpy(raw))
        self.last_seen.copy_(torch.from_numpy(last))
        self._index = None
        return IdUpdate(
            rows_used=int(np.count_nonzero(raw != FREE)),
            admitted=take,
            evicted=len(evicted),
            overflow=len(new) - take,
            seen=len(uniq),
            reset_rows=np.union1d(evicted, admitted_rows),
        )
