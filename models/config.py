"""The model section of the config: which architecture, and its sizes and loss weights.

Every size, loss weight, solver setting and ablation switch of the multi-scenario models
is a field here, checked in ``__post_init__``; YAML loads into it with
:func:`protorec.pipeline.config.from_dict`. One sub-section per architecture: a config can
hold all of them and ``name`` picks the one that is built.

>>> from protorec.pipeline.config import from_dict
>>> cfg = from_dict(ModelConfig, {"name": "distproto", "distproto": {"gpd": True}})
>>> cfg.distproto.num_global_prototypes, cfg.distproto.ot.eps, cfg.mmoe.num_experts
(64, 0.05, 8)
>>> from_dict(ModelConfig, {"mmoe": {"num_experts": 0}}, source="a.yaml", key="model")
Traceback (most recent call last):
...
protorec.pipeline.config.ConfigError: a.yaml: model.mmoe: num_experts must be >= 1, got 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from protorec.models.hvqvae import HVQVAEConfig
from protorec.models.watch.d2q import D2QConfig
from protorec.models.watch.tpm import TPMConfig

ModelName = Literal["shared_bottom", "mmoe", "ple", "star", "distproto"]
WatchHeadName = Literal["none", "tr", "wlr", "d2q", "tpm", "prowtp", "mean_ratio"]


def _check_sizes(name: str, sizes: list[int], allow_empty: bool = True) -> None:
    if not allow_empty and not sizes:
        raise ValueError(f"{name} must list at least one layer width")
    bad = [s for s in sizes if s < 1]
    if bad:
        raise ValueError(f"{name} widths must be >= 1, got {sizes}")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def _check_nonnegative(**values: float) -> None:
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass
class InputConfig:
    """How a row's features become one input vector x (shared by every model).

    x = [pooled sparse embeddings, MLP(dense features), scenario embedding].

    Args:
        dense_hidden: widths of the dense-feature MLP (ReLU after every layer); its last
            width is the dense part of x. Ignored when the config has no dense features.
        scenario_dim: width of the scenario embedding (the scenario is an input as well
            as the condition of the gates and towers).
    """

    dense_hidden: list[int] = field(default_factory=lambda: [16])
    scenario_dim: int = 8

    def __post_init__(self) -> None:
        _check_sizes("dense_hidden", self.dense_hidden, allow_empty=False)
        if self.scenario_dim < 1:
            raise ValueError(f"scenario_dim must be >= 1, got {self.scenario_dim}")


@dataclass
class TowerConfig:
    """The per-scenario, per-task towers on top of every backbone.

    Args:
        hidden: hidden widths of each tower (ReLU); the tower ends in one logit.
            Each scenario has its own weights.
    """

    hidden: list[int] = field(default_factory=lambda: [64])

    def __post_init__(self) -> None:
        _check_sizes("hidden", self.hidden)


@dataclass
class SharedBottomConfig:
    """SharedBottom (Caruana 1997): one MLP shared by every scenario and task.

    Args:
        hidden: widths of the shared MLP (ReLU after every layer).
    """

    hidden: list[int] = field(default_factory=lambda: [256, 128])

    def __post_init__(self) -> None:
        _check_sizes("hidden", self.hidden, allow_empty=False)


@dataclass
class MMoEConfig:
    """MMoE (Ma et al., KDD 2018): shared experts mixed by gates; also DistProto's extractor.

    Args:
        num_experts: E, the number of shared experts (the DistProto paper: E = 8).
        expert_hidden: widths of each expert MLP (ReLU); the last is the width of h.
        scenario_gates: one gate per task and scenario (DistProto's "experts gated by
            scenario") instead of one gate per task shared by every scenario (MMoE as
            published; the scenario still reaches the gate through its embedding in x).
            Off by default: shared gates won on validation days (docs/results/simulator.md).
    """

    num_experts: int = 8
    expert_hidden: list[int] = field(default_factory=lambda: [128, 64])
    scenario_gates: bool = False

    def __post_init__(self) -> None:
        if self.num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {self.num_experts}")
        _check_sizes("expert_hidden", self.expert_hidden, allow_empty=False)


@dataclass
class PLEConfig:
    """PLE (Tang et al., RecSys 2020): stacked CGC layers, experts shared and per scenario.

    Args:
        num_layers: CGC layers stacked.
        num_shared_experts: experts every row uses.
        num_scenario_experts: experts of each scenario (a row uses its scenario's).
        num_task_experts: experts of each task (PLE's task-specific experts; with the one
            click task they are shared by every row, hence 0 by default).
        expert_hidden: widths of each expert MLP (ReLU); the last is the layer's output.
    """

    num_layers: int = 2
    num_shared_experts: int = 2
    num_scenario_experts: int = 1
    num_task_experts: int = 0
    expert_hidden: list[int] = field(default_factory=lambda: [64])

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        counts = (self.num_shared_experts, self.num_scenario_experts, self.num_task_experts)
        if min(counts) < 0:
            raise ValueError(f"expert counts must be >= 0, got {counts}")
        if sum(counts) < 1:
            raise ValueError("PLE needs at least one expert per gate")
        _check_sizes("expert_hidden", self.expert_hidden, allow_empty=False)


@dataclass
class STARConfig:
    """STAR (Sheng et al., CIKM 2021): star-topology FCN, partitioned norm, auxiliary net.

    Args:
        hidden: widths of the star-topology layers (weights shared x scenario-specific).
        aux_hidden: hidden widths of the auxiliary network on the scenario (one logit).
        norm_momentum: momentum of the per-scenario running statistics of the
            partitioned normalisation (BatchNorm's convention).
        norm_eps: variance floor of the partitioned normalisation.
    """

    hidden: list[int] = field(default_factory=lambda: [256, 128])
    aux_hidden: list[int] = field(default_factory=lambda: [32])
    norm_momentum: float = 0.1
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        _check_sizes("hidden", self.hidden, allow_empty=False)
        _check_sizes("aux_hidden", self.aux_hidden)
        if not 0.0 < self.norm_momentum <= 1.0:
            raise ValueError(f"norm_momentum must be in (0, 1], got {self.norm_momentum}")
        _check_positive(norm_eps=self.norm_eps)


@dataclass
class OTConfig:
    """DistProto's transport: entropic UOT (``protorec.ot.uot.solve_uot``) or balanced OT.

    Args:
        eps: entropic regularisation (paper: 0.05).
        tau_a: KL weight of the sample marginal (paper: 1; ``.inf`` makes it exact).
        tau_b: KL weight of the prototype marginal (paper: 1; ``.inf`` makes it exact).
        balanced: Table 2's "balanced OT" ablation: both marginals exact, solved by POT's
            batched log-domain Sinkhorn (``ot.batch.solve_batch``) instead of UOT.
        reg_type: entropy term of the UOT solver, "entropy" (the paper's H(T)) or "kl".
        max_iter: iteration cap of the solver (Newton iterations for UOT, Sinkhorn sweeps
            for balanced OT).
        tol: the solver's stopping tolerance on the marginal residual.
        check_every: iterations between convergence checks (each a host sync on GPU).

    The plan is a training signal: ``tol = 1e-4`` (marginal residual relative to a
    problem's mass) took 3.9 Newton iterations a step at batch 512 against 8.6 for 1e-5.
    Warm-starting from the previous batch's prototype potentials was measured too and
    did not help (7.4 iterations cold, 8.6 warm; again for issue 17 at tol 1e-4 over 98
    training steps: 4.2 cold, 12.1 warm, docs/ot.md): each batch brings new rows.
    """

    eps: float = 0.05
    tau_a: float = 1.0
    tau_b: float = 1.0
    balanced: bool = False
    reg_type: Literal["entropy", "kl"] = "entropy"
    max_iter: int = 100
    tol: float = 1e-4
    check_every: int = 2

    def __post_init__(self) -> None:
        _check_positive(eps=self.eps, tau_a=self.tau_a, tau_b=self.tau_b, tol=self.tol)
        if math.isinf(self.eps):
            raise ValueError("eps must be finite")
        if not self.balanced and math.isinf(self.tau_a) and math.isinf(self.tau_b):
            raise ValueError("tau_a = tau_b = inf is balanced OT: set balanced: true instead")
        if self.max_iter < 1 or self.check_every < 1:
            raise ValueError(
                f"max_iter and check_every must be >= 1, got {self.max_iter}, {self.check_every}"
            )


@dataclass
class DistProtoConfig:
    """DistProto (seeds/000) and its GPD-Net option (seeds/001); defaults are the paper's.

    The shared extractor is the MMoE of ``model.mmoe`` (E = 8 by default), so DistProto and
    MMoE compare on the same experts. The paper gives no loss weights: the defaults of
    ``align_weight``, ``ortho_weight`` and ``gpd_weight`` are ours.

    Args:
        dim: d, width of z_g = E_g(h) and z_s = E_s(h) and of the prototypes (paper: 64).
        num_global_prototypes: K_g (paper: 64).
        num_scenario_prototypes: K_s, per scenario (paper: 32).
        encoder_hidden: hidden widths of E_g and of each E_s before the last layer to d.
        extractor: "mmoe", or "single" (Table 2's "single encoder" ablation: one MLP of
            the experts' widths, no gates).
        scenario_prototypes: False is Table 2's "no scenario prototypes" ablation: no P_s,
            no scenario transport problems (E_s and z_s stay, unaligned).
        orthogonality: False is Table 2's "no orthogonality" ablation.
        align_weight: lambda_a of the alignment loss sum T*C.
        align_warmup_steps: N; lambda_a rises linearly from lambda_a / N at the first
            training step to lambda_a at step N (0: full weight from the start), so that
            the extractor learns the click task before the alignment pulls its encodings.
            The step count is saved with the model when N > 0 (a warm start goes on).
        ortho_weight: lambda_o of ||P^ P^T - I||_F^2.
        gpd: GPD-Net's auxiliary supervision: the row-normalised plan as soft labels of a
            cross-entropy over prototype similarities.
        gpd_weight: weight of that cross-entropy.
        gpd_temperature: temperature of the similarity softmax (cosine / temperature).
        ot: the transport solver.
        tower_input: what the towers read beside the extractor's h: ``encodings``
            (z^_g, z^_s), ``prototypes`` (the soft assignment's prototype mixtures) or
            ``both`` (models/distproto.py). ``both`` won on the simulator's validation
            days, 3 seeds (docs/results/simulator.md).
        assign_temperature: temperature of the soft assignment ``softmax(cos / t)``
            behind the prototype mixtures.
    """

    dim: int = 64
    num_global_prototypes: int = 64
    num_scenario_prototypes: int = 32
    encoder_hidden: list[int] = field(default_factory=list)
    extractor: Literal["mmoe", "single"] = "mmoe"
    scenario_prototypes: bool = True
    orthogonality: bool = True
    align_weight: float = 0.1
    align_warmup_steps: int = 0
    ortho_weight: float = 1e-3
    gpd: bool = False
    gpd_weight: float = 0.01
    gpd_temperature: float = 0.1
    ot: OTConfig = field(default_factory=OTConfig)
    tower_input: Literal["encodings", "prototypes", "both"] = "both"
    assign_temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.assign_temperature <= 0:
            raise ValueError(f"assign_temperature must be > 0, got {self.assign_temperature}")
        for name in ("dim", "num_global_prototypes", "num_scenario_prototypes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        _check_sizes("encoder_hidden", self.encoder_hidden)
        if self.align_warmup_steps < 0:
            raise ValueError(f"align_warmup_steps must be >= 0, got {self.align_warmup_steps}")
        _check_nonnegative(
            align_weight=self.align_weight,
            ortho_weight=self.ortho_weight,
            gpd_weight=self.gpd_weight,
        )
        _check_positive(gpd_temperature=self.gpd_temperature)


@dataclass
class ProWTPConfig:
    """ProWTP's sizes, loss weights and solver settings (the prototypes: ``model.hvqvae``).

    The paper gives no loss weights nor lambda; the defaults are ours.

    Args:
        dim: d, width of h = f(x) and of the projected prototypes W_p p.
        regressor_hidden: hidden widths of the regressor g (ReLU), d -> ... -> 1.
        temperature: tau of eqs. 9 and 11 and of the inference softmax.
        ot_lambda: lambda of eq. 8, the L2 penalty on the prototype marginal.
        ot_max_iter: interior-point iterations at most per batch.
        ot_tol: the solver's relative duality gap. 1e-4 (not 1e-6): the plan is a training
            signal; KuaiRand validation XAUC and MAE the same within seed noise
            (docs/ot.md), and float32 costs then iterate in float32.
        ot_check_every: iterations between convergence tests (a host sync on GPU). The
            plans do not depend on it (a problem stops moving once under tol); on CPU a
            test costs nothing and 1 (the default) saves the iterations run past convergence;
            on GPU 5 saves host syncs.
        assign_weight: weight of L_assign (eq. 9).
        compact_weight: weight of L_compact (eqs. 10-11).
        compact_sample: share of the batch's rows L_compact is computed on (paper: 20%).
        task_weight: weight of L_task (eq. 12) on ``g(T~ P)``.
        infer_weight: weight of the same MSE on the inference path ``g(A P)``.
        regressor_input: what g reads: "prototypes", the prototype mixture alone (the
            paper), or "both", the mixture next to the row's own h (``g([T~ P, h])`` in
            training, ``g([A P, h])`` at inference): the mixture of C K prototypes is a
            narrow bottleneck for ranking rows.
        prototype_source: how the C K prototypes are obtained (the paper's Table 3):
            "hvqvae", the codebook of the HVQ-VAE fitted on the sampled watch ratios (the
            paper); "vqvae", the same autoencoder with one level (one cluster of C K
            codes, no hierarchy); "kmeans", the K-means centroids of the same sampled
            vectors (n watch ratios each; ``kmeans_iterations``); "random", C K vectors
            drawn at random and learned as parameters (Table 2's "w/o HVQ-VAE"). All but
            "random" are refitted every day with identities kept.
        kmeans_iterations: Lloyd's iterations of ``prototype_source: kmeans`` (first fit
            after k-means++ seeding, and each daily warm-started refit).
        transport: "l2_suot", the exact L2 semi-relaxed plan of eq. 8 (the paper, with
            ``ot_*``), or "entropic", the paper's Table 4 alternatives solved as DistProto's
            are, with ``entropic``'s settings: UOT (both marginals KL-relaxed, the default),
            OT (``balanced: true``) or KL semi-relaxed (``tau_a: .inf``).
        entropic: the entropic solver's settings (:class:`OTConfig`), read with
            ``transport: entropic`` only.
    """

    dim: int = 32
    regressor_hidden: list[int] = field(default_factory=lambda: [32])
    temperature: float = 0.1
    ot_lambda: float = 1.0
    ot_max_iter: int = 50
    ot_tol: float = 1e-4
    ot_check_every: int = 1
    assign_weight: float = 1.0
    compact_weight: float = 0.1
    compact_sample: float = 0.2
    task_weight: float = 1.0
    infer_weight: float = 1.0
    regressor_input: Literal["prototypes", "both"] = "prototypes"
    prototype_source: Literal["hvqvae", "vqvae", "kmeans", "random"] = "hvqvae"
    kmeans_iterations: int = 50
    transport: Literal["l2_suot", "entropic"] = "l2_suot"
    entropic: OTConfig = field(default_factory=OTConfig)

    def __post_init__(self) -> None:
        if self.dim < 1 or any(w < 1 for w in self.regressor_hidden):
            raise ValueError(
                f"dim and regressor_hidden widths must be >= 1, got {self.dim}, "
                f"{self.regressor_hidden}"
            )
        for name in ("temperature", "ot_lambda", "ot_tol"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"{name} must be finite and > 0, got {getattr(self, name)}")
        if self.kmeans_iterations < 1:
            raise ValueError(f"kmeans_iterations must be >= 1, got {self.kmeans_iterations}")
        if self.ot_max_iter < 1 or self.ot_check_every < 1:
            raise ValueError(
                f"ot_max_iter and ot_check_every must be >= 1, got "
                f"{self.ot_max_iter}, {self.ot_check_every}"
            )
        for name in ("assign_weight", "compact_weight", "task_weight", "infer_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.compact_sample <= 1:
            raise ValueError(f"compact_sample must be in (0, 1], got {self.compact_sample}")


@dataclass
class WatchConfig:
    """The watch-time task: which head (``models/watch/``, ``models/prowtp.py``) and its weights.

    With a head, every backbone is built for the tasks ("click", "watch") (MMoE gets a
    gate per task, PLE a task stream) and ``predict`` adds "watch_pred_ms".

    Args:
        head: "none" (click only, the default), "tr", "wlr", "d2q", "tpm", "prowtp", or
            "mean_ratio", the no-training yardstick duration x the training days' mean
            watch ratio (``models/watch/mean_ratio.py``).
        weight: multiplies every watch loss term ("loss/watch*").
        click_weight: multiplies the click loss; 0 trains watch time alone (the click
            tower still runs, so "click_logit" stays in the outputs, untrained).
        scale_ms: unit of the regression targets ``t = watch_ms / scale_ms`` (TR, ProWTP)
            and of WLR's odds; about the data's mean watch time keeps targets near 1.
        target: "watch", TR's and ProWTP's regression target in ``scale_ms`` units, or
            "ratio", the watch ratio watch / duration (the prediction is then the
            output times the row's duration). Only TR and ProWTP regress a target.
        hidden: hidden widths of the watch head's per-scenario tower (before its outputs).
        d2q, tpm, prowtp: the per-head sections.
    """

    head: WatchHeadName = "none"
    weight: float = 1.0
    click_weight: float = 1.0
    scale_ms: float = 10_000.0
    target: Literal["watch", "ratio"] = "watch"
    hidden: list[int] = field(default_factory=lambda: [64])
    d2q: D2QConfig = field(default_factory=D2QConfig)
    tpm: TPMConfig = field(default_factory=TPMConfig)
    prowtp: ProWTPConfig = field(default_factory=ProWTPConfig)

    def __post_init__(self) -> None:
        _check_nonnegative(weight=self.weight, click_weight=self.click_weight)
        _check_positive(scale_ms=self.scale_ms)
        _check_sizes("hidden", self.hidden)
        if self.head == "none" and self.click_weight == 0:
            raise ValueError("click_weight = 0 needs a watch head (head is 'none')")
        if self.head != "none" and self.weight == 0 and self.click_weight == 0:
            raise ValueError("weight and click_weight are both 0: nothing to train")
        if self.target == "ratio" and self.head not in ("tr", "prowtp"):
            raise ValueError(
                f"target 'ratio' is for the heads that regress a target (tr, prowtp), "
                f"not {self.head!r}"
            )

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the backbones are built for."""
        return ("click",) if self.head == "none" else ("click", "watch")


@dataclass
class ModelConfig:
    """Which model to build, with every architecture's sizes, loss weights and switches.

    Args:
        name: the architecture.
        input: the feature input shared by every model.
        tower: the per-scenario towers shared by every model.
        task_loss: how rows weigh in the click loss: "rows" (mean over the batch: each
            scenario by its share of rows) or "scenario" (the papers' sum over scenarios
            of each scenario's mean loss, divided by the scenarios present, so that the
            scale matches "rows").
        l2_weight: lambda_w of ``lambda_w ||Theta||^2`` on the dense weights (not the
            embedding tables, which the fused optimiser updates, nor the prototypes).
        batch_norm: BatchNorm before the ReLU of every hidden layer of the click models'
            MLPs: experts (MMoE, PLE, DistProto's extractor), SharedBottom's MLP and the
            towers (not STAR, which has its partitioned normalisation, nor the watch heads).
            torch-rechub's recipe; it won on validation days (docs/results/simulator.md).
            Training batches need at least 2 rows.
        shared_bottom, mmoe, ple, star, distproto: per-architecture sections.
        hvqvae: the HVQ-VAE that turns watch-ratio distributions into ProWTP's credible
            prototypes (models/hvqvae.py), with its watch-ratio sampling.
        watch: the watch-time task (head "none": click only).
    """

    name: ModelName = "mmoe"
    input: InputConfig = field(default_factory=InputConfig)
    tower: TowerConfig = field(default_factory=TowerConfig)
    task_loss: Literal["rows", "scenario"] = "rows"
    l2_weight: float = 1e-6
    batch_norm: bool = True
    shared_bottom: SharedBottomConfig = field(default_factory=SharedBottomConfig)
    mmoe: MMoEConfig = field(default_factory=MMoEConfig)
    ple: PLEConfig = field(default_factory=PLEConfig)
    star: STARConfig = field(default_factory=STARConfig)
    distproto: DistProtoConfig = field(default_factory=DistProtoConfig)
    hvqvae: HVQVAEConfig = field(default_factory=HVQVAEConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)

    def __post_init__(self) -> None:
        _check_nonnegative(l2_weight=self.l2_weight)
