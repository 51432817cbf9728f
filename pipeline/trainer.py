"""The training engine every job uses: DistributedModelParallel + a TorchRec train pipeline.

1 process on a laptop (gloo), N under ``torchrun`` on a node, or N nodes over NCCL: the
code path is the same. TorchRec's planner shards the embedding tables over the actual
topology; the tables train with a fused row-wise optimiser applied in backward (fbgemm),
the dense part with AdamW through DDP; both are one ``CombinedOptimizer`` so that
checkpoints hold their state together.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints, ShardingPlan
from torchrec.distributed.train_pipeline import TrainPipelineBase, TrainPipelineSparseDist
from torchrec.distributed.types import ModuleSharder, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.clipping import GradientClipping, GradientClippingOptimizer
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad
from tqdm import tqdm

from protorec.models.base import RecModel
from protorec.models.batch import Batch
from protorec.pipeline.config import ConfigError
from protorec.pipeline.distributed import (
    DistContext,
    average_batch_norm_statistics,
    gather_to_rank0,
)
from protorec.pipeline.tensorboard import TensorBoardLog
from protorec.pipeline.train_config import TrainConfig

log = logging.getLogger(__name__)

_EMBEDDING_OPTIMIZERS = {
    "rowwise_adagrad": RowWiseAdagrad,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}

#: The fused table optimisers fbgemm's CPU kernels implement (its CPU mode asserts on any
#: other, after the model is built): checked before any work by check_embedding_optimizer.
CPU_EMBEDDING_OPTIMIZERS = ("rowwise_adagrad", "sgd")


def check_embedding_optimizer(train: TrainConfig, device: torch.device) -> None:
    """Refuse a table optimiser that fbgemm cannot run on ``device``, naming what can.

    Raises:
        ConfigError: ``train.embedding_optimizer`` is not supported on the CPU.
    """
    if device.type == "cpu" and train.embedding_optimizer not in CPU_EMBEDDING_OPTIMIZERS:
        raise ConfigError(
            "config",
            "train.embedding_optimizer",
            f"{train.embedding_optimizer!r} is not supported on the CPU by fbgemm's fused "
            f"table optimisers; use one of {', '.join(CPU_EMBEDDING_OPTIMIZERS)} (or a CUDA "
            "device)",
        )


#: Rows per seeded block when initialising tables (see init_embeddings).
_INIT_BLOCK_ROWS = 1 << 16


def _ebcs(model: torch.nn.Module) -> list[EmbeddingBagCollection]:
    return [m for m in model.modules() if isinstance(m, EmbeddingBagCollection)]


def _table_names(model: torch.nn.Module) -> set[str]:
    return {t.name for ebc in _ebcs(model) for t in ebc.embedding_bag_configs()}


def make_topology(
    ctx: DistContext,
    world_size: int | None = None,
    hbm_gb: float | None = None,
    local_world_size: int | None = None,
) -> Topology:
    """TorchRec's Topology for this run, or for a target cluster (``protorec plan``)."""
    kwargs = {}
    if hbm_gb is not None:
        kwargs["hbm_cap"] = int(hbm_gb * 1024**3)
    return Topology(
        world_size=world_size or ctx.world_size,
        compute_device=ctx.device.type,
        local_world_size=local_world_size,
        **kwargs,
    )


def make_sharders() -> list[ModuleSharder]:
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder

    return [EmbeddingBagCollectionSharder()]


def plan_sharding(
    model: torch.nn.Module,
    topology: Topology,
    batch_size: int,
    collective: bool = True,
) -> ShardingPlan:
    """Ask TorchRec's planner for a plan; ``collective`` makes every rank agree on it."""
    # On CPU fbgemm has no row-wise / column-wise kernels for every optimiser: keep the
    # planner to table-wise there, and let it choose freely on CUDA. Not data-parallel
    # either: its optimiser state is keyed differently, so a checkpoint written by N ranks
    # (where the planner may pick table-wise) would not load on M ranks (data-parallel).
    constraints = None
    if topology.compute_device == "cpu":
        constraints = {
            name: ParameterConstraints(sharding_types=[ShardingType.TABLE_WISE.value])
            for name in _table_names(model)
        }
    planner = EmbeddingShardingPlanner(
        topology=topology, batch_size=batch_size, constraints=constraints
    )
    if collective and dist.is_initialized():
        return planner.collective_plan(model, make_sharders(), dist.GroupMember.WORLD)
    return planner.plan(model, make_sharders())


