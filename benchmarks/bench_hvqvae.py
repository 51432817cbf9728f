"""HVQ-VAE on the real KuaiRand file: pre-processing and fit time, codebook usage, refit drift.

Run: ``OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_hvqvae.py [--epochs 100
--seeds 3 --png-dir /tmp/hvqvae_png]`` (torch is set to one thread here).
Reads ``../shared/data/kuairand/kuairand27k_likehate_kcore15.tsv`` (or ``--tsv``), fits the
default-sized HVQ-VAE once per seed, refits each on fresh samples of the same data, and
prints per seed: used codes, usage perplexity (of C * K), per-cluster perplexity, the
decoded prototypes' mean watch ratios, and the refit's relabelling and movement.
With ``--png-dir`` it writes the per-bucket histograms of the first seed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import torch

from protorec.models.codebook_report import codebook_usage, plot_bucket_histograms
from protorec.models.hvqvae import HVQVAEConfig, fit, refit
from protorec.models.watch.ratio import (
    WatchRatioConfig,
    sample_watch_ratio_vectors,
    watch_ratios_from_columns,
)

DEFAULT_TSV = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "kuairand"
    / "kuairand27k_likehate_kcore15.tsv"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tsv", type=Path, default=DEFAULT_TSV)
    parser.add_argument("--epochs", type=int, default=HVQVAEConfig.epochs)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--png-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    table = pacsv.read_csv(
        args.tsv,
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=pacsv.ConvertOptions(include_columns=["play_time_ms", "duration_ms"]),
    )
    ratios = watch_ratios_from_columns(
        table.column("play_time_ms").to_numpy().astype(np.float64),
        table.column("duration_ms").to_numpy().astype(np.float64),
    )
    print(
        f"read {ratios.rows_in} rows in {time.perf_counter() - t0:.2f} s; "
        f"{ratios.ratio.size} with a watch ratio; excluded {ratios.excluded}"
    )

    for seed in range(args.seeds):
        cfg = HVQVAEConfig(epochs=args.epochs, seed=seed, sampling=WatchRatioConfig(seed=seed))
        t0 = time.perf_counter()
        samples = sample_watch_ratio_vectors(ratios, cfg.sampling, cfg.num_clusters)
        t_sample = time.perf_counter() - t0
        t0 = time.perf_counter()
        model, _ = fit(samples, cfg)
        t_fit = time.perf_counter() - t0
        usage = codebook_usage(model, samples)
        mean_ratio = model.credible_prototypes().mean_ratio.view(cfg.num_clusters, -1)
        fresh = sample_watch_ratio_vectors(
            ratios,
            cfg.sampling,
            cfg.num_clusters,
            edges_ms=model.bucket_edges_ms.numpy(),
            seed=seed + 1000,
        )
        t0 = time.perf_counter()
        _, report = refit(model, fresh)
        t_refit = time.perf_counter() - t0
        live = ~report.revived
        print(
            f"\nseed {seed}: {samples.vectors.shape[0]} vectors of {samples.vectors.shape[1]}"
            f", sampling {t_sample:.2f} s, fit {cfg.epochs} epochs {t_fit:.2f} s, refit "
            f"{cfg.refit_epochs} epochs {t_refit:.2f} s"
        )
        print(
            f"  codes used {usage.used_codes}/{cfg.num_codes}, perplexity "
            f"{usage.perplexity():.1f}, per cluster "
            f"{[round(p, 1) for p in usage.cluster_perplexity()]}, per bucket "
            f"{[round(p, 1) for p in usage.bucket_perplexity()]}"
        )
        for c, row in enumerate(mean_ratio.tolist()):
            print(f"  cluster {c} decoded mean ratios: {sorted(round(x, 2) for x in row)}")
        print(
            f"  refit: identity kept {report.identity_kept}, revived {int(report.revived.sum())}"
            f", movement / spacing max {report.relative_movement[live].max():.3f} median "
            f"{np.median(report.relative_movement[live]):.3f}, decoded ratio movement max "
            f"{report.ratio_movement[live].max():.3f}"
        )
        if args.png_dir is not None and seed == 0:
            paths = plot_bucket_histograms(model, samples, args.png_dir)
            print(f"  wrote {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
