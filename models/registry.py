"""The one map from a model's name to its builders: dense nets, training archs, watch heads.

``model.name`` picks a :class:`ModelSpec` (its dense net and the arch that adds its
losses); ``model.watch.head`` picks a watch head. Nothing else lists model names: jobs
build through :func:`build_dense_arch` and talk to the result through the
:class:`~protorec.models.base.DenseArch` contract and its optional hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from protorec.models.base import DenseArch, ScenarioNet
from protorec.models.config import ModelConfig
from protorec.models.distproto import DistProtoArch, DistProtoNet
from protorec.models.mmoe import MMoENet
from protorec.models.ple import PLENet
from protorec.models.prowtp import ProWTPHead
from protorec.models.shared_bottom import SharedBottomNet
from protorec.models.star import StarNet
from protorec.models.watch.d2q import D2QHead
from protorec.models.watch.head import WatchHead
from protorec.models.watch.mean_ratio import MeanRatioHead
from protorec.models.watch.tpm import TPMHead
from protorec.models.watch.tr import TRHead
from protorec.models.watch.wlr import WLRHead

#: A dense net: (sparse_dim, dense_dim, S, model config, tasks) -> net.
NetBuilder = Callable[[int, int, int, ModelConfig, tuple[str, ...]], ScenarioNet]


@dataclass(frozen=True)
class ModelSpec:
    """How one ``model.name`` is built: its dense net and the arch that trains it."""

    net: NetBuilder
    arch: type[DenseArch] = DenseArch


MODELS: dict[str, ModelSpec] = {
    "shared_bottom": ModelSpec(SharedBottomNet),
    "mmoe": ModelSpec(MMoENet),
    "ple": ModelSpec(PLENet),
    "star": ModelSpec(StarNet),
    "distproto": ModelSpec(DistProtoNet, DistProtoArch),
}

#: A watch head: (in_features, S, model config) -> head.
WATCH_HEADS: dict[str, Callable[[int, int, ModelConfig], WatchHead]] = {
    "tr": lambda d, s, c: TRHead(d, s, c.watch.hidden, c.watch.scale_ms, c.watch.target == "ratio"),
    "wlr": lambda d, s, c: WLRHead(d, s, c.watch.hidden, c.watch.scale_ms),
    "d2q": lambda d, s, c: D2QHead(d, s, c.watch.hidden, c.watch.scale_ms, c.watch.d2q),
    "tpm": lambda d, s, c: TPMHead(d, s, c.watch.hidden, c.watch.scale_ms, c.watch.tpm),
    "prowtp": lambda d, s, c: ProWTPHead(
        d, s, c.watch.hidden, c.watch.scale_ms, c.watch.prowtp, c.hvqvae, c.watch.target == "ratio"
    ),
    "mean_ratio": lambda d, s, c: MeanRatioHead(d, s, c.watch.scale_ms),
}


def build_watch_head(in_features: int, num_scenarios: int, config: ModelConfig) -> WatchHead:
    """The head ``config.watch.head`` names, reading task representations of width in_features.

    >>> from protorec.models.config import WatchConfig
    >>> head = build_watch_head(16, 3, ModelConfig(watch=WatchConfig(head="tpm")))
    >>> type(head).__name__, head.out_features
    ('TPMHead', 7)
    """
    if config.watch.head not in WATCH_HEADS:
        raise ValueError(f"model.watch.head = {config.watch.head!r} builds no head")
    return WATCH_HEADS[config.watch.head](in_features, num_scenarios, config)


def build_dense_arch(
    sparse_dim: int, dense_dim: int, num_scenarios: int, config: ModelConfig
) -> DenseArch:
    """The dense arch ``config.name`` names (with the watch head when one is configured).

    Args:
        sparse_dim: width of the pooled embeddings.
        dense_dim: number of dense features.
        num_scenarios: S.
        config: the model section.

    >>> arch = build_dense_arch(8, 2, 3, ModelConfig(name="star"))
    >>> type(arch).__name__, type(arch.net).__name__
    ('DenseArch', 'StarNet')
    """
    spec = MODELS[config.name]
    tasks = config.watch.tasks
    net = spec.net(sparse_dim, dense_dim, num_scenarios, config, tasks)
    if "watch" in tasks:
        # Every backbone builds its own one-logit tower per task; the watch task's is
        # replaced by the configured head, on the same representation width.
        width = net.towers["click"].in_features
        assert isinstance(width, int)  # every backbone's tower records its input width
        net.towers["watch"] = build_watch_head(width, num_scenarios, config)
    return spec.arch(net, num_scenarios, config)
