"""build_model: the named architecture, on the real simulator config's features."""

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from protorec.models.batch import Batch
from protorec.models.distproto import DistProtoArch
from protorec.models.registry import MODELS
from protorec.pipeline.config import from_dict, to_dict
from protorec.pipeline.job_config import ProtorecConfig, load_config
from protorec.pipeline.model_factory import build_model


def _with_model(name: str) -> ProtorecConfig:
    data = to_dict(load_config("simulator"))
    data["model"]["name"] = name
    return from_dict(ProtorecConfig, data)


def _random_batch(config: ProtorecConfig, n: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(f.num_embeddings, (n,), generator=g) for f in config.features.sparse]
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=[f.name for f in config.features.sparse],
        values=torch.cat(ids),
        lengths=torch.ones(n * len(ids), dtype=torch.int32),
    )
    nan = torch.full((n,), float("nan"))
    return Batch(
        dense=torch.randn(n, len(config.features.dense), generator=g),
        sparse=sparse,
        scenario=torch.randint(len(config.data.scenarios), (n,), generator=g),
        click=torch.randint(2, (n,), generator=g).float(),
        watch_ms=nan,
        duration_ms=nan,
        user_id=ids[0],
        day=torch.zeros(n, dtype=torch.long),
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_name_builds_its_model_and_runs_on_the_simulator_features(name):
    config = _with_model(name)
    meta = build_model(config)
    assert type(meta.net) is MODELS[name].net
    assert isinstance(meta.dense_arch, DistProtoArch) == (name == "distproto")
    assert all(p.device.type == "meta" for p in meta.sparse_arch.parameters())
    assert all(p.device.type == "cpu" for p in meta.dense_arch.parameters())
    model = build_model(config, ebc_device="cpu")
    loss, out = model(_random_batch(config, 16))
    assert torch.isfinite(loss) and out["click_logit"].shape == (16,)


def test_the_registry_and_the_config_name_the_same_models_and_heads():
    from typing import get_args

    from protorec.models.config import ModelName, WatchHeadName
    from protorec.models.registry import WATCH_HEADS

    assert set(MODELS) == set(get_args(ModelName))
    assert set(WATCH_HEADS) | {"none"} == set(get_args(WatchHeadName))
