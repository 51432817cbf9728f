"""From the Parquet contract to TorchRec batches (see LoaderConfig)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoaderConfig:
    """How the loader cuts the data into batches.

    Args:
        batch_size: rows per batch on each rank.
        shuffle: shuffle row groups and rows within a pass (seeded).
        seed: base seed of the shuffle; the pass number is mixed in.
    """

    batch_size: int = 512
    shuffle: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("loader.batch_size must be >= 1")
