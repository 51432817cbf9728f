"""Wire a job's config into a model: embeddings outside, the registry's dense arch inside."""

from __future__ import annotations

import torch

from protorec.models.base import RecModel
from protorec.models.embedding import build_ebc, pooled_dim
from protorec.models.managed_ids import ManagedIds
from protorec.models.registry import build_dense_arch
from protorec.pipeline.job_config import ProtorecConfig


def build_model(config: ProtorecConfig, ebc_device: str | torch.device = "meta") -> RecModel:
    """The model ``config.model.name`` names, with one embedding table per sparse feature.

    Args:
        config: the job's config (features, scenarios, model section).
        ebc_device: where the embedding tables are built: "meta" for
            DistributedModelParallel (which materialises each rank's shards), "cpu" for a
            plain single-process model.

    Returns:
        a RecModel; its dense arch is on the default device. With ``model.watch.head``, the
        backbone serves the tasks ("click", "watch") and the watch tower is the head.

    >>> from protorec.pipeline.job_config import load_config
    >>> model = build_model(load_config("simulator"))
    >>> type(model.net).__name__, next(model.sparse_arch.parameters()).device.type
    ('MMoENet', 'meta')
    """
    num_scenarios = len(config.data.scenarios)
    # Tables first: an ablation that adds or drops dense parameters (built last) leaves
    # the tables' and the net's initial weights as they are for a given seed.
    ebc = build_ebc(config.features, ebc_device)
    dense_arch = build_dense_arch(
        pooled_dim(config.features), len(config.features.dense), num_scenarios, config.model
    )
    id_maps = {
        f.name: ManagedIds(f.num_embeddings, f.evict_after_days)
        for f in config.features.sparse
        if f.managed
    }
    return RecModel(ebc, dense_arch, id_maps)
