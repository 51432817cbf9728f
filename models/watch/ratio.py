"""Watch ratios and their pre-processing into sampled vectors, the input of the HVQ-VAE.

ProWTP (Cui, Tang et al., ICML 2025, section 4.2 and appendix A.2) turns the watch-ratio label
(watch time / duration) into training samples for its HVQ-VAE in four steps:

1. partition the rows into D duration buckets;
2. fit a Gaussian mixture with C components (C = the HVQ-VAE's cluster count: one per
   peak of the multimodal watch-ratio distribution) to each bucket;
3. draw L vectors ``w = (y_1, ..., y_n)`` per bucket: each from one peak j, with
   ``floor(theta_j * L)`` vectors per peak, its n values drawn from the bucket's rows in
   ``[mu_j - i * sigma_j, mu_j + i * sigma_j]`` where ``i ~ N(mu', sigma')``;
4. feed the D * L vectors to the HVQ-VAE (``protorec.models.hvqvae``).

Rows that cannot give a ratio (missing watch, missing or non-positive duration) and
ratios above ``max_watch_ratio`` are left out and counted by reason; the bucket edges
are fixed at the first fit and passed back in on every refit, so bucket b means the same
durations every day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

#: Reasons a row gives no watch ratio, in the order they are checked (a row gets the first).
EXCLUSION_REASONS = (
    "missing_watch",
    "invalid_watch",
    "missing_duration",
    "zero_or_negative_duration",
)


@dataclass
class WatchRatioConfig:
    """How watch ratios are bucketed by duration and sampled into vectors (paper A.2).

    Args:
        num_buckets: D, duration buckets.
        bucket_edges_ms: the D - 1 inner bucket edges in ms, strictly increasing; empty:
            equal-count quantiles of the first fit's durations (then kept by the model).
        samples_per_bucket: L, sampled vectors per bucket.
        sample_length: n, watch ratios per vector (the HVQ-VAE's input width).
        max_watch_ratio: ratios above this (long replays, logging glitches) are left out
            and counted, so one 28x replay does not stretch a mixture component.
        window_scale_mean: mu' of the window half-width multiplier ``i ~ N(mu', sigma')``.
        window_scale_std: sigma' of that multiplier (``|i|`` is used).
        sort_samples: sort each vector's values. The paper does not say; the values of a
            vector are i.i.d. draws, so sorting gives the one canonical order (the
            empirical quantile function) and spares the encoder learning permutations.
        gmm_max_iter: EM iterations per bucket.
        gmm_tol: EM stops when the mean log-likelihood gains less than this.
        gmm_min_std: floor of a component's standard deviation; the early-skip peak holds
            many exact zeros and would otherwise collapse onto a point mass.
        min_rows_per_bucket: a bucket with fewer usable rows is an error.
        seed: seed of the sampling.
    """

    num_buckets: int = 5
    bucket_edges_ms: list[float] = field(default_factory=list)
    samples_per_bucket: int = 256
    sample_length: int = 32
    max_watch_ratio: float = 5.0
    window_scale_mean: float = 1.0
    window_scale_std: float = 0.25
    sort_samples: bool = True
    gmm_max_iter: int = 200
    gmm_tol: float = 1e-6
    gmm_min_std: float = 0.01
    min_rows_per_bucket: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "num_buckets",
            "samples_per_bucket",
            "sample_length",
            "gmm_max_iter",
            "min_rows_per_bucket",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_watch_ratio", "window_scale_mean", "gmm_tol", "gmm_min_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.window_scale_std < 0:
            raise ValueError(f"window_scale_std must be >= 0, got {self.window_scale_std}")
        edges = self.bucket_edges_ms
        if edges:
            if len(edges) != self.num_buckets - 1:
                raise ValueError(
                    f"bucket_edges_ms has {len(edges)} edges; num_buckets = {self.num_buckets} "
                    f"needs {self.num_buckets - 1}"
                )
            if edges[0] <= 0 or any(b <= a for a, b in zip(edges[:-1], edges[1:])):
                raise ValueError(f"bucket_edges_ms must be positive and increasing: {edges}")


@dataclass
class WatchRatios:
    """Watch ratios of the rows that have one, with the count of rows left out by reason.

    Args:
        ratio: (N,) watch / duration, >= 0.
        duration_ms: (N,) the rows' durations, > 0.
        rows_in: rows read, N plus the excluded ones.
        excluded: rows left out per reason in :data:`EXCLUSION_REASONS` (every reason
            present, zeros included).
    """

    ratio: np.ndarray
    duration_ms: np.ndarray
    rows_in: int
    excluded: dict[str, int]


def watch_ratios_from_columns(watch_ms: np.ndarray, duration_ms: np.ndarray) -> WatchRatios:
    """Watch ratio = watch / duration for every row that has one; the others are counted.

    NaN stands for a missing value (pyarrow's ``to_numpy`` of a column with nulls gives
    NaN in a float array). A row is left out, with the first reason that applies, for a
    missing watch, a negative watch, a missing duration, or a duration <= 0.

    Args:
        watch_ms: (N,) watch time, ms.
        duration_ms: (N,) item duration, ms.

    >>> r = watch_ratios_from_columns(np.array([5.0, np.nan, 3.0, 4.0]),
    ...                               np.array([10.0, 10.0, 0.0, 2.0]))
    >>> r.ratio.tolist(), r.rows_in, sorted(k for k, v in r.excluded.items() if v)
    ([0.5, 2.0], 4, ['missing_watch', 'zero_or_negative_duration'])
    """
    watch = np.asarray(watch_ms, dtype=np.float64)
    duration = np.asarray(duration_ms, dtype=np.float64)
    if watch.shape != duration.shape or watch.ndim != 1:
        raise ValueError(f"watch {watch.shape} and duration {duration.shape} must be equal 1-D")
    reason = np.full(watch.shape, -1, dtype=np.int8)
    checks = (
        np.isnan(watch),
        watch < 0,
        np.isnan(duration),
        duration <= 0,
    )
    for code, bad in enumerate(checks):
        reason[(reason < 0) & bad] = code
    ok = reason < 0
    counts = np.bincount(reason[~ok], minlength=len(EXCLUSION_REASONS))
    return WatchRatios(
        ratio=watch[ok] / duration[ok],
        duration_ms=duration[ok],
        rows_in=int(watch.shape[0]),
        excluded={r: int(c) for r, c in zip(EXCLUSION_REASONS, counts)},
    )


def duration_bucket_edges(duration_ms: np.ndarray, config: WatchRatioConfig) -> np.ndarray:
    """The D - 1 inner duration edges: the configured ones, else equal-count quantiles.

    Bucket b holds durations in ``[edges[b - 1], edges[b])`` (see :func:`duration_bucket`).

    >>> duration_bucket_edges(np.arange(1.0, 101.0), WatchRatioConfig(num_buckets=4))
    array([25.75, 50.5 , 75.25])
    """
    if config.bucket_edges_ms:
        return np.asarray(config.bucket_edges_ms, dtype=np.float64)
    d = config.num_buckets
    edges = np.quantile(np.asarray(duration_ms, dtype=np.float64), np.arange(1, d) / d)
    if np.any(np.diff(edges) <= 0):
        raise ValueError(
            f"duration quantiles {edges.tolist()} tie: too many equal durations for "
            f"{d} equal-count buckets; set fewer buckets or explicit bucket_edges_ms"
        )
    return edges


def duration_bucket(duration_ms: np.ndarray, edges_ms: np.ndarray) -> np.ndarray:
    """Bucket index in [0, D) of each duration, given the D - 1 inner edges.

    >>> duration_bucket(np.array([1.0, 10.0, 25.0]), np.array([10.0, 20.0])).tolist()
    [0, 1, 2]
    """
    return np.searchsorted(edges_ms, duration_ms, side="right")


@dataclass
class GaussianMixture1d:
    """A one-dimensional Gaussian mixture, components sorted by mean.

    Args:
        means, stds, weights: (C,) each; weights sum to 1.
        iterations: EM iterations run.
        converged: whether EM met its tolerance.
    """

    means: np.ndarray
    stds: np.ndarray
    weights: np.ndarray
    iterations: int
    converged: bool


def fit_gaussian_mixture_1d(
    x: np.ndarray, num_components: int, max_iter: int, tol: float, min_std: float
) -> GaussianMixture1d:
    """EM for a 1-D Gaussian mixture (paper A.2, step 2), components sorted by mean.

    Written by hand: it is a few lines of EM, and scikit-learn is not a dependency.
    Means start at the ``(j + 1/2) / C`` quantiles, so the fit is deterministic and peak j
    is the j-th from the left.

    Args:
        x: (N,) values.
        num_components: C.
        max_iter: EM iterations at most.
        tol: EM stops when the mean log-likelihood gains less than this.
        min_std: floor of every component's standard deviation.

    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(1.0, 0.1, 500), rng.normal(3.0, 0.2, 1500)])
    >>> g = fit_gaussian_mixture_1d(x, 2, max_iter=100, tol=1e-8, min_std=1e-3)
    >>> np.round(g.means, 1).tolist(), np.round(g.weights, 2).tolist()
    ([1.0, 3.0], [0.25, 0.75])
    """
    x = np.asarray(x, dtype=np.float64)
    c = num_components
    means = np.quantile(x, (np.arange(c) + 0.5) / c)
    stds = np.full(c, max(x.std() / c, min_std))
    weights = np.full(c, 1.0 / c)
    previous = -math.inf
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is reported)
        log_p = (
            -0.5 * ((x[:, None] - means) / stds) ** 2
            - np.log(stds)
            - 0.5 * math.log(2 * math.pi)
            + np.log(np.maximum(weights, np.finfo(np.float64).tiny))
        )
        log_norm = logsumexp(log_p, axis=1)
        resp = np.exp(log_p - log_norm[:, None])
        mass = resp.sum(0) + np.finfo(np.float64).tiny
        weights = mass / x.shape[0]
        means = resp.T @ x / mass
        stds = np.maximum(np.sqrt((resp * (x[:, None] - means) ** 2).sum(0) / mass), min_std)
        likelihood = float(log_norm.mean())
        if likelihood - previous < tol:
            converged = True
            break
        previous = likelihood
    order = np.argsort(means)
    return GaussianMixture1d(means[order], stds[order], weights[order], iterations, converged)


def apportion(weights: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` into integer counts proportional to ``weights`` (largest remainder).

    The paper gives peak j ``floor(theta_j * L)`` vectors; the leftover ones (fewer than C)
    go to the largest fractional parts so that every bucket has exactly L vectors.

    >>> apportion(np.array([0.5, 0.3, 0.2]), 7).tolist()
    [4, 2, 1]
    """
    share = np.asarray(weights, dtype=np.float64) / np.sum(weights) * total
    counts = np.floor(share).astype(np.int64)
    leftover = total - int(counts.sum())
    counts[np.argsort(-(share - counts), kind="stable")[:leftover]] += 1
    return counts


