"""DistProto (seeds/000) and its GPD-Net option (seeds/001): prototype manifolds aligned by UOT.

Forward (training), after the paper's Algorithm 1:

1. x -> shared extraction ``h = sum_e g_e(x, s) f_e(x)``, gates ``softmax(W_g x)`` (the
   scenario reaches them through its embedding in x; the paper's gate per scenario,
   ``softmax(W_g[s] x)``, is ``model.mmoe.scenario_gates``, which lost on validation days)
   (``model.mmoe``; the "single" extractor ablation: one MLP).
2. ``z_g = E_g(h)``, ``z_s = E_s(h)`` (E_s: one encoder per scenario), both in R^d.
3. Costs ``C = 1 - cos`` to the global prototypes P_g (K_g) and to the row's scenario
   prototypes P_s (K_s). Rows are grouped by scenario and padded; each scenario's rows
   form one problem with P_g and one with its P_s, and all 2S problems go to ONE
   batched solver call. Splitting the paper's single global problem by scenario lets
   each scenario's mass over the global prototypes differ (the exposure mismatch UOT
   is there for), keeps the padded problem small (S x max n_s rows instead of S x B),
   and gives the report each scenario's own plan; in the loss the global problems weigh
   n_s / B, the share of the batch their rows had in the single problem.
4. ``L = L_task + lambda_a sum T*C + lambda_o ||P^_g P^_g^T - I||_F^2 + lambda_w ||Theta||^2``
   (+ GPD-Net's ``gpd_weight * CE(row-normalised T, softmax(cos / temperature))``).

How z_g and z_s reach the prediction (the paper leaves it open; ``tower_input``): each
task's per-scenario tower reads ``[h_t, r]`` with r
- ``encodings``: ``[z^_g, z^_s]`` (z^ = z/|z|), the prototype-aligned points themselves;
- ``prototypes``: ``[m_g, m_s]``, the soft assignment's prototype mixture
  ``m = softmax(cos(z, P) / assign_temperature) P^`` (P^_s: the row's scenario set), so
  the prototypes themselves carry information into the prediction;
- ``both``: the four.
In every case inference needs no transport: a row's prediction depends on that row alone.
With several tasks, z_g and z_s are encoded from the first task's mixture h_0 and shared
by every tower.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchrec.modules.mlp import MLP

from protorec.models.base import TASKS, DenseArch, ScenarioNet, feature_input, scenario_towers
from protorec.models.batch import Batch
from protorec.models.config import ModelConfig
from protorec.models.modules.experts import ScenarioGatedMMoE
from protorec.models.modules.prototype_transport import ScenarioLayout, solve_transport
from protorec.models.modules.prototypes import (
    PrototypeSets,
    orthogonality_loss,
    plan_cross_entropy,
)
from protorec.models.modules.scenario_linear import ScenarioMLP
from protorec.models.prototype_report import PrototypeReport
from protorec.models.shared_bottom import SharedBottom
from protorec.ot.result import OTResult


class DistProtoNet(ScenarioNet):
    """DistProto's dense path: extractor h, encoders z_g and z_s, towers on ``[h, z^_g, z^_s]``.

    z^ = z / |z|: the towers read the encodings on the prototype spheres.

    Args:
        sparse_dim: width of the pooled embeddings.
        dense_dim: number of dense features.
        num_scenarios: S.
        config: the model section (``input``, ``mmoe``, ``distproto``, ``tower``).
        tasks: the task heads.

    Shapes:
        pooled (B, sparse_dim), dense (B, dense_dim), scenario (B,)  ->
        {"click_logit": (B,), "z_g": (B, d), "z_s": (B, d), "cos_g": (B, K_g),
        "cos_s": (B, S K_s)}: the cosines of z_g to P_g and of z_s to every scenario's
        P_s (no "cos_s" without scenario prototypes). The transport's costs are 1 - cos:
        the towers' prototype mixtures and the alignment share one product per set.

    >>> net = DistProtoNet(8, 2, 3, ModelConfig(name="distproto"))
    >>> out = net(torch.randn(4, 8), torch.randn(4, 2), torch.tensor([0, 1, 2, 0]))
    >>> out["click_logit"].shape, out["z_g"].shape, out["cos_g"].shape, out["cos_s"].shape
    (torch.Size([4]), torch.Size([4, 64]), torch.Size([4, 64]), torch.Size([4, 96]))
    """

    def __init__(
        self,
        sparse_dim: int,
        dense_dim: int,
        num_scenarios: int,
        config: ModelConfig,
        tasks: tuple[str, ...] = TASKS,
    ) -> None:
        cfg = config.distproto
        inputs = feature_input(sparse_dim, dense_dim, num_scenarios, config.input)
        if cfg.extractor == "mmoe":
            extractor: nn.Module = ScenarioGatedMMoE(
                inputs.out_features,
                config.mmoe.num_experts,
                config.mmoe.expert_hidden,
                num_scenarios,
                len(tasks),
                scenario_gates=config.mmoe.scenario_gates,
                batch_norm=config.batch_norm,
            )
        else:  # Table 2's "single encoder": one MLP of the experts' widths, no gates.
            extractor = SharedBottom(
                inputs.out_features, config.mmoe.expert_hidden, len(tasks), config.batch_norm
            )
        width = config.mmoe.expert_hidden[-1]
        readout = 4 * cfg.dim if cfg.tower_input == "both" else 2 * cfg.dim
        towers = scenario_towers(
            width + readout, num_scenarios, config.tower, tasks, config.batch_norm
        )
        super().__init__(inputs, extractor, towers)
        self.num_tasks = len(tasks)
        self.tower_input = cfg.tower_input
        self.assign_temperature = cfg.assign_temperature
        encoder_sizes = [*cfg.encoder_hidden, cfg.dim]
        self.global_encoder = MLP(width, encoder_sizes, activation_on_last=False)
        self.scenario_encoder = ScenarioMLP(
            width, encoder_sizes, num_scenarios, activation_on_last=False
        )
        # The prototypes live in the net (the arch's losses read them here) so that the
        # towers can read their mixture; made last, so that the ablation without P_s
        # draws the same initial weights for everything else.
        self.global_prototypes = PrototypeSets(1, cfg.num_global_prototypes, cfg.dim)
        self.scenario_prototypes = (
            PrototypeSets(num_scenarios, cfg.num_scenario_prototypes, cfg.dim)
            if cfg.scenario_prototypes
            else None
        )

    def forward(self, pooled: Tensor, dense: Tensor, scenario: Tensor) -> dict[str, Tensor]:
        x = self.inputs(pooled, dense, scenario)
        h = self.backbone(x, scenario)  # (B, T, H)
        z_g = self.global_encoder(h[:, 0])
        z_s = self.scenario_encoder(h[:, 0], scenario)
        # The towers read the points on the prototype spheres: the cosine alignment leaves
        # the norms of z free, and their drift would otherwise reach the towers.
        zg_hat, zs_hat = F.normalize(z_g, dim=-1), F.normalize(z_s, dim=-1)
        global_set = self.global_prototypes.normalized()[0]  # (K_g, d)
        out = {"z_g": z_g, "z_s": z_s, "cos_g": zg_hat @ global_set.t()}
        if self.scenario_prototypes is not None:
            # Against every scenario's set in one product (S K_s columns: S times the
            # FLOPs, cheaper than gathering a K_s x d set per row).
            scenario_sets = self.scenario_prototypes.normalized().flatten(0, 1)  # (S K_s, d)
            out["cos_s"] = zs_hat @ scenario_sets.t()
        parts = []
        if self.tower_input in ("encodings", "both"):
            parts += [zg_hat, zs_hat]
        if self.tower_input in ("prototypes", "both"):
            parts += [self._mixture(out["cos_g"], global_set)]
            # without scenario prototypes (the ablation), z_s is read as it is
            parts += [
                zs_hat
                if self.scenario_prototypes is None
                else self._mixture(out["cos_s"], scenario_sets, self._own_set(scenario))
            ]
        z = torch.cat(parts, dim=-1).unsqueeze(1).expand(-1, self.num_tasks, -1)
        out.update(self.heads(torch.cat([h, z], dim=-1), scenario))
        return out

    def _own_set(self, scenario: Tensor) -> Tensor:
        """(B, S K_s) True on the columns of each row's own scenario set."""
        assert self.scenario_prototypes is not None
        num_sets, num_prototypes, _ = self.scenario_prototypes.weight.shape
        sets = torch.arange(num_sets, device=scenario.device).repeat_interleave(num_prototypes)
        return scenario.unsqueeze(-1) == sets

    def _mixture(self, cos: Tensor, prototypes: Tensor, mask: Tensor | None = None) -> Tensor:
        """``softmax(cos(z, P) / t) P^`` from (B, K) cosines to (K, d) unit prototypes.

        ``mask`` (B, K) keeps each row's own columns (its scenario's set among every
        set's): the softmax gives the others zero weight, so the mixture stays one
        product. Gathering a (K_s, d) set per row instead made a (B, K_s, d) copy whose
        backward (a scatter-add and two per-row products) took a third of the step.
        """
        logits = cos / self.assign_temperature
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return torch.softmax(logits, dim=-1) @ prototypes


