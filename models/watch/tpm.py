"""TPM: tree-based progressive ordinal classification of watch time (Lin et al., KDD 2023).

Watch time is cut into L = 2^depth equal-count bins (its quantiles on the training days);
a complete binary tree over the bins has one binary classifier per internal node, ``P(go
right | reached node, x)``. A leaf's probability is the product of the decisions on its
path, and the prediction is the expectation of the bins' mean watch times. Each classifier
is trained only on the rows whose label bin lies below it (the progressive, conditional
training of TPM); TPM's variance term and its confounder adjustment are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from protorec.models.watch.head import WatchHead, check_fitted


@dataclass
class TPMConfig:
    """TPM's tree.

    Args:
        depth: d, tree depth: 2^d watch-time bins, 2^d - 1 node classifiers.
    """

    depth: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.depth <= 8:
            raise ValueError(f"depth must be in [1, 8], got {self.depth}")


def tree_paths(depth: int) -> tuple[Tensor, Tensor]:
    """Node (heap order, root 0) and direction (1 = right) at each level of each leaf's path.

    Shapes:
        -> node (2^d, d) int64, right (2^d, d) float32

    >>> node, right = tree_paths(2)
    >>> node.tolist(), right.tolist()
    ([[0, 1], [0, 1], [0, 2], [0, 2]], [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    """
    leaf = torch.arange(2**depth).unsqueeze(-1)
    level = torch.arange(depth)
    node = (2**level - 1) + (leaf >> (depth - level))
    right = ((leaf >> (depth - 1 - level)) & 1).float()
    return node, right


class TPMHead(WatchHead):
    """2^d - 1 node logits per row; the prediction is ``sum_leaf P(leaf | x) * centre_leaf``.

    Buffers (in the state dict): ``bin_edges_ms`` (2^d - 1,) inner bin edges,
    ``bin_centres_ms`` (2^d,) mean training watch time of each bin; NaN until fitted.

    Args:
        in_features: D.
        num_scenarios: S.
        hidden: tower hidden widths.
        scale_ms: unused (labels are bins); kept for the common contract.
        config: the tree.

    Shapes:
        rep: (B, D), scenario: (B,)  ->  (B, 2^d - 1); predict_ms: (B,)

    >>> head = TPMHead(8, 1, [4], 1e3, TPMConfig(depth=1))
    >>> head.fit_statistics(np.array([1.0, 2.0, 9.0, 11.0]), np.ones(4))
    >>> head.predict_ms(torch.zeros(1, 1), torch.ones(1)).tolist()  # P = 1/2 each side
    [5.75]
    """

    bin_edges_ms: Tensor
    bin_centres_ms: Tensor
    path_node: Tensor
    path_right: Tensor

    def __init__(
        self,
        in_features: int,
        num_scenarios: int,
        hidden: list[int],
        scale_ms: float,
        config: TPMConfig,
    ) -> None:
        super().__init__(in_features, num_scenarios, hidden, 2**config.depth - 1, scale_ms)
        self.config = config
        leaves = 2**config.depth
        self.register_buffer("bin_edges_ms", torch.full((leaves - 1,), float("nan")))
        self.register_buffer("bin_centres_ms", torch.full((leaves,), float("nan")))
        node, right = tree_paths(config.depth)
        self.register_buffer("path_node", node, persistent=False)
        self.register_buffer("path_right", right, persistent=False)

    def is_fitted(self) -> bool:
        return not bool(self.bin_centres_ms.isnan().any())

    def fit_statistics(self, watch_ms: np.ndarray, duration_ms: np.ndarray) -> None:
        leaves = 2**self.config.depth
        edges = np.quantile(watch_ms, np.arange(1, leaves) / leaves)
        label = np.searchsorted(edges, watch_ms, side="right")
        # Tied quantiles (many equal watch times, e.g. zeros) leave bins empty: their centre
        # is their lower edge, and no row is ever labelled with them.
        lower = np.concatenate([[watch_ms.min()], edges])
        centres = np.array(
            [watch_ms[label == b].mean() if (label == b).any() else lower[b] for b in range(leaves)]
        )
        with torch.no_grad():
            self.bin_edges_ms.copy_(torch.as_tensor(edges))
            self.bin_centres_ms.copy_(torch.as_tensor(centres))

    def loss_terms(
        self, raw: Tensor, watch_ms: Tensor, duration_ms: Tensor, scenario: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        check_fitted(self)
        label = torch.searchsorted(
            self.bin_edges_ms, watch_ms.to(self.bin_edges_ms.dtype), right=True
        )
        logits = raw.gather(1, self.path_node[label])
        # Sum over the d decisions on the row's path: each node learns only from its rows.
        bce = F.binary_cross_entropy_with_logits(logits, self.path_right[label], reduction="none")
        return {"watch": bce.sum(-1).mean()}, {}

    def leaf_probabilities(self, raw: Tensor) -> Tensor:
        """P(leaf | x) (B, 2^d): products of the decisions on each path, from (B, 2^d - 1)."""
        sign = 2 * self.path_right - 1  # (L, d)
        logits = raw[:, self.path_node]  # (B, L, d)
        return F.logsigmoid(sign * logits).sum(-1).exp()

    def predict_ms(self, raw: Tensor, duration_ms: Tensor) -> Tensor:
        check_fitted(self)
        raw = raw.reshape(raw.shape[0], -1)
        return self.leaf_probabilities(raw) @ self.bin_centres_ms.to(raw.dtype)
