"""The TorchRec embedding tables: one per sparse feature, sum pooling, meta device by default."""

import torch
from torchrec import PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from protorec.models.embedding import build_ebc, pooled_dim
from protorec.pipeline.job_config import load_config


def test_one_sum_pooled_table_per_sparse_feature_on_meta():
    features = load_config("simulator").features
    ebc = build_ebc(features)
    tables = ebc.embedding_bag_configs()
    assert [(t.name, t.feature_names, t.num_embeddings, t.embedding_dim) for t in tables] == [
        (f.name, [f.name], f.num_embeddings, f.embedding_dim) for f in features.sparse
    ]
    assert all(t.pooling == PoolingType.SUM for t in tables)
    assert all(p.device.type == "meta" for p in ebc.parameters())


def test_cpu_tables_pool_each_rows_ids_in_config_order(tiny_config):
    features = tiny_config().features
    ebc = build_ebc(features, device="cpu")
    users, items = torch.tensor([3, 0, 7]), torch.tensor([1, 1, 5])
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["user", "item"],
        values=torch.cat([users, items]),
        lengths=torch.ones(6, dtype=torch.int32),
    )
    pooled = ebc(kjt).values()
    assert pooled.shape == (3, pooled_dim(features))
    weights = {n: p for n, p in ebc.named_parameters()}
    user_w = weights["embedding_bags.user.weight"]
    item_w = weights["embedding_bags.item.weight"]
    torch.testing.assert_close(pooled, torch.cat([user_w[users], item_w[items]], dim=1))
