"""The sparse part of every model: one TorchRec embedding table per sparse feature."""

from __future__ import annotations

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

from protorec.models.features import FeaturesConfig


def build_ebc(
    features: FeaturesConfig, device: str | torch.device = "meta"
) -> EmbeddingBagCollection:
    """An EmbeddingBagCollection with one sum-pooled table per sparse feature of the config.

    Built on the meta device by default: DistributedModelParallel then materialises only
    each rank's shards (TorchRec's DLRM recipe). ``device="cpu"`` for a plain
    single-process model and tests. Tables are named after their features, in config order,
    which is the order of the pooled embeddings the models read.

    Args:
        features: the config's features section.
        device: where the tables live.

    Returns:
        the collection; fed the batch's KeyedJaggedTensor it gives a KeyedTensor whose
        ``values()`` are (B, sum of embedding_dim).

    >>> from protorec.models.features import SparseFeature
    >>> ebc = build_ebc(FeaturesConfig(sparse=[SparseFeature("user", "user_id", 10, 4)]))
    >>> [(t.name, t.num_embeddings, t.embedding_dim) for t in ebc.embedding_bag_configs()]
    [('user', 10, 4)]
    """
    tables = [
        EmbeddingBagConfig(
            name=f.name,
            num_embeddings=f.num_embeddings,
            embedding_dim=f.embedding_dim,
            feature_names=[f.name],
            pooling=PoolingType.SUM,
        )
        for f in features.sparse
    ]
    return EmbeddingBagCollection(tables=tables, device=torch.device(device))


def pooled_dim(features: FeaturesConfig) -> int:
    """Width of the pooled embeddings of :func:`build_ebc` (sum of the tables' widths)."""
    return sum(f.embedding_dim for f in features.sparse)
