"""Watch ratios, duration buckets and the sampled vectors of the HVQ-VAE's pre-processing."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow.csv as pacsv
import pytest
from scipy.stats import wasserstein_distance

from protorec.models.watch.ratio import (
    EXCLUSION_REASONS,
    WatchRatioConfig,
    WatchRatios,
    apportion,
    duration_bucket,
    duration_bucket_edges,
    fit_gaussian_mixture_1d,
    sample_watch_ratio_vectors,
    watch_ratios_from_columns,
)
from protorec.pipeline.config import ConfigError, from_dict

KUAIRAND_TSV = "kuairand/kuairand27k_likehate_kcore15.tsv"


@pytest.fixture(scope="module")
def kuairand(shared_data) -> WatchRatios:
    """Watch ratios of the real 41,828-row KuaiRand file (play_time_ms / duration_ms)."""
    table = pacsv.read_csv(
        shared_data / KUAIRAND_TSV,
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=pacsv.ConvertOptions(include_columns=["play_time_ms", "duration_ms"]),
    )
    return watch_ratios_from_columns(
        table.column("play_time_ms").to_numpy().astype(np.float64),
        table.column("duration_ms").to_numpy().astype(np.float64),
    )


def test_kuairand_zero_durations_are_counted_exactly(kuairand, shared_data):
    # An independent count with the csv module, not pyarrow.
    with open(shared_data / KUAIRAND_TSV, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    zero = sum(float(r["duration_ms"]) == 0 for r in rows)
    assert kuairand.rows_in == len(rows) == 41_828
    assert kuairand.excluded["zero_or_negative_duration"] == zero
    assert 0.18 < zero / len(rows) < 0.19  # the data README's 18.5%
    assert kuairand.ratio.size == len(rows) - sum(kuairand.excluded.values())
    kept = [r for r in rows if float(r["duration_ms"]) > 0]
    expected = np.array([float(r["play_time_ms"]) / float(r["duration_ms"]) for r in kept])
    np.testing.assert_allclose(kuairand.ratio, expected)


def test_every_row_is_kept_or_counted_under_its_first_reason():
    nan = np.nan
    watch = np.array([nan, -1.0, 3.0, 3.0, 3.0, nan, 0.0, 6.0])
    duration = np.array([1.0, 1.0, nan, 0.0, -2.0, 0.0, 5.0, 3.0])
    r = watch_ratios_from_columns(watch, duration)
    assert list(r.excluded) == list(EXCLUSION_REASONS)
    # The missing watch with zero duration (row 5) counts once, as missing_watch.
    assert r.excluded == {
        "missing_watch": 2,
        "invalid_watch": 1,
        "missing_duration": 1,
        "zero_or_negative_duration": 2,
    }
    assert r.ratio.tolist() == [0.0, 2.0]
    assert r.duration_ms.tolist() == [5.0, 3.0]
    assert r.rows_in == r.ratio.size + sum(r.excluded.values())


def test_quantile_edges_split_durations_into_equal_buckets():
    rng = np.random.default_rng(0)
    duration = rng.lognormal(10.0, 1.0, 10_001)
    cfg = WatchRatioConfig(num_buckets=4)
    edges = duration_bucket_edges(duration, cfg)
    counts = np.bincount(duration_bucket(duration, edges), minlength=4)
    assert counts.sum() == duration.size and counts.max() - counts.min() <= 2
    fixed = WatchRatioConfig(num_buckets=3, bucket_edges_ms=[5e3, 3e4])
    assert duration_bucket_edges(duration, fixed).tolist() == [5e3, 3e4]


def test_quantile_edges_that_tie_are_an_error():
    with pytest.raises(ValueError, match="tie"):
        duration_bucket_edges(np.array([1.0] * 90 + [2.0] * 10), WatchRatioConfig(num_buckets=4))


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"num_buckets": 3, "bucket_edges_ms": [10.0]}, "bucket_edges_ms"),
        ({"num_buckets": 3, "bucket_edges_ms": [10.0, 5.0]}, "increasing"),
        ({"sample_length": 0}, "sample_length"),
        ({"max_watch_ratio": -1.0}, "max_watch_ratio"),
    ],
)
def test_bad_config_names_the_key(section, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(WatchRatioConfig, section, source="x.yaml", key="hvqvae.sampling")


def test_apportion_gives_exactly_the_total_close_to_the_shares():
    rng = np.random.default_rng(1)
    for _ in range(50):
        weights = rng.dirichlet(np.ones(rng.integers(1, 6)))
        total = int(rng.integers(1, 500))
        counts = apportion(weights, total)
        assert counts.sum() == total
        assert np.all(np.abs(counts - weights * total) < 1.0)


def test_mixture_recovers_three_peaks_sorted_by_mean():
    rng = np.random.default_rng(2)
    x = np.concatenate(
        [rng.normal(2.0, 0.3, 3000), rng.normal(0.05, 0.03, 2000), rng.normal(1.0, 0.1, 5000)]
    )
    g = fit_gaussian_mixture_1d(x, 3, max_iter=300, tol=1e-9, min_std=1e-3)
    np.testing.assert_allclose(g.means, [0.05, 1.0, 2.0], atol=0.03)
    np.testing.assert_allclose(g.stds, [0.03, 0.1, 0.3], rtol=0.1)
    np.testing.assert_allclose(g.weights, [0.2, 0.5, 0.3], atol=0.02)
    assert g.converged


def test_kuairand_samples_come_from_their_bucket_and_keep_its_shape(kuairand):
    cfg = WatchRatioConfig(num_buckets=4, samples_per_bucket=200, sample_length=16)
    s = sample_watch_ratio_vectors(kuairand, cfg, num_peaks=3)
    assert s.vectors.shape == (4 * 200, 16)
    assert np.bincount(s.bucket).tolist() == [200] * 4
    assert np.all(np.diff(s.vectors, axis=1) >= 0)  # sorted
    above = int((kuairand.ratio > cfg.max_watch_ratio).sum())
    assert s.excluded["above_max_watch_ratio"] == above
    assert sum(x.size for x in s.bucket_ratios) == kuairand.ratio.size - above
    for b in range(4):
        mine = s.vectors[s.bucket == b]
        # Every value is a row of its own bucket ...
        assert np.isin(mine, s.bucket_ratios[b].astype(np.float32)).all()
        # ... each peak gets its mixture weight's share of the L vectors ...
        expected = apportion(s.mixtures[b].weights, 200)
        assert np.bincount(s.peak[s.bucket == b], minlength=3).tolist() == expected.tolist()
        # ... and together they keep the bucket's distribution (paper Fig. 7).
        rows = s.bucket_ratios[b]
        assert wasserstein_distance(rows, mine.ravel()) < 0.35 * rows.std()


def test_refit_samples_reuse_the_given_edges(kuairand):
    cfg = WatchRatioConfig(num_buckets=3, samples_per_bucket=20, sample_length=4)
    edges = np.array([7_000.0, 40_000.0])
    s = sample_watch_ratio_vectors(kuairand, cfg, num_peaks=2, edges_ms=edges, seed=5)
    assert s.edges_ms.tolist() == edges.tolist()
    in_bucket = duration_bucket(kuairand.duration_ms, edges)
    keep = kuairand.ratio <= cfg.max_watch_ratio
    assert [x.size for x in s.bucket_ratios] == np.bincount(in_bucket[keep]).tolist()


def test_a_bucket_with_too_few_rows_is_an_error_naming_it(kuairand):
    cfg = WatchRatioConfig(num_buckets=2, min_rows_per_bucket=30)
    few = WatchRatios(kuairand.ratio, kuairand.duration_ms, kuairand.rows_in, {})
    with pytest.raises(ValueError, match="bucket 1"):
        sample_watch_ratio_vectors(few, cfg, 2, edges_ms=np.array([few.duration_ms.max() + 1]))