@dataclass
class PrototypeAlignment:
    """One step's transport problems: 0..S-1 global, S..2S-1 per scenario (unless ablated).

    Args:
        row_cost: (G, B, k) each batch row's cosine costs to the global set (g = 0) and,
            unless ablated, to its scenario's set (g = 1), with gradient; prototype
            columns padded to k (zero cost, no mass).
        cost: (P, n, k), P = G S: ``row_cost`` laid out as the solver's problems, detached
            (padding rows hold batch row 0's costs and get no mass). Slot j of problems s
            and S + s is batch row ``layout.index[s, j]``.
        row_mask: (P, n) real rows.
        col_mask: (P, k) real prototypes (the first K_g, resp. K_s).
        weight: (P,) weight of each problem in the losses: n_s / B for the global
            problems (together the paper's one global problem), 1 for scenario problems.
        layout: the batch's rows grouped by scenario.
        result: the solver's result; ``result.plan`` (P, n, k) carries no gradient.

    The losses read the plan back in batch order (``row_plan``) against ``row_cost``: the
    gradient then needs no scatter from the problems' layout back to the rows.
    """

    row_cost: Tensor
    cost: Tensor
    row_mask: Tensor
    col_mask: Tensor
    weight: Tensor
    layout: ScenarioLayout
    result: OTResult

    @property
    def plan(self) -> Tensor:
        return self.result.plan

    @property
    def num_groups(self) -> int:
        """G: 2, or 1 without scenario prototypes."""
        return self.row_cost.shape[0]

    def row_plan(self) -> Tensor:
        """The plan in batch order, (G, B, k): each row's mass in its problems of every group."""
        plan = self.plan.view(self.num_groups, -1, *self.plan.shape[1:])
        return self.layout.unpad(plan)

    def row_weight(self) -> Tensor:
        """(G, B): the weight of each row's problem in each group."""
        return self.weight.view(self.num_groups, -1)[:, self.layout.scenario]

    def alignment(self) -> Tensor:
        """DistProto's ``L_align = sum_p weight_p sum_jk T_p(j, k) C_p(j, k)`` (scalar)."""
        return (self.row_weight().unsqueeze(-1) * self.row_plan() * self.row_cost).sum()

    def plan_cross_entropy(self, temperature: float) -> Tensor:
        """GPD-Net's ``sum_p weight_p mean_j CE_p(j)`` over each problem's rows with mass."""
        group_columns = self.col_mask.view(self.num_groups, -1, self.col_mask.shape[-1])[:, 0]
        ce, counted = plan_cross_entropy(self.row_cost, self.row_plan(), group_columns, temperature)
        # Sums per problem: over the rows of each scenario, (G, B) @ (B, S).
        scenario = self.layout.scenario
        member = F.one_hot(scenario, self.layout.counts.shape[0]).to(ce.dtype)
        per_problem = (ce @ member) / (counted.to(ce.dtype) @ member).clamp_min(1)
        return (self.weight * per_problem.flatten()).sum()


