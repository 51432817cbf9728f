"""The features section of the config: the inputs every model embeds or reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class SparseFeature:
    """One categorical id column, embedded by its own TorchRec table.

    Args:
        name: feature and table name (a KeyedJaggedTensor key).
        column: the contract column that holds the id.
        num_embeddings: rows of the table.
        embedding_dim: width of the table.
        hashed: True for open vocabularies: ids are hashed into [0, num_embeddings).
            False: ids must lie in [0, num_embeddings - 1); any other id goes to the
            last row (the out-of-vocabulary row) and is counted by the loader.
        managed: raw int64 ids of an open vocabulary, each with its own row: the table
            holds ``num_embeddings - 1`` ids (size it by the expected distinct ids, not by
            the largest id) admitted from the training rows, most frequent first
            (``models/managed_ids.py``); ids without a row read the last row and are
            counted as OOV. Exclusive with ``hashed``.
        evict_after_days: with ``managed``, an id unseen for this many days frees its
            row for a new id (the daily job decides once a day); 0 never evicts.
    """

    name: str
    column: str
    num_embeddings: int
    embedding_dim: int = 16
    hashed: bool = False
    managed: bool = False
    evict_after_days: int = 0

    def __post_init__(self) -> None:
        if self.hashed and self.managed:
            raise ValueError(f"feature {self.name!r}: hashed and managed are exclusive")
        if self.evict_after_days < 0:
            raise ValueError(f"feature {self.name!r}: evict_after_days must be >= 0")
        if self.num_embeddings < 2:
            raise ValueError(f"feature {self.name!r}: num_embeddings must be >= 2")
        if self.embedding_dim < 1:
            raise ValueError(f"feature {self.name!r}: embedding_dim must be >= 1")


@dataclass
class DenseFeature:
    """One numeric column, normalised as ``transform`` then ``(x - shift) / scale``.

    Args:
        name: feature name.
        column: the contract column.
        transform: ``none`` or ``log1p`` (for counts and durations, x >= 0).
        shift, scale: fixed normalisation constants, from the config (stable across days,
            so yesterday's model reads today's features the same way).
        fill: value for nulls; the loader counts every filled value.
    """

    name: str
    column: str
    transform: Literal["none", "log1p"] = "none"
    shift: float = 0.0
    scale: float = 1.0
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError(f"dense feature {self.name!r}: scale must be > 0")


@dataclass
class FeaturesConfig:
    """The model's inputs: sparse id features and dense features."""

    sparse: list[SparseFeature]
    dense: list[DenseFeature] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [f.name for f in self.sparse] + [f.name for f in self.dense]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate feature names {sorted(dup)}")
        if not self.sparse:
            raise ValueError("at least one sparse feature is required")
