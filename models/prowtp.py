"""ProWTP's head (Cui, Tang et al., ICML 2025, 4.3): instances aligned to credible prototypes.

Training, for the N rows of a batch whose watch time is observed:

1. ``h = normalize(f(x))``, f the watch task's per-scenario tower (width d).
2. Prototypes ``P = normalize(W_p p)`` for the C * K credible prototypes p of the HVQ-VAE
   (``protorec.models.hvqvae``, fitted from watch-ratio distributions, frozen here); or,
   for the paper's Table 3 (``prototype_source``), of a one-level VQ-VAE, the K-means
   centroids of the same sampled vectors, or random learned vectors.
3. Cosine cost ``C = 1 - h P^T``; rows grouped by scenario, one exact L2 semi-relaxed
   problem per scenario (eq. 8, ``protorec.ot.l2_suot``) with ``a = 1/n_s`` on its rows
   and ``b = 1/(C K)``, all scenarios in one batched solver call. The plan, row-normalised
   (``T~ = n_s T``, each row sums to 1), is a constant soft label. ``transport:
   entropic`` swaps in the entropic OT / UOT of Table 4 (rows normalised by their mass).
4. Losses, each with its weight in :class:`ProWTPConfig`:
   ``assign`` (eq. 9): ``-mean_i sum_k T~_ik log softmax_k(h_i . P_k / tau)``;
   ``compact`` (eqs. 10-11) on a random ``compact_sample`` share of the rows;
   ``task`` (eq. 12): ``MSE(g(T~ P), t)``, t = watch / scale_ms (or watch / duration
   with ``model.watch.target: ratio``);
   ``infer`` (ours): ``MSE(g(A P), t)`` with ``A = softmax(h P^T / tau)``.

Inference (batch-independent): the paper removes the OT module and feeds the regressor a
combination of the prototypes weighted by the row's similarities to them; here that is
``A = softmax(h P^T / tau)``, the distribution ``assign`` trains to match the plan, and
``watch^ = max(g(A P), 0) * scale_ms``. A row's prediction reads only its own h.

Why the ``infer`` term: the plan carries no gradient, so eq. 12 alone trains g and W_p but
never f; f would learn the prototype geometry (eqs. 9, 11) and nothing of the label. The
term trains f, W_p and g on the exact path used at inference; set ``infer_weight: 0``
for the paper's objective as written.

Deviation in eq. 11: the paper divides the sum over positive pairs by C * K; we divide by
the number of positive pairs, so that the term's scale does not grow with the batch size
(a 20% sample of 512 rows has up to 10^4 pairs).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchrec.modules.mlp import MLP

from protorec.models.config import ProWTPConfig
from protorec.models.hvqvae import HVQVAE, HVQVAEConfig, RefitReport, fit, perplexity, refit
from protorec.models.kmeans_prototypes import fit_kmeans, refit_kmeans
from protorec.models.modules.prototype_transport import (
    ScenarioLayout,
    solve_transport,
    uniform_masses,
)
from protorec.models.watch.head import WatchHead
from protorec.models.watch.ratio import WatchRatios, sample_watch_ratio_vectors
from protorec.ot.l2_suot import solve_l2_semirelaxed
from protorec.ot.result import OTResult

log = logging.getLogger(__name__)


@dataclass
class ProWTPAlignment:
    """One batch's transport: the row-normalised plan of every observed row, and the solve.

    Args:
        soft_labels: (N, C K) ``T~``, rows sum to 1 (a constant).
        plan: (S, n, C K) the solver's plans (rows of problem s sum to ``1 / n_s``).
        row_mask: (S, n) real rows of each problem.
        result: the solver's result.
    """

    soft_labels: Tensor
    plan: Tensor
    row_mask: Tensor
    result: OTResult


def compact_loss(h: Tensor, soft_labels: Tensor, temperature: float) -> Tensor:
    """L_compact (eqs. 10-11) of m sampled rows, averaged over positive pairs.

    ``S_k^+ = {i : T~_ik > mean_j T~_jk}``; a pair (i != j) counts once per prototype whose
    S_k^+ holds both; its term is ``-log softmax`` of ``h_i . h_j / tau`` over all pairs
    i' != j' of the sample.

    Shapes:
        h (m, d) unit rows, soft_labels (m, C K)  ->  ()

    >>> h = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]), dim=-1)
    >>> t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> bool(compact_loss(h, t, 0.1) < compact_loss(h, t[[0, 2, 1]], 0.1))
    True
    """
    members = (soft_labels > soft_labels.mean(0, keepdim=True)).to(h.dtype)  # (m, CK)
    off_diagonal = ~torch.eye(h.shape[0], dtype=torch.bool, device=h.device)
    positives = (members @ members.T) * off_diagonal
    logits = h @ h.T / temperature
    # Diagonal at -inf rather than a boolean gather: one pass, no host sync.
    log_norm = torch.logsumexp(logits.masked_fill(~off_diagonal, -math.inf).flatten(), dim=0)
    return -(positives * (logits - log_norm)).sum() / positives.sum().clamp_min(1)


def _quantiser_config(hvqvae: HVQVAEConfig, source: str) -> HVQVAEConfig:
    """The HVQ-VAE's settings, or with ``source == "vqvae"`` a plain VQ-VAE's.

    The VQ-VAE is the HVQ-VAE with one cluster of C K prototypes: eq. 5 then has one
    cluster to pick and eq. 6 is VQ-VAE's nearest code among all C K.
    """
    if source != "vqvae":
        return hvqvae
    return dataclasses.replace(hvqvae, num_clusters=1, num_prototypes=hvqvae.num_codes)


class ProWTPHead(WatchHead):
    """ProWTP: f(x) aligned with credible prototypes by L2 SUOT; g reads prototype mixtures.

    Notation: B rows, S scenarios, D representation width, d = ``dim``, C K credible
    prototypes of width d_p (the HVQ-VAE's ``dim``; n = ``sampling.sample_length`` for
    K-means centroids).

    Holds the HVQ-VAE (one-level for ``prototype_source: vqvae``; frozen; refitted each
    day by :meth:`ProWTPHead.refresh_statistics`, in the state dict so that checkpoints
    warm-start it) and the C K credible prototypes it gave, buffer
    ``credible_prototypes`` (C K, d_p), NaN until the first refresh. With K-means
    prototypes there is no HVQ-VAE (``hvqvae`` is None); the buffer ``bucket_edges_ms``
    keeps the sampling's duration edges instead.

    Args:
        in_features: D.
        num_scenarios: S.
        hidden: hidden widths of f's per-scenario tower.
        scale_ms: target unit.
        config: ProWTP's settings.
        hvqvae: the HVQ-VAE's settings (C, K, d_p, sampling).

    Shapes:
        rep: (B, D), scenario: (B,)  ->  f(x) (B, d); predict_ms: (B,)

    >>> from protorec.models.watch.ratio import WatchRatioConfig
    >>> hv = HVQVAEConfig(WatchRatioConfig(num_buckets=2, sample_length=4), dim=3,
    ...                   encoder_hidden=[4], decoder_hidden=[4], num_prototypes=2)
    >>> head = ProWTPHead(8, 2, [4], 1e3, ProWTPConfig(dim=5), hv)
    >>> head.set_prototypes(torch.randn(6, 3))
    >>> raw = head(torch.randn(4, 8), torch.tensor([0, 1, 1, 0]))
    >>> raw.shape, head.predict_ms(raw, torch.ones(4)).shape
    (torch.Size([4, 5]), torch.Size([4]))
    """

    credible_prototypes: Tensor
    bucket_edges_ms: Tensor

    def __init__(
        self,
        in_features: int,
        num_scenarios: int,
        hidden: list[int],
        scale_ms: float,
        config: ProWTPConfig,
        hvqvae: HVQVAEConfig,
        ratio_target: bool = False,
    ) -> None:
        super().__init__(in_features, num_scenarios, hidden, config.dim, scale_ms, ratio_target)
        self.config = config
        self.num_scenarios = num_scenarios
        self.prototype_config = hvqvae
        source = config.prototype_source
        # K-means prototypes are centroids of the sampled vectors themselves (n values).
        p_width = hvqvae.sampling.sample_length if source == "kmeans" else hvqvae.dim
        self.projection = nn.Linear(p_width, config.dim, bias=False)  # W_p
        width = config.dim * (2 if config.regressor_input == "both" else 1)
        self.regressor = MLP(width, [*config.regressor_hidden, 1], activation_on_last=False)  # g
        self.hvqvae: HVQVAE | None = None
        if source != "kmeans":
            # Built for "random" too (unused there): it keeps the init's RNG draws, hence
            # the seeds' figures in docs/results/watch_time.md, as they were.
            self.hvqvae = HVQVAE(_quantiser_config(hvqvae, source)).requires_grad_(False)
        else:
            # The sampling's duration edges, fixed at the first fit like the HVQ-VAE's.
            edges = torch.full((hvqvae.sampling.num_buckets - 1,), float("nan"))
            self.register_buffer("bucket_edges_ms", edges.double())
        self.register_buffer(
            "credible_prototypes", torch.full((hvqvae.num_codes, p_width), float("nan"))
        )
        if source == "random":
            # The paper's "w/o HVQ-VAE": prototypes that know nothing of the labels,
            # learned with the network (drawn from the model's seeded RNG).
            self.learned_prototypes = nn.Parameter(torch.randn(hvqvae.num_codes, hvqvae.dim))

    def is_fitted(self) -> bool:
        if self.config.prototype_source == "random":
            return True
        return not bool(self.credible_prototypes.isnan().any())

    def wants_statistics(self) -> bool:
        """Unless the prototypes are random: they are refitted from every day's ratios."""
        return self.config.prototype_source != "random"

    def refresh_statistics(self, ratios: WatchRatios) -> RefitReport | None:
        """Fit (first call) or refit (later calls) the prototypes from the watch ratios.

        Pre-processes the watch ratios (``hvqvae.sampling``, C mixture peaks per bucket)
        and, when no bucket edges are kept yet, fits the prototypes from scratch;
        otherwise warm-starts from yesterday's with identities kept, on yesterday's bucket
        edges. ``prototype_source``: "hvqvae" and "vqvae" fit the quantiser
        (:func:`protorec.models.hvqvae.fit` / :func:`protorec.models.hvqvae.refit`) and
        copy its C K codebook vectors into the head; "kmeans" copies the C K centroids
        (:mod:`protorec.models.kmeans_prototypes`). Runs on CPU from ``hvqvae.seed`` and
        the data: every rank of a distributed job gets the same prototypes. Weights are
        copied in place, so DDP's references stay valid.

        Returns:
            None on the first fit (nothing to compare with) and for random prototypes;
            the refit's :class:`RefitReport` (relabelling, movement) otherwise.
        """
        source = self.config.prototype_source
        if source == "random":
            return None
        cfg = self.prototype_config
        kept = self.bucket_edges_ms if self.hvqvae is None else self.hvqvae.bucket_edges_ms
        edges = kept.cpu().numpy()
        first = bool(np.isnan(edges).any())
        samples = sample_watch_ratio_vectors(
            ratios, cfg.sampling, num_peaks=cfg.num_clusters, edges_ms=None if first else edges
        )
        report = None
        if self.hvqvae is None:
            iterations = self.config.kmeans_iterations
            if first:
                vectors = fit_kmeans(samples, cfg.num_codes, iterations, cfg.seed)
                with torch.no_grad():
                    self.bucket_edges_ms.copy_(torch.as_tensor(samples.edges_ms))
            else:
                vectors, report = refit_kmeans(
                    self.credible_prototypes.cpu().numpy(), samples, iterations
                )
            log.info(
                "k-means prototypes %s on %d vectors",
                "fitted" if report is None else "refitted with identities kept",
                samples.vectors.shape[0],
            )
            self.set_prototypes(torch.as_tensor(vectors))
            return report
        if source == "vqvae":
            # One level: every sample may start any of the C K codes (fit() starts cluster
            # c from mixture peak c, and here there is one cluster).
            samples = dataclasses.replace(samples, peak=np.zeros_like(samples.peak))
        if first:
            fitted, history = fit(samples, self.hvqvae.config)
            log.info(
                "%s fitted on %d vectors: %d of %d codes used, perplexity %.1f",
                source,
                samples.vectors.shape[0],
                history[-1].used_codes,
                cfg.num_codes,
                history[-1].perplexity,
            )
        else:
            previous = copy.deepcopy(self.hvqvae).cpu().requires_grad_(True)
            fitted, report = refit(previous, samples)
            log.info(
                "%s refitted: identities kept %s, median relative movement %.3f",
                source,
                report.identity_kept,
                float(np.median(report.relative_movement)),
            )
        codes = torch.bincount(
            fitted.codes(torch.as_tensor(samples.vectors)), minlength=cfg.num_codes
        )
        log.info(
            "credible prototypes: usage perplexity %.1f of %d", perplexity(codes), cfg.num_codes
        )
        self.hvqvae.load_state_dict(fitted.state_dict())
        self.set_prototypes(fitted.credible_prototypes().vectors)
        return report

    def set_prototypes(self, vectors: Tensor) -> None:
        """Copy in the C K credible prototypes (in place: DDP keeps its references)."""
        with torch.no_grad():
            self.credible_prototypes.copy_(vectors)

    def prototypes(self) -> Tensor:
        """P = normalize(W_p p), the projected unit prototypes, (C K, d)."""
        # Not under torch.export (no branch on a buffer's values): checked before tracing.
        if not torch.compiler.is_exporting() and not self.is_fitted():
            raise RuntimeError(
                "ProWTP head has no credible prototypes yet: call "
                "protorec.pipeline.refresh.refresh_watch_head first"
            )
        if self.config.prototype_source == "random":
            return F.normalize(self.projection(self.learned_prototypes), dim=-1)
        return F.normalize(self.projection(self.credible_prototypes), dim=-1)

    def log_assignment(self, h: Tensor, prototypes: Tensor) -> Tensor:
        """``log A = log_softmax(h P^T / tau)`` (N, C K) of h (N, d): each row from itself.

        In log form because ``assign`` (eq. 9) reads log A and ``infer`` and inference A.
        """
        return torch.log_softmax(h @ prototypes.T / self.config.temperature, dim=-1)

    def regress(self, mixture: Tensor, h: Tensor) -> Tensor:
        """The regressor g on prototype mixtures (N, d), with h (N, d) if configured -> (N,)."""
        if self.config.regressor_input == "both":
            mixture = torch.cat([mixture, h], dim=-1)
        return self.regressor(mixture).squeeze(-1)

    def align(self, h: Tensor, prototypes: Tensor, scenario: Tensor) -> ProWTPAlignment:
        """The plans of eq. 8, one problem per scenario, from one batched solver call.

        Shapes:
            h (N, d) unit rows, prototypes (C K, d), scenario (N,)  ->  soft_labels (N, C K)
        """
        cfg = self.config
        layout = ScenarioLayout.from_scenario(scenario, self.num_scenarios)
        cost = 1 - layout.pad(h.detach()) @ prototypes.detach().T  # (S, n, CK)
        if cfg.transport == "entropic":
            columns = torch.ones(cost.shape[::2], dtype=torch.bool, device=cost.device)
            result = solve_transport(cost, layout.mask, columns, cfg.entropic)
            # Relaxed row marginals: each real row's plan normalised by its own mass.
            normalised = result.plan / result.plan.sum(-1, keepdim=True).clamp_min(1e-30)
        else:
            a = uniform_masses(layout.mask).to(cost.dtype)
            b = torch.full(
                cost.shape[::2], 1 / prototypes.shape[0], dtype=cost.dtype, device=cost.device
            )
            result = solve_l2_semirelaxed(
                cost,
                a,
                b,
                cfg.ot_lambda,
                max_iter=cfg.ot_max_iter,
                tol=cfg.ot_tol,
                check_every=cfg.ot_check_every,
            )
            normalised = result.plan * layout.counts.to(cost.dtype).view(-1, 1, 1)
        # Back in row order by each row's slot: a gather, no boolean-mask indexing (host sync).
        soft_labels = layout.unpad(normalised).to(h.dtype)
        return ProWTPAlignment(soft_labels, result.plan, layout.mask, result)

    def loss_terms(
        self, raw: Tensor, watch_ms: Tensor, duration_ms: Tensor, scenario: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        cfg = self.config
        h = F.normalize(raw, dim=-1)
        prototypes = self.prototypes()
        align = self.align(h, prototypes, scenario)
        t = self.target(watch_ms, duration_ms)
        log_a = self.log_assignment(h, prototypes)
        # Both mixtures in one product and g once on them (the plan's for eq. 12, the
        # assignment's for infer).
        weights = torch.cat([align.soft_labels, log_a.exp()])
        task, infer = self.regress(weights @ prototypes, torch.cat([h, h])).chunk(2)
        terms = {
            "watch": cfg.task_weight * F.mse_loss(task, t),
            "watch_assign": cfg.assign_weight * -(align.soft_labels * log_a).sum(-1).mean(),
            "watch_infer": cfg.infer_weight * F.mse_loss(infer, t),
        }
        if cfg.compact_weight > 0 and h.shape[0] >= 2:
            m = max(2, round(cfg.compact_sample * h.shape[0]))
            sample = torch.randperm(h.shape[0], device=h.device)[:m]
            terms["watch_compact"] = cfg.compact_weight * compact_loss(
                h[sample], align.soft_labels[sample], cfg.temperature
            )
        res = align.result
        device = raw.device
        diagnostics = {
            "prowtp/ot_n_iter": torch.tensor(float(res.n_iter), device=device),
            "prowtp/ot_converged": torch.tensor(float(res.converged), device=device),
            "prowtp/ot_err_a": res.err_a.detach().amax().to(raw.dtype),
        }
        return terms, diagnostics

    def predict_ms(self, raw: Tensor, duration_ms: Tensor) -> Tensor:
        h = F.normalize(raw, dim=-1)
        prototypes = self.prototypes()
        mixture = self.log_assignment(h, prototypes).exp() @ prototypes
        return self.regress(mixture, h).clamp_min(0) * self.unit_ms(duration_ms)