@dataclass
class WatchRatioSamples:
    """The HVQ-VAE's training set: L sampled watch-ratio vectors per duration bucket.

    Args:
        vectors: (D * L, n) float32 sampled watch ratios.
        bucket: (D * L,) duration bucket of each vector.
        peak: (D * L,) mixture component (0 = leftmost peak) each vector was drawn from.
        edges_ms: (D - 1,) inner duration edges used.
        mixtures: the D fitted mixtures, one per bucket.
        bucket_ratios: D arrays, the usable ratios of each bucket (for histograms).
        excluded: rows left out by reason: :data:`EXCLUSION_REASONS` and
            ``above_max_watch_ratio``.
        empty_windows: vectors whose window held no row, drawn instead from the n rows
            nearest the peak's mean.
    """

    vectors: np.ndarray
    bucket: np.ndarray
    peak: np.ndarray
    edges_ms: np.ndarray
    mixtures: list[GaussianMixture1d]
    bucket_ratios: list[np.ndarray]
    excluded: dict[str, int]
    empty_windows: int

    @property
    def num_buckets(self) -> int:
        return len(self.mixtures)


def sample_watch_ratio_vectors(
    ratios: WatchRatios,
    config: WatchRatioConfig,
    num_peaks: int,
    edges_ms: np.ndarray | None = None,
    seed: int | None = None,
) -> WatchRatioSamples:
    """Pre-process watch ratios into D * L vectors of length n (paper A.2, steps 1-3).

    Args:
        ratios: the rows' watch ratios and durations (``DayReader.watch_ratios``).
        config: bucket and sampling settings.
        num_peaks: C, mixture components per bucket: the HVQ-VAE's cluster count.
        edges_ms: (D - 1,) inner duration edges; None: :func:`duration_bucket_edges`
            (first fit). Refits pass the edges the model was first fitted with.
        seed: sampling seed; None: ``config.seed``.

    Shapes:
        returns vectors (D * L, n), bucket (D * L,), peak (D * L,)

    >>> rng = np.random.default_rng(0)
    >>> r = WatchRatios(rng.gamma(2.0, 0.4, 600), rng.uniform(1e3, 9e3, 600), 600, {})
    >>> cfg = WatchRatioConfig(num_buckets=2, samples_per_bucket=10, sample_length=4)
    >>> s = sample_watch_ratio_vectors(r, cfg, num_peaks=3)
    >>> s.vectors.shape, np.bincount(s.bucket).tolist()
    ((20, 4), [10, 10])
    """
    if edges_ms is None:
        edges_ms = duration_bucket_edges(ratios.duration_ms, config)
    edges_ms = np.asarray(edges_ms, dtype=np.float64)
    if edges_ms.shape != (config.num_buckets - 1,):
        raise ValueError(
            f"{edges_ms.shape[0]} bucket edges given; num_buckets = {config.num_buckets} "
            f"needs {config.num_buckets - 1}"
        )
    rng = np.random.default_rng(config.seed if seed is None else seed)
    keep = ratios.ratio <= config.max_watch_ratio
    excluded = {**ratios.excluded, "above_max_watch_ratio": int((~keep).sum())}
    bucket_of_row = duration_bucket(ratios.duration_ms[keep], edges_ms)
    kept_ratio = ratios.ratio[keep]
    n, per_bucket = config.sample_length, config.samples_per_bucket
    vectors, buckets, peaks, mixtures, bucket_ratios = [], [], [], [], []
    empty_windows = 0
    for b in range(config.num_buckets):
        x = np.sort(kept_ratio[bucket_of_row == b])
        if x.shape[0] < config.min_rows_per_bucket:
            lo = edges_ms[b - 1] if b > 0 else 0.0
            hi = edges_ms[b] if b < len(edges_ms) else math.inf
            raise ValueError(
                f"duration bucket {b} [{lo:g}, {hi:g}) ms has {x.shape[0]} usable rows, fewer "
                f"than min_rows_per_bucket = {config.min_rows_per_bucket}"
            )
        gmm = fit_gaussian_mixture_1d(
            x, num_peaks, config.gmm_max_iter, config.gmm_tol, config.gmm_min_std
        )
        for j, count in enumerate(apportion(gmm.weights, per_bucket)):
            if count == 0:
                continue
            scale = np.abs(rng.normal(config.window_scale_mean, config.window_scale_std, count))
            start = np.searchsorted(x, gmm.means[j] - scale * gmm.stds[j], side="left")
            stop = np.searchsorted(x, gmm.means[j] + scale * gmm.stds[j], side="right")
            empty = stop <= start
            if empty.any():
                centre = np.searchsorted(x, gmm.means[j])
                start[empty] = np.clip(centre - n // 2, 0, max(x.shape[0] - n, 0))
                stop[empty] = np.minimum(start[empty] + n, x.shape[0])
                empty_windows += int(empty.sum())
            index = start[:, None] + (rng.random((count, n)) * (stop - start)[:, None]).astype(
                np.int64
            )
            vectors.append(x[index])
            buckets.append(np.full(count, b))
            peaks.append(np.full(count, j))
        mixtures.append(gmm)
        bucket_ratios.append(x)
    values = np.concatenate(vectors).astype(np.float32)
    if config.sort_samples:
        values.sort(axis=1)
    return WatchRatioSamples(
        vectors=values,
        bucket=np.concatenate(buckets).astype(np.int64),
        peak=np.concatenate(peaks).astype(np.int64),
        edges_ms=edges_ms,
        mixtures=mixtures,
        bucket_ratios=bucket_ratios,
        excluded=excluded,
        empty_windows=empty_windows,
    )
