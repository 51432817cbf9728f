"""The one contract every protorec model keeps, so trainer, evaluator and exporter never ask.

A model is ``sparse_arch`` (a TorchRec EmbeddingBagCollection, built outside and injected,
as in torchrec's DLRM) and ``dense_arch`` (everything else). ``dense_arch.net`` is the
dense, traceable inference path: features -> ``backbone(x, scenario)`` -> one tower per
task. ``dense_arch`` adds the training losses on top.

- ``forward(batch) -> (loss, outputs)`` for TorchRec's train pipelines: the loss is a
  scalar; outputs are detached: "click_logit" (B,) and every weighted loss term as
  "loss/<name>" (they sum to the loss), plus model diagnostics (e.g. "ot/n_iter").
- ``predict(batch) -> {"click_prob": (B,)}``, plus ``"watch_pred_ms": (B,)`` (watch time
  in ms) when ``model.watch.head`` is set: inference, in eval mode, reading only
  ``dense_arch.net``; a row's prediction does not depend on the other rows of its batch
  (optimal transport and batch statistics are training signals only).

TorchRec's pipeline fx-traces ``RecModel.forward`` with every sharded-module-free child as a
leaf: the forward is one embedding lookup and one ``dense_arch`` call, so it traces
whatever the losses do inside.

Adding a task: the backbones are written for T tasks (``tasks`` argument, default
:data:`TASKS`) and return one representation per task, (B, T, D); add the task's name to
``tasks`` (MMoE then gets its gates, PLE its task experts), give it a head in
``ScenarioNet.towers`` (any module ``(rep (B, D), scenario) -> (B, m)``, read as
"<task>_logit", squeezed to (B,) when m = 1), and its loss in
:meth:`DenseArch.compute_losses`. Watch time is done so: ``model.watch.head`` adds the task
"watch", whose tower is a :class:`protorec.models.watch.head.WatchHead` (its own loss and
its own ``predict_ms``); see ``pipeline/model_factory.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchrec import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from protorec.models.batch import Batch
from protorec.models.config import InputConfig, ModelConfig, TowerConfig
from protorec.models.managed_ids import ManagedIds
from protorec.models.modules.feature_input import FeatureInput
from protorec.models.modules.scenario_linear import ScenarioMLP
from protorec.models.watch.head import WatchHead

if TYPE_CHECKING:
    from protorec.models.prototype_report import PrototypeReport

#: The tasks of a click-only model (``ModelConfig.watch.tasks`` adds "watch").
TASKS: tuple[str, ...] = ("click",)


def feature_input(
    sparse_dim: int, dense_dim: int, num_scenarios: int, config: InputConfig
) -> FeatureInput:
    """The FeatureInput of the config's input section (see FeatureInput for shapes)."""
    return FeatureInput(
        sparse_dim, dense_dim, num_scenarios, config.dense_hidden, config.scenario_dim
    )


def scenario_towers(
    in_features: int,
    num_scenarios: int,
    config: TowerConfig,
    tasks: tuple[str, ...] = TASKS,
    batch_norm: bool = False,
) -> nn.ModuleDict:
    """One per-scenario tower per task, each ending in one logit.

    ``batch_norm`` (``model.batch_norm``) normalises the hidden layers, see ScenarioMLP.

    Shapes:
        each tower: rep (B, in_features), scenario (B,)  ->  (B, 1)

    >>> towers = scenario_towers(8, 3, TowerConfig(hidden=[4]))
    >>> towers["click"](torch.randn(2, 8), torch.tensor([0, 2])).shape
    torch.Size([2, 1])
    """
    return nn.ModuleDict(
        {
            task: ScenarioMLP(
                in_features,
                [*config.hidden, 1],
                num_scenarios,
                activation_on_last=False,
                batch_norm=batch_norm,
            )
            for task in tasks
        }
    )


class ScenarioNet(nn.Module):
    """The dense part of a model: ``x = inputs(...)``, ``rep = backbone(x, s)``, per-task towers.

    Traceable by ``torch.fx.symbolic_trace`` and ``torch.export`` (no data-dependent
    control flow); the same module serves training and inference.

    Args:
        inputs: builds x from the pooled embeddings, dense features and scenario.
        backbone: ``(x (B, D_in), scenario (B,)) -> (B, T, D)``, one representation per task.
        towers: one head per task, in the backbone's task order:
            ``(rep (B, D), scenario (B,)) -> (B, 1)``.

    Shapes:
        pooled: (B, D_sparse), dense: (B, D_dense), scenario: (B,) int64 in [0, S)  ->
        {"<task>_logit": (B,)} (subclasses may add representations).
    """

    def __init__(self, inputs: FeatureInput, backbone: nn.Module, towers: nn.ModuleDict) -> None:
        super().__init__()
        self.inputs = inputs
        self.backbone = backbone
        self.towers = towers

    def forward(self, pooled: Tensor, dense: Tensor, scenario: Tensor) -> dict[str, Tensor]:
        x = self.inputs(pooled, dense, scenario)
        return self.heads(self.backbone(x, scenario), scenario)

    def heads(self, rep: Tensor, scenario: Tensor) -> dict[str, Tensor]:
        """Each task's tower on its representation ``rep[:, t]`` (B, T, D) -> {"<task>_logit"}."""
        return {
            f"{task}_logit": tower(rep[:, t], scenario).squeeze(-1)
            for t, (task, tower) in enumerate(self.towers.items())
        }


