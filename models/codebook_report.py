"""What the HVQ-VAE codebook is doing: code usage and perplexity, and a PNG per duration bucket.

Usage counts which code each sampled watch-ratio vector is quantised to, per duration
bucket. Perplexity ``exp(H(usage))`` is the effective number of codes in use: 1 means the
codebook collapsed onto one code, C * K means every code is used equally. The PNGs draw
each bucket's watch-ratio histogram with the decoded prototypes on top, so a person can
see whether the codebook covers the peaks (early skip, completion, replay).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from protorec.models.hvqvae import HVQVAE, perplexity
from protorec.models.watch.ratio import WatchRatioSamples

__all__ = ["CodebookReport", "codebook_usage", "perplexity", "plot_bucket_histograms"]


@dataclass
class CodebookReport:
    """Code usage of a set of samples, by duration bucket.

    Args:
        counts: (D, C, K) samples of bucket b quantised to prototype k of cluster c.
        edges_ms: (D - 1,) inner duration edges of the buckets.
    """

    counts: Tensor
    edges_ms: np.ndarray

    @property
    def code_counts(self) -> Tensor:
        """(C * K,) samples per flat code, all buckets together."""
        return self.counts.sum(0).flatten()

    @property
    def used_codes(self) -> int:
        """Codes chosen by at least one sample."""
        return int((self.code_counts > 0).sum())

    def perplexity(self) -> float:
        """Perplexity of the flat code usage, all buckets together (1 .. C * K)."""
        return perplexity(self.code_counts)

    def bucket_perplexity(self) -> list[float]:
        """(D,) perplexity of the flat code usage within each bucket."""
        return [perplexity(c) for c in self.counts]

    def cluster_perplexity(self) -> list[float]:
        """(C,) perplexity of prototype usage within each cluster (1 .. K)."""
        return [perplexity(c) for c in self.counts.sum(0)]

    def cluster_share(self) -> Tensor:
        """(D, C) share of each bucket's samples sent to each cluster."""
        per_cluster = self.counts.sum(-1).double()
        return per_cluster / per_cluster.sum(-1, keepdim=True).clamp_min(1)

    def as_dict(self) -> dict:
        """Plain numbers for logs and metrics.json."""
        return {
            "used_codes": self.used_codes,
            "num_codes": int(self.code_counts.numel()),
            "perplexity": self.perplexity(),
            "bucket_perplexity": self.bucket_perplexity(),
            "cluster_perplexity": self.cluster_perplexity(),
            "cluster_share": self.cluster_share().tolist(),
            "counts": self.counts.tolist(),
        }


def codebook_usage(model: HVQVAE, samples: WatchRatioSamples) -> CodebookReport:
    """Quantise every sampled vector and count the codes by duration bucket.

    Args:
        model: a fitted HVQ-VAE.
        samples: sampled watch-ratio vectors with their buckets.

    Shapes:
        returns counts (D, C, K)
    """
    c, k, _ = model.codebook.shape
    d = samples.num_buckets
    code = model.codes(torch.as_tensor(samples.vectors, dtype=torch.float32))
    flat = torch.as_tensor(samples.bucket) * (c * k) + code
    counts = torch.bincount(flat, minlength=d * c * k).view(d, c, k)
    return CodebookReport(counts=counts, edges_ms=np.asarray(samples.edges_ms))


def _bucket_label(edges_ms: np.ndarray, b: int) -> str:
    lo = edges_ms[b - 1] / 1000 if b > 0 else 0.0
    hi = f"{edges_ms[b] / 1000:.1f} s" if b < len(edges_ms) else "inf"
    return f"duration [{lo:.1f} s, {hi})"


def plot_bucket_histograms(
    model: HVQVAE,
    samples: WatchRatioSamples,
    out_dir: str | Path,
    bins: int = 60,
    quantiles: tuple[float, float] = (0.1, 0.9),
) -> list[Path]:
    """Write ``bucket_<b>.png`` per duration bucket: histogram with decoded prototypes on top.

    Each prototype is drawn at the mean of its decoded watch-ratio vector (a marker,
    coloured by cluster) with a bar over the given quantiles of that vector; its height is
    the share of the bucket's sampled vectors quantised to it (hollow: unused in this
    bucket). The histogram is of the bucket's rows, up to ``max_watch_ratio``.

    Args:
        model: a fitted HVQ-VAE.
        samples: the pre-processed samples (their rows per bucket are histogrammed).
        out_dir: created if missing.
        bins: histogram bins.
        quantiles: the decoded vector's quantiles spanned by each prototype's bar.

    Returns:
        the D paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = codebook_usage(model, samples)
    protos = model.credible_prototypes()
    decoded = protos.decoded.numpy()
    centre = decoded.mean(-1)
    low, high = np.quantile(decoded, quantiles, axis=-1)
    cluster = protos.cluster.numpy()
    max_ratio = model.config.sampling.max_watch_ratio
    colours = [f"C{c % 10}" for c in cluster]
    paths = []
    for b in range(samples.num_buckets):
        fig = Figure(figsize=(8, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        rows = samples.bucket_ratios[b]
        ax.hist(
            rows,
            bins=bins,
            range=(0.0, max_ratio),
            density=True,
            color="0.75",
            label=f"watch ratio ({rows.size} rows)",
        )
        ax.set_xlabel("watch ratio (watch / duration)")
        ax.set_ylabel("density")
        counts = report.counts[b].flatten().double()
        share = (counts / counts.sum().clamp_min(1)).numpy()
        top = ax.twinx()
        top.hlines(share, low, high, colors=colours, linewidth=1.5)
        used = share > 0
        top.scatter(
            centre[used],
            share[used],
            c=[colours[i] for i in np.flatnonzero(used)],
            zorder=3,
            label="decoded prototype (mean, usage)",
        )
        top.scatter(
            centre[~used],
            share[~used],
            facecolors="none",
            edgecolors=[colours[i] for i in np.flatnonzero(~used)],
            zorder=3,
            label="unused here",
        )
        top.set_ylabel("share of the bucket's sampled vectors")
        top.set_ylim(bottom=0)
        ax.set_xlim(0.0, max_ratio)
        ax.set_title(
            f"bucket {b}: {_bucket_label(report.edges_ms, b)}, "
            f"code perplexity {report.bucket_perplexity()[b]:.1f}"
        )
        handles, labels = ax.get_legend_handles_labels()
        more_handles, more_labels = top.get_legend_handles_labels()
        top.legend(
            handles + more_handles, labels + more_labels, loc="upper right", fontsize="small"
        )
        path = out / f"bucket_{b}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths
