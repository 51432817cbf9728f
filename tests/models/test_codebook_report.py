"""Codebook usage, perplexity and the per-bucket PNGs of the HVQ-VAE report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protorec.models.codebook_report import codebook_usage, perplexity, plot_bucket_histograms
from protorec.models.hvqvae import HVQVAEConfig, fit
from protorec.models.watch.ratio import WatchRatios, sample_watch_ratio_vectors
from protorec.pipeline.config import from_dict


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    peak = rng.choice(3, 2000, p=[0.3, 0.5, 0.2])
    ratio = np.abs(rng.normal(np.array([0.05, 1.0, 2.0])[peak], 0.1))
    ratios = WatchRatios(ratio, rng.uniform(1e3, 6e4, 2000), 2000, {})
    cfg = from_dict(
        HVQVAEConfig,
        {
            "sampling": {"num_buckets": 3, "samples_per_bucket": 40, "sample_length": 8},
            "dim": 4,
            "encoder_hidden": [16],
            "decoder_hidden": [16],
            "num_clusters": 3,
            "num_prototypes": 2,
            "epochs": 10,
            "batch_size": 16,
        },
    )
    samples = sample_watch_ratio_vectors(ratios, cfg.sampling, cfg.num_clusters)
    model, _ = fit(samples, cfg)
    return model, samples


def test_perplexity_is_the_effective_number_of_codes():
    assert perplexity(torch.tensor([7, 0, 0, 0])) == pytest.approx(1.0)
    assert perplexity(torch.tensor([4, 4, 4, 4])) == pytest.approx(4.0)
    skewed = perplexity(torch.tensor([10, 1, 1, 1]))
    assert 1.0 < skewed < 4.0
    # Scale-free, order-free.
    assert perplexity(torch.tensor([30, 3, 3, 3])) == pytest.approx(skewed)
    assert perplexity(torch.tensor([1, 10, 1, 1])) == pytest.approx(skewed)


def test_usage_counts_every_sample_once_in_its_bucket(fitted):
    model, samples = fitted
    report = codebook_usage(model, samples)
    assert report.counts.shape == (3, 3, 2)
    assert report.counts.sum(dim=(1, 2)).tolist() == np.bincount(samples.bucket).tolist()
    codes = model.codes(torch.as_tensor(samples.vectors))
    assert report.code_counts.tolist() == torch.bincount(codes, minlength=6).tolist()
    torch.testing.assert_close(report.cluster_share().sum(-1), torch.ones(3, dtype=torch.float64))
    summary = report.as_dict()
    assert summary["used_codes"] == int((report.code_counts > 0).sum())
    assert 1.0 <= summary["perplexity"] <= 6.0


def test_one_png_per_duration_bucket(fitted, tmp_path):
    model, samples = fitted
    paths = plot_bucket_histograms(model, samples, tmp_path / "pngs")
    assert [p.name for p in paths] == ["bucket_0.png", "bucket_1.png", "bucket_2.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
