"""HVQ-VAE (ProWTP eqs. 5-7): quantisation, straight-through training, revival, refit matching.

The KuaiRand tests fit the default-sized model on the real 41,828-row file and check
what the paper needs from it: a codebook that is used (not collapsed), decoded
prototypes on every watch-ratio peak, and a refit that keeps prototype identities.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch

from protorec.models.codebook_report import codebook_usage
from protorec.models.hvqvae import HVQVAE, HVQVAEConfig, fit, match_codebooks, refit
from protorec.models.watch.ratio import (
    WatchRatioConfig,
    WatchRatios,
    sample_watch_ratio_vectors,
    watch_ratios_from_columns,
)
from protorec.pipeline.config import ConfigError, from_dict

TINY = {
    "sampling": {"num_buckets": 2, "samples_per_bucket": 64, "sample_length": 8},
    "dim": 4,
    "encoder_hidden": [16],
    "decoder_hidden": [16],
    "num_clusters": 3,
    "num_prototypes": 3,
    "epochs": 20,
    "refit_epochs": 2,
    "batch_size": 16,
}


def synthetic_ratios(n: int = 3000, seed: int = 0) -> WatchRatios:
    """Watch ratios with an early-skip, a completion and a replay peak."""
    rng = np.random.default_rng(seed)
    peak = rng.choice(3, n, p=[0.3, 0.5, 0.2])
    ratio = np.abs(rng.normal(np.array([0.05, 1.0, 2.0])[peak], np.array([0.03, 0.1, 0.3])[peak]))
    return WatchRatios(ratio, rng.uniform(1e3, 6e4, n), n, {})


@pytest.fixture(scope="module")
def tiny():
    cfg = from_dict(HVQVAEConfig, TINY)
    samples = sample_watch_ratio_vectors(synthetic_ratios(), cfg.sampling, cfg.num_clusters)
    model, history = fit(samples, cfg)
    return cfg, samples, model, history


def test_quantize_follows_equations_5_and_6():
    cfg = HVQVAEConfig(
        WatchRatioConfig(sample_length=4),
        dim=5,
        num_clusters=3,
        num_prototypes=4,
        attention_temperature=2.0,
    )
    model = HVQVAE(cfg)
    with torch.no_grad():
        model.codebook.normal_()
    e = torch.randn(50, 5)
    q = model.quantize(e)
    p = model.codebook.detach()
    for b in range(50):
        centres = torch.stack(
            [(torch.softmax(p[i] @ e[b] / 2.0, 0)[:, None] * p[i]).sum(0) for i in range(3)]
        )
        c = int((centres - e[b]).norm(dim=-1).argmin())
        k = int((p[c] - e[b]).norm(dim=-1).argmin())
        assert (int(q.cluster[b]), int(q.prototype[b]), int(q.code[b])) == (c, k, c * 4 + k)
        assert torch.equal(q.z[b], p[c, k])


def test_cluster_attention_can_overrule_the_nearest_prototype():
    # Cluster 0's attention centre sits near its dominant code 10, so e = 1 goes to
    # cluster 1 and its prototype 1.5 although code 0.9 of cluster 0 is nearer.
    cfg = HVQVAEConfig(
        WatchRatioConfig(sample_length=2),
        dim=1,
        num_clusters=2,
        num_prototypes=2,
        attention_temperature=1.0,
    )
    model = HVQVAE(cfg)
    with torch.no_grad():
        model.codebook.copy_(torch.tensor([[[0.9], [10.0]], [[1.5], [1.6]]]))
    q = model.quantize(torch.tensor([[1.0]]))
    assert (int(q.cluster), int(q.prototype), float(q.z.detach())) == (1, 0, 1.5)


def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def test_loss_is_equation_7_with_a_straight_through_estimator(tiny):
    cfg, samples, fitted, _ = tiny
    model = copy.deepcopy(fitted)
    w = torch.as_tensor(samples.vectors[:40])
    out = model(w)
    q = model.quantize(model.encode(w))
    torch.testing.assert_close(out.reconstruction, model.decode(q.z))
    torch.testing.assert_close(out.commitment_loss, cfg.beta * out.codebook_loss)
    torch.testing.assert_close(
        out.loss, out.reconstruction_loss + out.codebook_loss + out.commitment_loss
    )

    def grads_of(term: str) -> tuple[float, torch.Tensor, float]:
        model.zero_grad(set_to_none=True)
        getattr(model(w), term).backward()
        enc = sum(float(g.abs().sum()) for g in _grads(model.encoder))
        dec = sum(float(g.abs().sum()) for g in _grads(model.decoder))
        book = model.codebook.grad
        book = torch.zeros_like(model.codebook) if book is None else book
        return enc, book.abs().sum(-1).flatten(), dec

    # Reconstruction reaches the encoder through the estimator, never the codebook.
    enc, book, dec = grads_of("reconstruction_loss")
    assert enc > 0 and dec > 0 and float(book.sum()) == 0
    # The codebook term moves only the chosen codes, and not the encoder.
    enc, book, _ = grads_of("codebook_loss")
    used = torch.zeros(cfg.num_codes, dtype=torch.bool)
    used[q.code] = True
    assert enc == 0 and bool((book[used] > 0).all()) and float(book[~used].sum()) == 0
    # The commitment term moves the encoder, not the codebook.
    enc, book, _ = grads_of("commitment_loss")
    assert enc > 0 and float(book.sum()) == 0


def test_fit_is_seeded_and_leaves_the_global_rng_alone(tiny):
    cfg, samples, model, history = tiny
    state = torch.get_rng_state()
    again, again_history = fit(samples, cfg)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(again.codebook, model.codebook)
    assert len(history) == cfg.epochs and again_history == history
    assert history[-1].reconstruction_loss < history[0].reconstruction_loss / 4
    assert again.bucket_edges_ms.tolist() == samples.edges_ms.tolist()


@pytest.mark.parametrize("threshold", [0.0, 0.05])
def test_a_dead_code_is_revived_only_when_revival_is_on(tiny, threshold):
    cfg, samples, fitted, _ = tiny
    model = copy.deepcopy(fitted)
    model.config = dataclasses.replace(cfg, dead_code_threshold=threshold)
    with torch.no_grad():
        model.codebook[1, 2] = 1e3  # far from every encoding: never chosen
    w = torch.as_tensor(samples.vectors)
    assert not (model.codes(w) == 5).any()
    after, report = refit(model, samples, epochs=2)
    used = bool((after.codes(w) == 5).any())
    assert bool(report.revived[5]) == used == (threshold > 0)
    assert report.identity_kept  # a revived code keeps its slot


def test_match_codebooks_undoes_a_block_permutation():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(4, 5, 3, generator=g)
    clusters = torch.randperm(4, generator=g)
    inner = torch.stack([torch.randperm(5, generator=g) for _ in range(4)])
    new = torch.stack([old[c][inner[i]] for i, c in enumerate(clusters)])
    new = new + 0.01 * torch.randn(new.shape, generator=g)
    cluster_of, code_of = match_codebooks(old, new)
    assert torch.equal(clusters[torch.as_tensor(cluster_of)], torch.arange(4))
    torch.testing.assert_close(
        new.reshape(20, 3)[torch.as_tensor(code_of)], old.reshape(20, 3), atol=0.05, rtol=0
    )


def test_block_permutation_does_not_change_quantisation(tiny):
    # Why matching may relabel clusters and prototypes within a cluster, but nothing else.
    _, samples, model, _ = tiny
    permuted = copy.deepcopy(model)
    with torch.no_grad():
        permuted.codebook.copy_(model.codebook[[2, 0, 1]][:, [1, 2, 0]])
    e = model.encode(torch.as_tensor(samples.vectors))
    torch.testing.assert_close(permuted.quantize(e).z, model.quantize(e).z)


def test_a_revived_code_keeps_its_slot_in_matching():
    old = torch.tensor([[[0.0], [1.0], [2.0]]])
    new = torch.tensor([[[0.5], [0.01], [2.0]]])  # code 0 revived at 0.5, code 1 drifted
    assert match_codebooks(old, new)[1].tolist() == [1, 0, 2]
    revived = torch.tensor([[True, False, False]])
    assert match_codebooks(old, new, revived)[1].tolist() == [0, 1, 2]


def test_refit_requires_the_previous_models_edges(tiny):
    cfg, _, model, _ = tiny
    other = sample_watch_ratio_vectors(
        synthetic_ratios(seed=1), cfg.sampling, cfg.num_clusters, edges_ms=np.array([9_999.0])
    )
    with pytest.raises(ValueError, match="edges"):
        refit(model, other)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"num_prototypes": 0}, "num_prototypes"),
        ({"beta": -0.1}, "beta"),
        ({"dead_code_threshold": 1.0}, "dead_code_threshold"),
        ({"sampling": {"sample_length": 0}}, "hvqvae.sampling: sample_length"),
    ],
)
def test_bad_config_names_the_key(section, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(HVQVAEConfig, section, source="m.yaml", key="hvqvae")


@pytest.fixture(scope="module")
def kuairand(shared_data):
    """The real KuaiRand file's watch ratios, pre-processed and fitted at default sizes."""
    table = pacsv.read_csv(
        shared_data / "kuairand/kuairand27k_likehate_kcore15.tsv",
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=pacsv.ConvertOptions(include_columns=["play_time_ms", "duration_ms"]),
    )
    ratios = watch_ratios_from_columns(
        table.column("play_time_ms").to_numpy().astype(np.float64),
        table.column("duration_ms").to_numpy().astype(np.float64),
    )
    cfg = HVQVAEConfig(epochs=60)
    samples = sample_watch_ratio_vectors(ratios, cfg.sampling, cfg.num_clusters)
    model, _ = fit(samples, cfg)
    return ratios, cfg, samples, model


def test_kuairand_codebook_usage_is_not_collapsed(kuairand, record_property):
    _, cfg, samples, model = kuairand
    report = codebook_usage(model, samples)
    record_property("perplexity", report.perplexity())
    print(
        f"KuaiRand HVQ-VAE: {report.used_codes}/{cfg.num_codes} codes used, "
        f"perplexity {report.perplexity():.1f}"
    )
    assert report.used_codes >= 3 * cfg.num_codes // 4
    assert report.perplexity() > cfg.num_codes / 3  # measured 17.2 of 24 (seed 0)
    assert min(report.cluster_perplexity()) > cfg.num_prototypes / 4
    assert min(report.bucket_perplexity()) > 2


def test_kuairand_prototypes_cover_the_watch_ratio_modes(kuairand):
    _, _, _, model = kuairand
    ratio = model.credible_prototypes().mean_ratio
    assert bool((ratio < 0.15).any()), "no prototype on the early-skip peak"
    assert bool(((ratio > 0.85) & (ratio < 1.15)).any()), "no prototype on completion"
    assert bool((ratio > 1.3).any()), "no prototype on the replay tail"


def test_kuairand_refit_on_unchanged_data_keeps_identities(kuairand):
    ratios, cfg, _, model = kuairand
    fresh = sample_watch_ratio_vectors(
        ratios, cfg.sampling, cfg.num_clusters, edges_ms=model.bucket_edges_ms.numpy(), seed=1
    )
    refitted, report = refit(model, fresh)
    assert report.identity_kept
    assert report.cluster_assignment.tolist() == list(range(cfg.num_clusters))
    live = ~report.revived
    assert report.revived.sum() <= cfg.num_codes // 8
    assert report.relative_movement[live].max() < 0.25
    assert report.ratio_movement[live].max() < 0.1
    assert torch.equal(refitted.bucket_edges_ms, model.bucket_edges_ms)