@dataclass
class ShardedModel:
    """A model wrapped by DistributedModelParallel, with its combined optimiser."""

    dmp: DistributedModelParallel
    optimizer: KeyedOptimizer
    plan: ShardingPlan

    @property
    def module(self) -> RecModel:
        """The RecModel inside DMP (its sharded modules replaced by DMP's)."""
        module = self.dmp.module
        assert isinstance(module, RecModel)  # shard_model wraps RecModels only
        return module


def shard_model(
    model: torch.nn.Module, ctx: DistContext, train: TrainConfig, batch_size: int
) -> ShardedModel:
    """Fuse the embedding optimiser, plan, shard and wrap ``model``; build its optimiser.

    ``model``'s EmbeddingBagCollections should live on the meta device: DMP materialises
    each rank's shards only. Tables are then initialised by :func:`init_embeddings`, so the
    weights do not depend on the number of ranks.
    """
    check_embedding_optimizer(train, ctx.device)
    emb_params = [p for ebc in _ebcs(model) for p in ebc.parameters()]
    apply_optimizer_in_backward(
        _EMBEDDING_OPTIMIZERS[train.embedding_optimizer], emb_params, {"lr": train.embedding_lr}
    )
    plan = plan_sharding(model, make_topology(ctx), batch_size)
    dmp = DistributedModelParallel(
        module=model, device=ctx.device, plan=plan, sharders=make_sharders()
    )
    init_embeddings(dmp, train.seed)
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(dmp.named_parameters())),
        lambda params: torch.optim.AdamW(
            params, lr=train.dense_lr, weight_decay=train.weight_decay
        ),
    )
    optimizer: KeyedOptimizer = CombinedOptimizer([dmp.fused_optimizer, dense])
    if train.grad_clip_norm > 0:
        optimizer = GradientClippingOptimizer(
            optimizer, clipping=GradientClipping.NORM, max_gradient=train.grad_clip_norm
        )
    return ShardedModel(dmp=dmp, optimizer=optimizer, plan=plan)


def global_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """The whole tensor's shape, sharded or not.

    A ShardedTensor's ``metadata()``, not its ``size()``: that goes through the deprecated
    ShardedTensor API and warns on every call.
    """
    metadata = getattr(tensor, "metadata", None) if hasattr(tensor, "local_shards") else None
    return tuple(metadata().size) if metadata is not None else tuple(tensor.shape)


def local_shards(tensor: torch.Tensor) -> list[tuple[torch.Tensor, int, int]]:
    """(local tensor, its first global row, its first column) of each shard this rank holds.

    A plain tensor is one shard at (0, 0); a 1-D sharded tensor (row-wise optimiser state)
    starts at column 0.
    """
    shards = getattr(tensor, "local_shards", None)
    if shards is None:
        return [(tensor, 0, 0)]
    return [
        (s.tensor, s.metadata.shard_offsets[0], (list(s.metadata.shard_offsets) + [0])[1])
        for s in shards()
    ]


def init_embeddings(dmp: DistributedModelParallel, seed: int) -> None:
    """Initialise every table shard from (seed, table, row block), whatever the sharding.

    TorchRec initialises each shard from its rank's RNG stream, so the same seed gives
    different tables on 1 and on 2 ranks. Here each block of rows draws from its own
    generator, so a row's initial vector is the same under any plan.
    """
    with torch.no_grad():
        for name, tensor in dmp.state_dict().items():
            if not name.endswith(".weight") or "embedding_bags" not in name:
                continue
            table = name.split("embedding_bags.")[1].rsplit(".weight", 1)[0]
            for local, row0, col0 in local_shards(tensor):
                num_rows, dim = local.shape
                full = global_shape(tensor)
                full_dim = full[1] if len(full) == 2 else dim
                bound = 1.0 / math.sqrt(full_dim)
                for b0 in range(
                    row0 // _INIT_BLOCK_ROWS * _INIT_BLOCK_ROWS, row0 + num_rows, _INIT_BLOCK_ROWS
                ):
                    gen = torch.Generator().manual_seed(stable_seed(seed, table, b0))
                    block = torch.empty(_INIT_BLOCK_ROWS, full_dim).uniform_(
                        -bound, bound, generator=gen
                    )
                    lo, hi = max(b0, row0), min(b0 + _INIT_BLOCK_ROWS, row0 + num_rows)
                    local[lo - row0 : hi - row0].copy_(block[lo - b0 : hi - b0, col0 : col0 + dim])


