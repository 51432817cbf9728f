"""K-means prototypes: the ProWTP paper's Table 3 "Kmeans" alternative to the HVQ-VAE.

The C * K prototypes are the K-means centroids of the same sampled watch-ratio vectors
the HVQ-VAE is fitted on (``protorec.models.watch.ratio``), pooled over the duration
buckets as the HVQ-VAE pools them: no encoder, no decoder, no hierarchy. A centroid is
a mean of sorted vectors, so it is itself a sorted vector of watch ratios (n values),
and that vector is the prototype the ProWTP head projects.

:func:`fit_kmeans` runs k-means++ seeding then Lloyd's iterations from a seed;
:func:`refit_kmeans` warm-starts Lloyd's iterations from yesterday's centroids, so
centroid i stays prototype i, and reports how far each moved (the HVQ-VAE's
:class:`protorec.models.hvqvae.RefitReport`).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy.cluster.vq import kmeans2

from protorec.models.hvqvae import RefitReport
from protorec.models.watch.ratio import WatchRatioSamples

log = logging.getLogger(__name__)


def _lloyd(
    data: np.ndarray, init: np.ndarray | int, iterations: int, rng: np.random.Generator | None
) -> np.ndarray:
    # scipy (already a dependency) runs k-means++ and Lloyd's; an emptied centroid stays
    # where it was (scipy warns once per iteration: counted and logged once here instead).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if isinstance(init, int):
            centroids, label = kmeans2(data, init, iter=iterations, minit="++", rng=rng)
        else:
            centroids, label = kmeans2(data, init, iter=iterations, minit="matrix")
    empty = centroids.shape[0] - np.unique(label).size
    if empty:
        log.warning("k-means: %d of %d centroids have no sample", empty, centroids.shape[0])
    return centroids.astype(np.float32)


def fit_kmeans(
    samples: WatchRatioSamples, num_prototypes: int, iterations: int, seed: int
) -> np.ndarray:
    """K-means++ then ``iterations`` Lloyd's steps on the sampled vectors.

    Args:
        samples: the HVQ-VAE's training set (D * L vectors of n watch ratios).
        num_prototypes: C * K centroids.
        iterations: Lloyd's iterations.
        seed: seed of the k-means++ draws.

    Returns:
        (C * K, n) float32 centroids.

    >>> from protorec.models.watch.ratio import WatchRatioConfig, WatchRatios
    >>> from protorec.models.watch.ratio import sample_watch_ratio_vectors
    >>> rng = np.random.default_rng(0)
    >>> r = WatchRatios(rng.gamma(2.0, 0.4, 600), rng.uniform(1e3, 9e3, 600), 600, {})
    >>> s = sample_watch_ratio_vectors(r, WatchRatioConfig(2, [], 10, 4), num_peaks=3)
    >>> fit_kmeans(s, 6, iterations=20, seed=0).shape
    (6, 4)
    """
    if samples.vectors.shape[0] < num_prototypes:
        raise ValueError(
            f"{samples.vectors.shape[0]} sampled vectors cannot give {num_prototypes} "
            "k-means prototypes"
        )
    data = np.asarray(samples.vectors, dtype=np.float64)
    return _lloyd(data, num_prototypes, iterations, np.random.default_rng(seed))


def refit_kmeans(
    previous: np.ndarray, samples: WatchRatioSamples, iterations: int
) -> tuple[np.ndarray, RefitReport]:
    """Lloyd's steps on new samples from yesterday's centroids: centroid i stays prototype i.

    Args:
        previous: (C * K, n) yesterday's centroids.
        samples: today's vectors, bucketed with the first fit's edges.
        iterations: Lloyd's iterations.

    Returns:
        (C * K, n) float32 centroids and a :class:`RefitReport` (one cluster; the codes
        are never relabelled; movement and ratio movement in watch-ratio units).
    """
    old = np.asarray(previous, dtype=np.float64)
    new = _lloyd(np.asarray(samples.vectors, dtype=np.float64), old, iterations, None)
    gaps = np.linalg.norm(old[:, None] - old[None], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    k = old.shape[0]
    report = RefitReport(
        cluster_assignment=np.zeros(1, dtype=np.int64),
        code_assignment=np.arange(k),
        movement=np.linalg.norm(new - old, axis=-1),
        spacing=float(np.median(gaps.min(axis=1))),
        ratio_movement=np.abs(new - old).mean(-1),
        revived=np.zeros(k, dtype=bool),
        history=[],
    )
    return new, report
