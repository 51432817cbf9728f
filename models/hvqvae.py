"""HVQ-VAE: the credible prototypes of ProWTP (Cui, Tang et al., ICML 2025, section 4.2, eqs. 5-7).

An autoencoder of sampled watch-ratio vectors ``w`` (``protorec.models.watch.ratio``)
whose bottleneck is a two-level codebook ``P`` of C clusters x K prototypes: the encoding
picks the cluster whose target-attention centre is nearest (eq. 5), then the nearest
prototype inside it (eq. 6); the decoder reads that prototype, and the straight-through
estimator with a commitment weight beta trains it all (eq. 7). The C * K codebook vectors
are the "credible prototypes" the ProWTP head aligns instances with.

:func:`fit` trains one from scratch; :func:`refit` warm-starts from yesterday's model on
today's samples and re-labels the new codes so that prototype ``c * K + k`` stays the same
prototype (Hungarian matching on distance), reporting how far each one moved.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchrec.modules.mlp import MLP

from protorec.models.watch.ratio import WatchRatioConfig, WatchRatioSamples


@dataclass
class HVQVAEConfig:
    """Sizes, loss weight and training settings of the HVQ-VAE, and its pre-processing.

    Args:
        sampling: duration buckets and watch-ratio vector sampling (D, L, n, ...).
        dim: d, width of the encoding and of every prototype.
        encoder_hidden: hidden widths of the encoder MLP n -> ... -> d (ReLU between).
        decoder_hidden: hidden widths of the decoder MLP d -> ... -> n (ReLU between).
        num_clusters: C, codebook clusters; also the mixture components fitted per
            duration bucket (paper A.2: one cluster per watch-ratio peak).
        num_prototypes: K, prototypes per cluster.
        attention_temperature: divides the logits ``p_ij . E(w)`` of eq. 5's target
            attention (the paper writes none; Vaswani et al. divide by sqrt(d)). With 1,
            a cluster whose prototypes are spread out gets a centre next to any encoding
            and takes most samples (on KuaiRand: usage perplexity about 8 of 24); a softer
            attention puts each centre near its cluster's mean, and the clusters become
            the watch-ratio peaks the paper describes (perplexity 13 to 18 of 24).
        beta: commitment weight of eq. 7.
        learning_rate: Adam step size of :func:`fit`.
        refit_learning_rate: Adam step size of :func:`refit`; smaller than the fit's, since
            a fresh Adam's first steps jolt every weight by about the step size and would
            move well-placed prototypes (on unchanged KuaiRand data, 1e-3 moved them by up
            to 0.7 of their spacing, 1e-4 by under 0.1).
        batch_size: vectors per step.
        epochs: passes over the samples in :func:`fit`.
        refit_epochs: passes over the samples in :func:`refit` (0: match only).
        dead_code_threshold: after each epoch but the last, a code used by fewer than
            ``dead_code_threshold * N / (C * K)`` of the N samples is moved onto the
            encoding of a sample drawn with probability ~ its squared quantisation error
            (0 turns revival off).
        init_noise: std of the noise, relative to the encodings' std, added to the
            sample encodings the codebook starts from (keeps initial codes distinct).
        seed: seed of the initialisation and the batch order.
    """

    sampling: WatchRatioConfig = field(default_factory=WatchRatioConfig)
    dim: int = 16
    encoder_hidden: list[int] = field(default_factory=lambda: [64, 64])
    decoder_hidden: list[int] = field(default_factory=lambda: [64, 64])
    num_clusters: int = 3
    num_prototypes: int = 8
    attention_temperature: float = 16.0
    beta: float = 0.25
    learning_rate: float = 1e-3
    refit_learning_rate: float = 1e-4
    batch_size: int = 256
    epochs: int = 100
    refit_epochs: int = 20
    dead_code_threshold: float = 0.05
    init_noise: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dim", "num_clusters", "num_prototypes", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("encoder_hidden", "decoder_hidden"):
            if any(w < 1 for w in getattr(self, name)):
                raise ValueError(f"{name} widths must be >= 1, got {getattr(self, name)}")
        if self.refit_epochs < 0:
            raise ValueError(f"refit_epochs must be >= 0, got {self.refit_epochs}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if not self.attention_temperature > 0:
            raise ValueError(f"attention_temperature must be > 0, got {self.attention_temperature}")
        for name in ("learning_rate", "refit_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.dead_code_threshold < 1:
            raise ValueError(
                f"dead_code_threshold must be in [0, 1), got {self.dead_code_threshold}"
            )
        if self.init_noise < 0:
            raise ValueError(f"init_noise must be >= 0, got {self.init_noise}")

    @property
    def num_codes(self) -> int:
        """C * K."""
        return self.num_clusters * self.num_prototypes


@dataclass
class Quantized:
    """The codebook entry chosen for each encoding.

    Args:
        z: (B, d) the chosen prototype vectors.
        cluster: (B,) c of eq. 5.
        prototype: (B,) k of eq. 6, inside cluster c.
        code: (B,) flat index ``c * K + k`` into the C * K prototypes.
    """

    z: Tensor
    cluster: Tensor
    prototype: Tensor
    code: Tensor


@dataclass
class HVQVAEOutput:
    """One forward pass: the reconstruction, the codes and the three terms of eq. 7.

    Args:
        reconstruction: (B, n) ``D(E(w) + sg[z - E(w)])``.
        code: (B,) flat code index of each row.
        reconstruction_loss: ``mean_b ||w - D(.)||^2``.
        codebook_loss: ``mean_b ||sg[E(w)] - z||^2`` (moves the codebook).
        commitment_loss: ``beta * mean_b ||E(w) - sg[z]||^2`` (moves the encoder).
        loss: the sum of the three.
    """

    reconstruction: Tensor
    code: Tensor
    reconstruction_loss: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    loss: Tensor


@dataclass
class CrediblePrototypes:
    """The C * K credible prototypes, flat in code order ``c * K + k``.

    Args:
        vectors: (C * K, d) codebook vectors (what the ProWTP head projects by ``W_p``).
        decoded: (C * K, n) each prototype decoded back into a watch-ratio vector.
        cluster: (C * K,) the cluster c of each prototype.
    """

    vectors: Tensor
    decoded: Tensor
    cluster: Tensor

    @property
    def mean_ratio(self) -> Tensor:
        """(C * K,) the mean watch ratio of each decoded prototype."""
        return self.decoded.mean(-1)


class HVQVAE(nn.Module):
    """Hierarchical VQ-VAE of watch-ratio vectors (ProWTP, Cui, Tang et al., ICML 2025, eqs. 5-7).

    Notation: B rows, n values per watch-ratio vector, d encoding width, C clusters,
    K prototypes per cluster.

    Args:
        config: sizes and settings.
        bucket_edges_ms: (D - 1,) the duration edges the model is fitted on, kept as a
            buffer so that a refit or a checkpoint reuses them; None: NaN until
            :func:`fit` sets them or a state dict is loaded.

    Shapes:
        w: (B, n)  ->  :class:`HVQVAEOutput` with reconstruction (B, n), code (B,)

    >>> cfg = HVQVAEConfig(WatchRatioConfig(num_buckets=2, sample_length=6), dim=4,
    ...                    encoder_hidden=[8], decoder_hidden=[8], num_prototypes=5)
    >>> model = HVQVAE(cfg)
    >>> out = model(torch.rand(7, 6))
    >>> out.reconstruction.shape, out.code.shape, model.codebook.shape
    (torch.Size([7, 6]), torch.Size([7]), torch.Size([3, 5, 4]))
    """

    bucket_edges_ms: Tensor

    def __init__(self, config: HVQVAEConfig, bucket_edges_ms: Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        n, d = config.sampling.sample_length, config.dim
        self.encoder = MLP(n, [*config.encoder_hidden, d], activation_on_last=False)
        self.decoder = MLP(d, [*config.decoder_hidden, n], activation_on_last=False)
        # VQ-VAE's uniform init; fit() re-initialises from sample encodings.
        scale = 1.0 / config.num_codes
        self.codebook = nn.Parameter(
            torch.empty(config.num_clusters, config.num_prototypes, d).uniform_(-scale, scale)
        )
        edges = torch.full((config.sampling.num_buckets - 1,), float("nan"), dtype=torch.float64)
        if bucket_edges_ms is not None:
            edges = torch.as_tensor(bucket_edges_ms, dtype=torch.float64).clone()
            if edges.shape != (config.sampling.num_buckets - 1,):
                raise ValueError(
                    f"bucket_edges_ms has shape {tuple(edges.shape)}, expected "
                    f"({config.sampling.num_buckets - 1},)"
                )
        self.register_buffer("bucket_edges_ms", edges)

    def encode(self, w: Tensor) -> Tensor:
        """E(w). Shapes: w (B, n) -> (B, d)."""
        return self.encoder(w)

    def decode(self, z: Tensor) -> Tensor:
        """D(z). Shapes: z (B, d) -> (B, n)."""
        return self.decoder(z)

    def quantize(self, e: Tensor) -> Quantized:
        """Pick the cluster by target attention (eq. 5), then the nearest prototype (eq. 6).

        ``p~_i = sum_j softmax_j(p_ij . e / attention_temperature) p_ij``,
        ``c = argmin_i ||p~_i - e||``, ``k = argmin_j ||p_cj - e||``, ``z = p_ck``.

        Shapes: e (B, d) -> z (B, d), cluster (B,), prototype (B,), code (B,)
        """
        p = self.codebook
        logits = torch.einsum("ckd,bd->bck", p, e) / self.config.attention_temperature
        attention = torch.softmax(logits, dim=-1)
        centres = torch.einsum("bck,ckd->bcd", attention, p)
        cluster = (centres - e[:, None, :]).norm(dim=-1).argmin(dim=-1)
        members = p[cluster]  # (B, K, d)
        prototype = (members - e[:, None, :]).norm(dim=-1).argmin(dim=-1)
        z = members[torch.arange(e.shape[0]), prototype]
        return Quantized(z, cluster, prototype, cluster * p.shape[1] + prototype)

    def forward(self, w: Tensor) -> HVQVAEOutput:
        """Encode, quantise, decode through the straight-through estimator; eq. 7's terms."""
        e = self.encode(w)
        q = self.quantize(e)
        reconstruction = self.decode(e + (q.z - e).detach())
        reconstruction_loss = (w - reconstruction).pow(2).sum(-1).mean()
        codebook_loss = (e.detach() - q.z).pow(2).sum(-1).mean()
        commitment_loss = self.config.beta * (e - q.z.detach()).pow(2).sum(-1).mean()
        return HVQVAEOutput(
            reconstruction=reconstruction,
            code=q.code,
            reconstruction_loss=reconstruction_loss,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            loss=reconstruction_loss + codebook_loss + commitment_loss,
        )

    @torch.no_grad()
    def codes(self, w: Tensor) -> Tensor:
        """The flat code of each vector. Shapes: w (B, n) -> (B,) in [0, C * K)."""
        return self.quantize(self.encode(w)).code

    @torch.no_grad()
    def credible_prototypes(self) -> CrediblePrototypes:
        """The C * K prototypes, flat in code order, with their decoded watch ratios.

        Shapes: vectors (C * K, d), decoded (C * K, n), cluster (C * K,)
        """
        c, k, d = self.codebook.shape
        vectors = self.codebook.detach().reshape(c * k, d).clone()
        return CrediblePrototypes(
            vectors=vectors,
            decoded=self.decode(vectors),
            cluster=torch.arange(c).repeat_interleave(k),
        )