def stable_seed(seed: int, table: str, block: int) -> int:
    """A generator seed from (seed, table, block), the same in every process."""
    # Python's hash() of a str changes per process: a fixed FNV-1a over the key instead.
    h = 0xCBF29CE484222325
    for byte in f"{seed}/{table}/{block}".encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFF_FFFF_FFFF_FFFF
    return h & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class TrainStats:
    """What a pass did: steps, samples (all ranks), seconds, last losses."""

    steps: int = 0
    samples: int = 0
    seconds: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def _scalar_losses(outputs: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in outputs.items() if k.startswith("loss")}


def train_pass(
    sharded: ShardedModel,
    batches: Iterable[Batch],
    ctx: DistContext,
    train: TrainConfig,
    num_batches: int | None = None,
    on_step=None,
    progress: bool = True,
    tensorboard: TensorBoardLog | None = None,
    step_offset: int = 0,
) -> TrainStats:
    """One pass over ``batches`` with the configured TorchRec pipeline.

    ``on_step(step, outputs)`` is called after each step (the daily job checkpoints
    from there). Every rank must be given the same number of batches; the pass ends with
    every rank's BatchNorm statistics set to the ranks' mean, so that evaluation, export
    and checkpoint all see one model. With
    ``tensorboard`` (main rank), every ``log_every`` steps' losses, diagnostics, samples/s
    and learning rates go there too, at step ``step_offset + step``.
    """
    sharded.dmp.train()
    pipe_cls = TrainPipelineSparseDist if train.pipeline == "sparse_dist" else TrainPipelineBase
    pipeline = pipe_cls(sharded.dmp, sharded.optimizer, ctx.device)
    it: Iterator[Batch] = iter(batches)
    stats = TrainStats()
    bar = tqdm(
        total=num_batches,
        desc="train",
        disable=not (progress and ctx.is_main),
        unit="batch",
        leave=False,
    )
    t0 = t_log = time.perf_counter()
    samples_since_log = 0
    while True:
        try:
            outputs = pipeline.progress(it)
        except StopIteration:
            break
        stats.steps += 1
        rows = int(outputs["click_logit"].shape[0]) * ctx.world_size
        stats.samples += rows
        samples_since_log += rows
        bar.update(1)
        if on_step is not None:
            on_step(stats.steps, outputs)
        if stats.steps % train.log_every == 0:
            now = time.perf_counter()
            stats.losses = _scalar_losses(outputs)
            rate = samples_since_log / (now - t_log)
            if ctx.is_main:
                parts = " ".join(f"{k}={v:.4f}" for k, v in stats.losses.items())
                log.info("step %d %s samples/s=%.0f", stats.steps, parts, rate)
                if tensorboard is not None:
                    tensorboard.train_step(
                        step_offset + stats.steps,
                        outputs,
                        rate,
                        {"embedding": train.embedding_lr, "dense": train.dense_lr},
                    )
            t_log, samples_since_log = now, 0
    bar.close()
    if isinstance(pipeline, TrainPipelineSparseDist):
        # The pipeline rewires the sharded modules' forward; give the model back intact.
        pipeline.detach()
    average_batch_norm_statistics(sharded.dmp)
    stats.seconds = time.perf_counter() - t0
    return stats


@torch.no_grad()
def predict_pass(
    sharded: ShardedModel, batches: Iterable[Batch], ctx: DistContext
) -> dict[str, np.ndarray] | None:
    """Predictions and keys of every row of ``batches``, gathered to rank 0 only.

    Returns numpy arrays on rank 0: the model's ``predict`` outputs plus the batch's
    scenario, click, watch_ms, duration_ms, user_id and day, ranks' rows one rank after
    the other; None on the other ranks. An exact AUC needs every score in one place: one
    rank holds them, the others only their own rows (compute the metrics on rank 0 and
    hand them to every rank with ``distributed.broadcast_from_rank0``).
    """
    sharded.dmp.eval()
    module = sharded.module
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        batch = batch.to(ctx.device)
        out = module.predict(batch)
        cols = {k: v for k, v in out.items()}
        for key in ("scenario", "click", "watch_ms", "duration_ms", "user_id", "day"):
            cols[key] = getattr(batch, key)
        for k, v in cols.items():
            parts.setdefault(k, []).append(
                v.detach().float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
            )
    return gather_to_rank0({k: np.concatenate(v) for k, v in parts.items()})