def click_loss(
    logit: Tensor, click: Tensor, scenario: Tensor, num_scenarios: int, weighting: str
) -> Tensor:
    """Binary cross-entropy of the click logit, rows weighted per ``ModelConfig.task_loss``.

    Args:
        logit: (B,) click logits.
        click: (B,) labels in {0, 1}.
        scenario: (B,) int64 in [0, S).
        num_scenarios: S.
        weighting: "rows": mean over the batch. "scenario": each present scenario's mean
            loss, averaged over the scenarios present (the papers' ``sum_s L_task(s)``,
            at the scale of "rows").

    >>> logit, click, s = torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1])
    >>> loss = click_loss(logit, click, s, 2, "scenario")
    >>> bool(torch.isclose(loss, torch.log(torch.tensor(2.0))))
    True
    """
    per_row = F.binary_cross_entropy_with_logits(logit, click, reduction="none")
    if weighting == "rows":
        return per_row.mean()
    onehot = F.one_hot(scenario, num_scenarios).to(per_row.dtype)
    count = onehot.sum(0)
    per_scenario = per_row @ onehot / count.clamp_min(1)
    return per_scenario.sum() / (count > 0).sum()


class DenseArch(nn.Module):
    """Everything but the embeddings: the traceable ``net`` plus the training losses.

    Losses: the click loss (``ModelConfig.task_loss``, times ``watch.click_weight``; left
    out when that is 0), the watch head's terms times ``watch.weight`` ("watch*", on rows
    with an observed watch time), and ``l2_weight * ||Theta||^2`` over the trainable
    parameters of ``net`` (the embedding tables are left to their fused optimiser, the
    frozen HVQ-VAE of ProWTP out). Subclasses add their own terms in
    :meth:`compute_losses`.

    Args:
        net: the dense inference path.
        num_scenarios: S.
        config: the model section.

    Shapes:
        pooled: (B, D_sparse), batch: a Batch of B rows  ->
        (loss (), {"click_logit": (B,), "loss/<name>": (), ...})
    """

    def __init__(self, net: ScenarioNet, num_scenarios: int, config: ModelConfig) -> None:
        super().__init__()
        self.net = net
        self.num_scenarios = num_scenarios
        self.task_loss = config.task_loss
        self.l2_weight = config.l2_weight
        self.click_weight = config.watch.click_weight
        self.watch_weight = config.watch.weight

    @property
    def watch_head(self) -> WatchHead | None:
        """The watch task's head (the net's "watch" tower), None for a click-only model."""
        head = self.net.towers["watch"] if "watch" in self.net.towers else None
        assert head is None or isinstance(head, WatchHead)  # for the type checker
        return head

    def forward(self, pooled: Tensor, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.net(pooled, batch.dense, batch.scenario)
        losses, diagnostics = self.compute_losses(out, batch)
        loss = torch.stack(list(losses.values())).sum()
        outputs = {"click_logit": out["click_logit"].detach()}
        outputs.update({f"loss/{name}": value.detach() for name, value in losses.items()})
        outputs.update(diagnostics)
        return loss, outputs

    def predict(
        self, pooled: Tensor, dense: Tensor, scenario: Tensor, duration_ms: Tensor
    ) -> dict[str, Tensor]:
        """:meth:`RecModel.predict` from the pooled embeddings (the caller sets eval mode).

        Shapes:
            pooled (B, D_sparse), dense (B, D_dense), scenario (B,), duration_ms (B,)  ->
            {"click_prob": (B,)} (and "watch_pred_ms": (B,) with a watch head)
        """
        out = self.net(pooled, dense, scenario)
        prediction = {"click_prob": torch.sigmoid(out["click_logit"])}
        head = self.watch_head
        if head is not None:
            prediction["watch_pred_ms"] = head.predict_ms(out["watch_logit"], duration_ms)
        return prediction

    def compute_losses(
        self, out: dict[str, Tensor], batch: Batch
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Weighted loss terms (scalars summing to the loss) and detached diagnostics."""
        losses: dict[str, Tensor] = {}
        diagnostics: dict[str, Tensor] = {}
        if self.click_weight > 0:
            losses["click"] = self.click_weight * click_loss(
                out["click_logit"],
                batch.click,
                batch.scenario,
                self.num_scenarios,
                self.task_loss,
            )
        head = self.watch_head
        if head is not None:
            terms, diagnostics = head.losses(out["watch_logit"], batch)
            losses.update({name: self.watch_weight * value for name, value in terms.items()})
        if self.l2_weight > 0:
            losses["l2"] = (
                self.l2_weight * torch.stack([p.square().sum() for p in self.l2_parameters()]).sum()
            )
        return losses, diagnostics

    def l2_parameters(self) -> list[nn.Parameter]:
        """The weights under the ``l2_weight`` penalty: every trainable one of the net."""
        return [p for p in self.net.parameters() if p.requires_grad]

    # Optional hooks. Jobs call them on every model; models without prototypes answer
    # None, so nothing outside models/ asks which model it holds.

    def prototype_report(
        self,
        encode: Callable[[Batch], dict[str, Tensor]],
        batches: Iterable[Batch],
        scenario_names: list[str] | None = None,
    ) -> PrototypeReport | None:
        """Prototype usage of ``batches``; None for a model without prototypes.

        ``encode`` gives the net's outputs of a batch (the caller sets eval mode).
        """
        return None

    def reseed_prototypes(
        self,
        dead_global: list[int],
        dead_scenario: dict[int, list[int]],
        outputs: dict[str, Tensor],
        scenario: Tensor,
        generator: torch.Generator,
    ) -> None:
        """Move the named dead prototypes onto rows' encodings; no-op without prototypes.

        ``outputs`` are the net's outputs of candidate rows, ``scenario`` their scenarios.
        """
        return None


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class RecModel(nn.Module):
    """A multi-scenario model: TorchRec embeddings, then its dense arch (see the module doc).

    Args:
        embedding_bag_collection: the tables (from ``build_ebc``), on the meta device for
            DistributedModelParallel or on CPU for single-process use.
        dense_arch: the dense part with its losses.
        id_maps: per managed sparse feature, its :class:`ManagedIds`.

    Shapes:
        batch of B rows  ->  forward: (loss (), outputs dict), predict: {"click_prob": (B,)}
        (and "watch_pred_ms": (B,) with a watch head)
    """

    def __init__(
        self,
        embedding_bag_collection: EmbeddingBagCollection,
        dense_arch: DenseArch,
        id_maps: dict[str, ManagedIds] | None = None,
    ) -> None:
        super().__init__()
        self.sparse_arch = embedding_bag_collection
        self.dense_arch = dense_arch
        # Managed features' raw id -> row maps: buffers, so checkpoints and exports carry
        # them. The loader applies them; the model never sees a raw id.
        self.id_maps = nn.ModuleDict(id_maps or {})
        # The column order the dense arch was built for: the config's. A sharded collection
        # returns its keys grouped by rank, so the order must not be taken from its output
        # (it once was: a model trained on 2 ranks then scored differently on 1).
        self.feature_names: list[str] = [
            name
            for table in embedding_bag_collection.embedding_bag_configs()
            for name in table.feature_names
        ]

    def managed_id_maps(self) -> dict[str, ManagedIds]:
        """The id maps of the managed features, by feature name (empty without any)."""
        return {name: m for name, m in self.id_maps.items() if isinstance(m, ManagedIds)}

    @property
    def net(self) -> ScenarioNet:
        """The dense, traceable inference path."""
        return self.dense_arch.net

    def pooled(self, sparse: KeyedJaggedTensor) -> Tensor:
        """Pooled embeddings (B, D_sparse) in the config's feature order, however sharded."""
        embeddings = self.sparse_arch(sparse)
        return torch.cat([embeddings[name] for name in self.feature_names], dim=1)

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        return self.dense_arch(self.pooled(batch.sparse), batch)

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """The net's outputs of a batch (logits and any representations), as in training."""
        return self.net(self.pooled(batch.sparse), batch.dense, batch.scenario)

    @torch.no_grad()
    def prototype_report(
        self, batches: Iterable[Batch], scenario_names: list[str] | None = None
    ) -> PrototypeReport | None:
        """Prototype usage of ``batches`` in eval mode; None for a model without prototypes."""
        with eval_mode(self):
            return self.dense_arch.prototype_report(self.encode, batches, scenario_names)

    def predict(self, batch: Batch) -> dict[str, Tensor]:
        """Click probabilities (B,) and, with a watch head, watch times in ms (B,).

        Computed in eval mode from each row alone.
        """
        with eval_mode(self):
            return self.dense_arch.predict(
                self.pooled(batch.sparse), batch.dense, batch.scenario, batch.duration_ms
            )