@dataclass
class EpochStats:
    """Losses of one epoch (means over its steps) and the codebook after it.

    Args:
        loss, reconstruction_loss, codebook_loss, commitment_loss: epoch means.
        used_codes: codes chosen by at least one sample at the end of the epoch.
        perplexity: ``exp`` of the entropy of the code usage then.
        revived: codes revived after the epoch.
    """

    loss: float
    reconstruction_loss: float
    codebook_loss: float
    commitment_loss: float
    used_codes: int
    perplexity: float
    revived: int


@dataclass
class RefitReport:
    """How a warm-started refit relabelled and moved the prototypes.

    Index i below is the prototype's identity, flat ``c * K + k`` as in the previous model.

    Args:
        cluster_assignment: (C,) the new model's cluster slot matched to old cluster c,
            before relabelling (the identity when no cluster swapped).
        code_assignment: (C * K,) the new code matched to old code i, before relabelling.
        movement: (C * K,) ``||p_i^new - p_i^old||`` in the latent space.
        spacing: median distance from an old prototype to its nearest other prototype,
            the scale ``movement`` is small or large against.
        ratio_movement: (C * K,) mean absolute change of the decoded watch ratios.
        revived: (C * K,) codes revived during the refit (new meaning, same identity).
        history: the refit's epochs.
    """

    cluster_assignment: np.ndarray
    code_assignment: np.ndarray
    movement: np.ndarray
    spacing: float
    ratio_movement: np.ndarray
    revived: np.ndarray
    history: list[EpochStats]

    @property
    def identity_kept(self) -> bool:
        """True when matching kept every code in its slot (nothing was relabelled)."""
        return bool(np.array_equal(self.code_assignment, np.arange(self.code_assignment.size)))

    @property
    def relative_movement(self) -> np.ndarray:
        """(C * K,) movement / spacing."""
        return self.movement / self.spacing