def _widen(cost: Tensor, width: int) -> Tensor:
    """``cost`` (B, K) with zero columns appended up to ``width`` (padding prototypes)."""
    return cost if cost.shape[-1] == width else F.pad(cost, (0, width - cost.shape[-1]))


class DistProtoArch(DenseArch):
    """DistProto's training head: the net, the prototypes and the losses of the paper.

    Losses ("loss/<name>"): click, align (``lambda_a sum T*C`` over all problems), ortho
    (unless the ablation), proto_ce (GPD-Net option), l2. Diagnostics: "ot/n_iter",
    "ot/sweeps" (the UOT's cold-start sweeps) and "ot/converged" of the step's solver
    call (a step whose solver hit ``max_iter`` still trains, on the last plan, and says
    so there).

    Args:
        net: a DistProtoNet.
        num_scenarios: S.
        config: the model section.

    Shapes:
        pooled: (B, D_sparse), batch of B rows  ->  (loss (), outputs)
    """

    align_step: Tensor

    def __init__(self, net: DistProtoNet, num_scenarios: int, config: ModelConfig) -> None:
        super().__init__(net, num_scenarios, config)
        self.config = config.distproto
        cfg = self.config
        # Prototype columns of the batched problems: the larger of K_g and K_s.
        self.num_columns = max(
            cfg.num_global_prototypes, cfg.num_scenario_prototypes if cfg.scenario_prototypes else 0
        )
        # Training steps seen, for the alignment warm-up; a tensor (no host sync) saved
        # with the model only when the warm-up is on, so other checkpoints keep their keys.
        self.register_buffer(
            "align_step", torch.zeros((), dtype=torch.long), persistent=cfg.align_warmup_steps > 0
        )

    @property
    def global_prototypes(self) -> PrototypeSets:
        """P_g (the net's)."""
        prototypes = self.net.global_prototypes
        assert isinstance(prototypes, PrototypeSets)  # DistProtoArch wraps a DistProtoNet
        return prototypes

    @property
    def scenario_prototypes(self) -> PrototypeSets | None:
        """P_s (the net's), None in the "no scenario prototypes" ablation."""
        prototypes = self.net.scenario_prototypes
        assert prototypes is None or isinstance(prototypes, PrototypeSets)
        return prototypes

    def l2_parameters(self) -> list[nn.Parameter]:
        """The net's weights but the prototypes.

        Only the prototypes' directions matter (cosine costs, normalised mixtures), and
        the orthogonality term is their regulariser.
        """
        prototypes = {id(p) for p in self.global_prototypes.parameters()}
        if self.scenario_prototypes is not None:
            prototypes |= {id(p) for p in self.scenario_prototypes.parameters()}
        return [p for p in super().l2_parameters() if id(p) not in prototypes]

    def align_scale(self) -> float | Tensor:
        """lambda_a of this step: ramped over ``align_warmup_steps`` training steps.

        Counts a step per call in training mode (one per batch), none in eval mode.
        """
        cfg = self.config
        if cfg.align_warmup_steps == 0:
            return cfg.align_weight
        if self.training:
            self.align_step += 1
        ramp = (self.align_step.float() / cfg.align_warmup_steps).clamp(max=1.0)
        return cfg.align_weight * ramp

    def transport(self, out: dict[str, Tensor], scenario: Tensor) -> PrototypeAlignment:
        """Costs and plans of every problem of the batch, from one solver call.

        Problems: for each scenario s, its rows against the global prototypes (problem s)
        and, unless ablated, against its own prototypes (problem S + s); rows grouped by
        scenario and padded to the largest group, prototypes padded to max(K_g, K_s).
        DistProto's cost is ``C = 1 - cos``.

        Args:
            out: the net's outputs: "cos_g" (B, K_g) and "cos_s" (B, S K_s).
            scenario: (B,) int64 in [0, S).
        """
        cfg = self.config
        S = self.num_scenarios
        cos_g = out["cos_g"]
        layout = ScenarioLayout.from_scenario(scenario, S)
        width = self.num_columns
        columns = torch.arange(width, device=cos_g.device)
        k_g = cfg.num_global_prototypes
        # Each row's costs first, (B, width) per prototype set; then one gather lays out
        # all 2S problems for the solver.
        rows = [_widen(1.0 - cos_g, width)]
        cols = [(columns < k_g).expand(S, -1)]
        # The paper's one global problem over the batch, split by scenario: its rows weigh
        # n_s / B, as their mass would there; each scenario problem weighs one.
        weight = [layout.counts.to(cos_g.dtype) / scenario.shape[0]]
        if self.scenario_prototypes is not None:
            k_s = cfg.num_scenario_prototypes
            # the row's own set among every scenario's S K_s columns
            own = (
                out["cos_s"].view(-1, S, k_s).gather(1, scenario.view(-1, 1, 1).expand(-1, 1, k_s))
            )
            rows.append(_widen(1.0 - own.squeeze(1), width))
            cols.append((columns < k_s).expand(S, -1))
            weight.append((layout.counts > 0).to(cos_g.dtype))
        # (G, B, width) -> (G, S, n, width) -> (G S, n, width); padding slots hold row 0's
        # costs, which get no mass (the plan is zero there).
        row_cost = torch.stack(rows)
        cost = row_cost.detach()[:, layout.index].flatten(0, 1)
        row_mask = layout.mask.repeat(len(rows), 1)
        col_mask = torch.cat(cols)
        result = solve_transport(cost, row_mask, col_mask, cfg.ot)
        return PrototypeAlignment(
            row_cost, cost, row_mask, col_mask, torch.cat(weight), layout, result
        )

    def compute_losses(
        self, out: dict[str, Tensor], batch: Batch
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        losses, diagnostics = super().compute_losses(out, batch)
        cfg = self.config
        align = self.transport(out, batch.scenario)
        losses["align"] = self.align_scale() * align.alignment()
        if cfg.orthogonality:
            losses["ortho"] = cfg.ortho_weight * orthogonality_loss(
                self.global_prototypes.weight[0]
            )
        if cfg.gpd:
            losses["proto_ce"] = cfg.gpd_weight * align.plan_cross_entropy(cfg.gpd_temperature)
        device = align.cost.device
        diagnostics["ot/n_iter"] = torch.tensor(float(align.result.n_iter), device=device)
        diagnostics["ot/converged"] = torch.tensor(float(align.result.converged), device=device)
        diagnostics["ot/sweeps"] = torch.tensor(float(align.result.sweeps), device=device)
        return losses, diagnostics

    def prototype_report(
        self,
        encode: Callable[[Batch], dict[str, Tensor]],
        batches: Iterable[Batch],
        scenario_names: list[str] | None = None,
    ) -> PrototypeReport:
        """Run the transport on ``batches`` (no training) and sum each prototype's plan mass.

        Returns:
            the report; usage sums equal the plans' masses.
        """
        S = self.num_scenarios
        k_g = self.config.num_global_prototypes
        k_s = self.config.num_scenario_prototypes
        rows = torch.zeros(S, dtype=torch.long)
        global_usage = torch.zeros(S, k_g, dtype=torch.float64)
        scenario_usage = (
            torch.zeros(S, k_s, dtype=torch.float64)
            if self.scenario_prototypes is not None
            else None
        )
        for batch in batches:
            out = encode(batch)
            align = self.transport(out, batch.scenario)
            plan = align.plan.double().cpu()
            rows += align.layout.counts.cpu()
            global_usage += plan[:S, :, :k_g].sum(1)
            if scenario_usage is not None:
                scenario_usage += plan[S:, :, :k_s].sum(1)
        prototypes = self.global_prototypes.normalized()[0].detach().double().cpu()
        names = scenario_names or [str(s) for s in range(S)]
        return PrototypeReport(
            names, rows, global_usage, scenario_usage, prototypes @ prototypes.t()
        )

    @torch.no_grad()
    def reseed_prototypes(
        self,
        dead_global: list[int],
        dead_scenario: dict[int, list[int]],
        outputs: dict[str, Tensor],
        scenario: Tensor,
        generator: torch.Generator,
    ) -> None:
        """Move each dead prototype onto a seeded draw of the candidate rows' encodings.

        A moved prototype keeps its set's mean norm; scenario s draws from its own rows.
        """

        def reseed(weight: Tensor, dead: list[int], candidates: Tensor) -> None:
            if len(candidates) == 0 or not dead:
                return
            pick = torch.randint(len(candidates), (len(dead),), generator=generator)
            norm = weight.norm(dim=-1).mean()
            weight[dead] = (F.normalize(candidates[pick].float(), dim=-1) * norm).to(weight)

        reseed(self.global_prototypes.weight.data[0], dead_global, outputs["z_g"])
        if self.scenario_prototypes is not None:
            for s, dead in dead_scenario.items():
                reseed(
                    self.scenario_prototypes.weight.data[s],
                    dead,
                    outputs["z_s"][scenario.cpu() == s],
                )
