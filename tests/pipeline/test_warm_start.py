"""Partial-load warm start: what still matches loads, the rest is initialised and named.

Yesterday's checkpoint is a real DCP checkpoint of a sharded MMoE; today's model differs
by one change of each kind the daily job meets (a resized table, a new head, a removed
feature, a renamed feature) and is warm-started from it in the same process.
"""

import pytest
import torch

from protorec.pipeline.checkpoint import save_checkpoint, warm_start_checkpoint
from protorec.pipeline.config import ConfigError, from_dict, to_dict
from protorec.pipeline.distributed import init_distributed, shutdown_distributed
from protorec.pipeline.job_config import ProtorecConfig, load_config
from protorec.pipeline.manifest import SIGNING_KEY_ENV
from protorec.pipeline.model_factory import build_model
from protorec.pipeline.trainer import shard_model
from protorec.pipeline.variants import apply_overrides

TABLE = "sparse_arch.embedding_bags.{}.weight"


@pytest.fixture
def ctx(monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    context = init_distributed("cpu")
    yield context
    shutdown_distributed()


def _shard(config, ctx, seed):
    torch.manual_seed(seed)
    sharded = shard_model(build_model(config, "meta"), ctx, config.train, 64)
    sharded.optimizer.init_state()
    return sharded


def _tensors(sharded):
    out = {}
    for key, value in sharded.dmp.state_dict().items():
        if hasattr(value, "local_shards"):  # ShardedTensor: one rank holds every shard
            value = torch.cat([s.tensor for s in value.local_shards()])
        out[key] = value.detach().clone()
    return out


def _with_features(config, edit) -> ProtorecConfig:
    raw = to_dict(config)
    edit(raw["features"]["sparse"], raw)
    return from_dict(ProtorecConfig, raw)


@pytest.fixture
def yesterday(ctx, tmp_path):
    config = load_config("simulator")
    sharded = _shard(config, ctx, seed=1)
    directory = save_checkpoint(sharded, tmp_path / "2026-01-01", {"date": "2026-01-01"})
    return config, _tensors(sharded), directory


def test_same_model_loads_everything(ctx, yesterday):
    config, before, directory = yesterday
    today = _shard(config, ctx, seed=2)
    report = warm_start_checkpoint(today, directory)
    assert not report.partial and report.loaded == len(before)
    after = _tensors(today)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_resized_table_is_initialised_and_the_rest_loaded(ctx, yesterday):
    config, before, directory = yesterday

    def grow(sparse, _raw):
        next(f for f in sparse if f["name"] == "user")["num_embeddings"] = 6001

    today = _shard(_with_features(config, grow), ctx, seed=2)
    fresh = _tensors(today)
    report = warm_start_checkpoint(today, directory)
    user = TABLE.format("user")
    assert set(report.initialised) == {user}
    assert "[5001, 16]" in report.initialised[user] and "[6001, 16]" in report.initialised[user]
    after = _tensors(today)
    assert torch.equal(after[user], fresh[user])
    assert all(torch.equal(after[k], before[k]) for k in before if k != user)
    # The resized table's optimiser state stays fresh; the others' is loaded.
    momenta = {
        k: v
        for k, v in today.optimizer.state_dict()["state"].items()
        if k.startswith("sparse_arch")
    }
    assert set(momenta) >= {user, TABLE.format("item")}


def test_new_head_is_initialised(ctx, yesterday):
    config, before, directory = yesterday
    today = _shard(apply_overrides(config, {"model.watch.head": "tr"}), ctx, seed=2)
    report = warm_start_checkpoint(today, directory)
    watch = {k for k in report.initialised if ".towers.watch." in k}
    assert watch and all(report.initialised[k] == "not in the checkpoint" for k in watch)
    # The gates grow a task: resized, so initialised too, and not reported as skipped.
    gate = "dense_arch.net.backbone.gate.weight"
    assert "[1, 1, 76, 8] in the checkpoint" in report.initialised[gate]
    assert not report.skipped
    after = _tensors(today)
    assert torch.equal(after[TABLE.format("item")], before[TABLE.format("item")])


def test_removed_feature_is_skipped_and_named(ctx, yesterday):
    config, _before, directory = yesterday

    def drop(sparse, _raw):
        sparse[:] = [f for f in sparse if f["name"] != "author"]

    today = _shard(_with_features(config, drop), ctx, seed=2)
    report = warm_start_checkpoint(today, directory)
    assert TABLE.format("author") in report.skipped


def test_renamed_feature_loads_through_the_rename_map(ctx, yesterday):
    config, before, directory = yesterday

    def rename(sparse, _raw):
        next(f for f in sparse if f["name"] == "author")["name"] = "creator"

    today = _shard(_with_features(config, rename), ctx, seed=2)
    old, new = "sparse_arch.embedding_bags.author", "sparse_arch.embedding_bags.creator"
    report = warm_start_checkpoint(today, directory, {old: new})
    assert report.renamed == {TABLE.format("creator"): TABLE.format("author")}
    assert TABLE.format("creator") not in report.initialised
    assert torch.equal(_tensors(today)[TABLE.format("creator")], before[TABLE.format("author")])

    with pytest.raises(ConfigError, match="warm_start_rename.sparse_arch.nothing: names no tensor"):
        warm_start_checkpoint(today, directory, {"sparse_arch.nothing": new})
