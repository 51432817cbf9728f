"""Build the configured model: embeddings outside, dense arch inside, by ``model.name``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from protorec.models.base import DenseArch, RecModel, ScenarioNet
from protorec.models.config import ModelConfig
from protorec.models.distproto import DistProtoArch, DistProtoNet
from protorec.models.embedding import build_ebc, pooled_dim
from protorec.models.mmoe import MMoENet
from protorec.models.ple import PLENet
from protorec.models.prowtp import ProWTPHead
from protorec.models.shared_bottom import SharedBottomNet
from protorec.models.star import StarNet
from protorec.models.watch.d2q import D2QHead
from protorec.models.watch.head import WatchHead
from protorec.models.watch.tpm import TPMHead
from protorec.models.watch.tr import TRHead
from protorec.models.watch.wlr import WLRHead
from protorec.pipeline.job_config import ProtorecConfig

#: The dense net of each ``model.name``: (sparse_dim, dense_dim, S, config, tasks) -> net.
NETS: dict[str, Callable[[int, int, int, ModelConfig, tuple[str, ...]], ScenarioNet]] = {
    "shared_bottom": SharedBottomNet,
    "mmoe": MMoENet,
    "ple": PLENet,
    "star": StarNet,
    "distproto": DistProtoNet,
}


def build_watch_head(in_features: int, num_scenarios: int, config: ModelConfig) -> WatchHead:
    """The head ``config.watch.head`` names, reading task representations of width in_features.

    >>> from protorec.models.config import WatchConfig
    >>> head = build_watch_head(16, 3, ModelConfig(watch=WatchConfig(head="tpm")))
    >>> type(head).__name__, head.out_features
    ('TPMHead', 7)
    """
    cfg = config.watch
    common = (in_features, num_scenarios, cfg.hidden, cfg.scale_ms)
    if cfg.head == "tr":
        return TRHead(*common)
    if cfg.head == "wlr":
        return WLRHead(*common)
    if cfg.head == "d2q":
        return D2QHead(*common, cfg.d2q)
    if cfg.head == "tpm":
        return TPMHead(*common, cfg.tpm)
    if cfg.head == "prowtp":
        return ProWTPHead(*common, cfg.prowtp, config.hvqvae)
    raise ValueError(f"model.watch.head = {cfg.head!r} builds no head")


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
    tasks = config.model.watch.tasks
    net = NETS[config.model.name](
        pooled_dim(config.features), len(config.features.dense), num_scenarios, config.model,
        tasks,
    )
    if "watch" in tasks:
        # Every backbone builds its own one-logit tower per task; the watch task's is
        # replaced by the configured head, on the same representation width.
        net.towers["watch"] = build_watch_head(
            net.towers["click"].in_features, num_scenarios, config.model
        )
    arch_cls = DistProtoArch if config.model.name == "distproto" else DenseArch
    dense_arch = arch_cls(net, num_scenarios, config.model)
    return RecModel(ebc, dense_arch)
