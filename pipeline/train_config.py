"""The train section of the config: optimisers, clipping, passes, logging, seeding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class TrainConfig:
    """How the trainer optimises.

    Args:
        dense_lr: learning rate of the dense optimiser (Adam) over every non-embedding
            parameter (towers, experts, gates, prototypes).
        embedding_lr: learning rate of the fused row-wise optimiser of the embedding tables.
            0.5, chosen on validation days against 0.05 / 0.2 / 1.0 (docs/results/
            reference.md): a row-wise Adagrad step of 0.05 left the tables nearly still.
        embedding_optimizer: fbgemm's fused optimiser for the tables (applied in backward).
        weight_decay: decoupled weight decay of the dense optimiser (AdamW); the papers' L2
            term on the dense weights.
        grad_clip_norm: clip the dense gradients to this global L2 norm; 0 turns it off.
        epochs: passes over each day's training data.
        log_every: steps between log lines (loss, samples/s).
        seed: seeds model initialisation and everything random in training.
        pipeline: ``sparse_dist`` (TorchRec's TrainPipelineSparseDist: overlaps the
            copy and the embedding all-to-all of batch i+1 with batch i) or ``base``
            (TrainPipelineBase: one batch at a time, simplest to debug).
    """

    dense_lr: float = 1e-3
    embedding_lr: float = 0.5
    embedding_optimizer: Literal["rowwise_adagrad", "adam", "sgd"] = "rowwise_adagrad"
    weight_decay: float = 0.0
    grad_clip_norm: float = 10.0
    epochs: int = 1
    log_every: int = 50
    seed: int = 0
    pipeline: Literal["sparse_dist", "base"] = "sparse_dist"

    def __post_init__(self) -> None:
        if self.dense_lr <= 0 or self.embedding_lr <= 0:
            raise ValueError("train.dense_lr and train.embedding_lr must be > 0")
        if self.weight_decay < 0 or self.grad_clip_norm < 0:
            raise ValueError("train.weight_decay and train.grad_clip_norm must be >= 0")
        if self.epochs < 1 or self.log_every < 1:
            raise ValueError("train.epochs and train.log_every must be >= 1")
