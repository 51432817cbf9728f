"""What a watch head learns from the training days before training: tables and codebook.

:func:`refresh_watch_head` is the one call a job makes before training (and the daily
job each day): D2Q's duration groups and quantile tables and TPM's bins are fitted on the
first call and then kept, so that a warm-started model's outputs keep their meaning;
ProWTP's HVQ-VAE is fitted on the first call and refitted warm, identities kept, on every
later one (:func:`protorec.models.prowtp.refresh_credible_prototypes`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from protorec.models.hvqvae import RefitReport
from protorec.models.prowtp import ProWTPHead, refresh_credible_prototypes
from protorec.pipeline.watch_ratio import read_watch_ratios

if TYPE_CHECKING:
    from protorec.pipeline.job_config import ProtorecConfig

log = logging.getLogger(__name__)


def refresh_watch_head(
    model: nn.Module, config: ProtorecConfig, dataset_dir: str | Path,
    days: Iterable[dt.date],
) -> RefitReport | None:
    """Fit the statistics the model's watch head needs from ``days`` (see the module doc).

    Deterministic given the data and the config's seeds, so every rank of a distributed
    job computes the same; buffers are written in place (DDP keeps its references).

    Args:
        model: a RecModel, or ``ShardedModel.module`` (the RecModel inside DMP).
        config: the job's config.
        dataset_dir: the contract data set.
        days: the training days.

    Returns:
        ProWTP's :class:`RefitReport` on a refit; None otherwise (no head, a head without
        statistics, tables already fitted, or ProWTP's first fit).
    """
    head = model.dense_arch.watch_head
    if head is None:
        return None
    if isinstance(head, ProWTPHead):
        return refresh_credible_prototypes(model, config, dataset_dir, days)
    if head.is_fitted():
        return None
    ratios = read_watch_ratios(dataset_dir, list(days))
    head.fit_statistics(ratios.ratio * ratios.duration_ms, ratios.duration_ms)
    log.info("%s statistics fitted on %d rows (%s left out)", type(head).__name__,
             ratios.ratio.shape[0], ratios.excluded)
    return None