def _check_samples(model: HVQVAE, samples: WatchRatioSamples) -> Tensor:
    cfg = model.config
    if samples.vectors.shape[1] != cfg.sampling.sample_length:
        raise ValueError(
            f"samples have length {samples.vectors.shape[1]}, the model reads "
            f"sampling.sample_length = {cfg.sampling.sample_length}"
        )
    if samples.num_buckets != cfg.sampling.num_buckets:
        raise ValueError(
            f"samples have {samples.num_buckets} duration buckets, the model "
            f"has sampling.num_buckets = {cfg.sampling.num_buckets}"
        )
    return torch.as_tensor(samples.vectors, dtype=torch.float32)


def _init_codebook_from_peaks(
    model: HVQVAE, w: Tensor, peak: np.ndarray, generator: torch.Generator
) -> None:
    """Start cluster c at the encodings of K samples drawn from mixture peak c (paper A.2)."""
    cfg = model.config
    with torch.no_grad():
        e = model.encode(w)
        noise = cfg.init_noise * e.std()
        peak_t = torch.as_tensor(peak)
        for c in range(cfg.num_clusters):
            pool = torch.nonzero(peak_t == c).flatten()
            if pool.numel() == 0:  # a component with no weight in any bucket
                pool = torch.arange(w.shape[0])
            replace = pool.numel() < cfg.num_prototypes
            pick = pool[
                torch.multinomial(
                    torch.ones(pool.numel()),
                    cfg.num_prototypes,
                    replacement=replace,
                    generator=generator,
                )
            ]
            model.codebook[c] = e[pick] + noise * torch.randn(
                cfg.num_prototypes, cfg.dim, generator=generator
            )


def perplexity(counts: Tensor) -> float:
    """``exp`` of the entropy of the usage distribution ``counts / counts.sum()``.

    The effective number of codes in use: 1 when the codebook collapsed onto one code,
    C * K when every code is used equally; NaN for no counts.

    >>> perplexity(torch.tensor([5, 5, 0, 0])), perplexity(torch.tensor([3, 0, 0]))
    (2.0, 1.0)
    """
    total = counts.sum()
    if total == 0:
        return float("nan")
    p = counts.double().flatten() / total
    p = p[p > 0]
    return round(float(torch.exp(-(p * p.log()).sum())), 12)


def _revive_dead_codes(
    model: HVQVAE, optimizer: torch.optim.Adam, w: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Usage counts (C * K,) and a mask of the codes revived (see ``dead_code_threshold``).

    Written by hand: torchrec has no vector quantiser. A dead code of cluster c goes to the
    encoding of a sample that eq. 5 sends to cluster c, drawn ~ its squared quantisation
    error (the cluster's badly served region): eq. 6 then picks the revived code for that
    sample, so it does not die again at once. A cluster that no sample chooses draws from
    all samples. Adam moments of revived codes are reset so that the old code's history
    does not push the new one.
    """
    cfg = model.config
    with torch.no_grad():
        e = model.encode(w)
        q = model.quantize(e)
        counts = torch.bincount(q.code, minlength=cfg.num_codes)
        dead = counts < cfg.dead_code_threshold * w.shape[0] / cfg.num_codes
        num_dead = int(dead.sum())
        if num_dead == 0:
            return counts, dead
        error = (e - q.z).pow(2).sum(-1) + torch.finfo(e.dtype).tiny
        flat = model.codebook.view(cfg.num_codes, cfg.dim)
        dead_by_cluster = dead.view(cfg.num_clusters, cfg.num_prototypes)
        for c in torch.nonzero(dead_by_cluster.any(-1)).flatten().tolist():
            members = q.cluster == c
            weight = torch.where(members, error, 0.0) if members.any() else error
            slots = c * cfg.num_prototypes + torch.nonzero(dead_by_cluster[c]).flatten()
            replace = slots.numel() > int((weight > 0).sum())
            pick = torch.multinomial(
                weight, slots.numel(), replacement=replace, generator=generator
            )
            flat[slots] = e[pick]
        state = optimizer.state.get(model.codebook, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key].view(cfg.num_codes, cfg.dim)[dead] = 0.0
    return counts, dead


def _train(
    model: HVQVAE, w: Tensor, epochs: int, learning_rate: float, generator: torch.Generator
) -> tuple[list[EpochStats], Tensor]:
    """Adam on eq. 7 for ``epochs`` passes; returns the history and the revived-code mask."""
    cfg = model.config
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    history: list[EpochStats] = []
    revived = torch.zeros(cfg.num_codes, dtype=torch.bool)
    model.train()
    for epoch in range(epochs):
        sums = torch.zeros(4, dtype=torch.float64)
        steps = 0
        for index in torch.randperm(w.shape[0], generator=generator).split(cfg.batch_size):
            out = model(w[index])
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            terms = (out.loss, out.reconstruction_loss, out.codebook_loss, out.commitment_loss)
            sums += torch.stack(terms).detach().double()
            steps += 1
        last = epoch == epochs - 1
        if cfg.dead_code_threshold > 0 and not last:
            counts, dead = _revive_dead_codes(model, optimizer, w, generator)
            revived |= dead
        else:
            counts = torch.bincount(model.codes(w), minlength=cfg.num_codes)
            dead = torch.zeros_like(revived)
        loss, reconstruction, codebook, commitment = (sums / steps).tolist()
        history.append(
            EpochStats(
                loss,
                reconstruction,
                codebook,
                commitment,
                used_codes=int((counts > 0).sum()),
                perplexity=perplexity(counts),
                revived=int(dead.sum()),
            )
        )
    model.eval()
    return history, revived


def fit(samples: WatchRatioSamples, config: HVQVAEConfig) -> tuple[HVQVAE, list[EpochStats]]:
    """Train an HVQ-VAE from scratch on pre-processed samples (paper A.2, step 4).

    The model keeps ``samples.edges_ms`` so that refits bucket durations the same way.
    Initialisation and batch order follow ``config.seed``; the global RNG is left as found.

    Args:
        samples: :func:`protorec.models.watch.ratio.sample_watch_ratio_vectors` output,
            sampled with ``num_peaks = config.num_clusters``.
        config: the model's settings.

    Returns:
        the model (in eval mode) and one :class:`EpochStats` per epoch.
    """
    if samples.peak.size and samples.peak.max() >= config.num_clusters:
        raise ValueError(
            f"samples come from {samples.peak.max() + 1} mixture peaks; sample "
            f"them with num_peaks = num_clusters = {config.num_clusters}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = HVQVAE(config, torch.as_tensor(samples.edges_ms))
    w = _check_samples(model, samples)
    generator = torch.Generator().manual_seed(config.seed)
    _init_codebook_from_peaks(model, w, samples.peak, generator)
    history, _ = _train(model, w, config.epochs, config.learning_rate, generator)
    return model, history


def match_codebooks(
    old: Tensor, new: Tensor, revived: Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of two (C, K, d) codebooks that keeps clusters whole.

    Quantisation is invariant to permuting clusters and to permuting prototypes inside a
    cluster, not to moving a prototype across clusters (it would change the attention
    centres); so clusters are matched as blocks, each pair costing the optimal
    within-cluster matching of its prototypes (Euclidean distance). A revived new code has
    no predecessor: it keeps its own slot, so that it cannot take a live code's identity.

    Args:
        old: (C, K, d) the previous codebook.
        new: (C, K, d) the refitted codebook.
        revived: (C, K) codes of ``new`` revived during the refit; None: none.

    Returns:
        (C,) new cluster matched to each old cluster; (C * K,) new flat code matched to
        each old flat code.

    >>> old = torch.tensor([[[0.0], [1.0]], [[5.0], [6.0]]])
    >>> clusters, codes = match_codebooks(old, old[[1, 0]][:, [1, 0]] + 0.1)
    >>> clusters.tolist(), codes.tolist()
    ([1, 0], [3, 2, 1, 0])
    """
    c, k, _ = old.shape
    if revived is None:
        revived = torch.zeros(c, k, dtype=torch.bool)
    own_slot = np.eye(k, dtype=bool)
    within = np.empty((c, c, k), dtype=np.int64)
    block_cost = np.empty((c, c))
    for i in range(c):
        for j in range(c):
            cost = torch.cdist(old[i].double(), new[j].double()).numpy()
            pinned = revived[j].numpy()[None, :] & ~own_slot
            rows, cols = linear_sum_assignment(np.where(pinned, np.inf, cost))
            within[i, j, rows] = cols
            block_cost[i, j] = cost[rows, cols].sum()
    old_clusters, new_clusters = linear_sum_assignment(block_cost)
    cluster_assignment = new_clusters[np.argsort(old_clusters)]
    code_assignment = np.concatenate(
        [cluster_assignment[i] * k + within[i, cluster_assignment[i]] for i in range(c)]
    )
    return cluster_assignment, code_assignment


def refit(
    previous: HVQVAE, samples: WatchRatioSamples, epochs: int | None = None
) -> tuple[HVQVAE, RefitReport]:
    """Warm-start a copy of ``previous`` on new samples, keeping prototype identities.

    After training, the new codes are matched to the old ones (clusters as blocks, then
    prototypes inside matched clusters; Hungarian on Euclidean distance) and the codebook
    is relabelled so that code i of the result is the successor of code i of
    ``previous``; the report says how far each moved. ``previous`` is not changed.

    Args:
        previous: the fitted model (its bucket edges must be the samples' edges).
        samples: pre-processed with ``edges_ms=previous.bucket_edges_ms.numpy()``.
        epochs: passes over the samples; None: ``config.refit_epochs``.

    Returns:
        the refitted model (eval mode) and its :class:`RefitReport`.
    """
    cfg = previous.config
    edges = previous.bucket_edges_ms.numpy()
    if np.isnan(edges).any():
        raise ValueError("previous model has no bucket edges: fit it, or load its state dict")
    if not np.allclose(edges, samples.edges_ms):
        raise ValueError(
            f"samples were bucketed with edges {samples.edges_ms.tolist()}, the "
            f"previous model with {edges.tolist()}: pre-process with "
            "edges_ms=previous.bucket_edges_ms.numpy()"
        )
    model = copy.deepcopy(previous)
    w = _check_samples(model, samples)
    generator = torch.Generator().manual_seed(cfg.seed)
    history, revived = _train(
        model, w, cfg.refit_epochs if epochs is None else epochs, cfg.refit_learning_rate, generator
    )
    old = previous.codebook.detach()
    cluster_assignment, code_assignment = match_codebooks(
        old, model.codebook.detach(), revived.view(cfg.num_clusters, cfg.num_prototypes)
    )
    with torch.no_grad():
        flat = model.codebook.view(cfg.num_codes, cfg.dim)
        flat.copy_(flat[torch.as_tensor(code_assignment)].clone())
    revived = revived[torch.as_tensor(code_assignment)]
    before, after = previous.credible_prototypes(), model.credible_prototypes()
    movement = (after.vectors - before.vectors).norm(dim=-1).numpy()
    gaps = torch.cdist(before.vectors, before.vectors)
    gaps.fill_diagonal_(float("inf"))
    report = RefitReport(
        cluster_assignment=cluster_assignment,
        code_assignment=code_assignment,
        movement=movement,
        spacing=float(gaps.min(dim=1).values.median()),
        ratio_movement=(after.decoded - before.decoded).abs().mean(-1).numpy(),
        revived=revived.numpy(),
        history=history,
    )
    return model, report
