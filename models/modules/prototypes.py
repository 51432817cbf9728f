"""Learnable prototype sets, the orthogonality penalty and GPD-Net's plan cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PrototypeSets(nn.Module):
    """G sets of K learnable prototypes in R^d: DistProto's P_g (G = 1) and P_s (G = S).

    Each set starts orthonormal (``nn.init.orthogonal_``: orthonormal rows when K <= d),
    a point where the orthogonality penalty is zero and no prototype starts dead.

    Args:
        num_sets: G.
        num_prototypes: K.
        dim: d.

    Shapes:
        ``weight``: (G, K, d); ``normalized()``: (G, K, d) with unit rows.

    >>> sets = PrototypeSets(2, 4, 8)
    >>> norms = sets.normalized().norm(dim=-1)
    >>> norms.shape, bool(torch.allclose(norms, torch.ones(2, 4)))
    (torch.Size([2, 4]), True)
    """

    def __init__(self, num_sets: int, num_prototypes: int, dim: int) -> None:
        super().__init__()
        weight = torch.empty(num_sets, num_prototypes, dim)
        for g in range(num_sets):
            nn.init.orthogonal_(weight[g])
        self.weight = nn.Parameter(weight)

    def normalized(self) -> Tensor:
        """The prototypes with unit rows, (G, K, d)."""
        return F.normalize(self.weight, dim=-1)


def orthogonality_loss(prototypes: Tensor) -> Tensor:
    """DistProto's ``L_ortho = ||P^ P^T - I||_F^2`` on row-normalised prototypes P^.

    Zero exactly when the prototypes are pairwise orthogonal (their norms do not matter).

    Args:
        prototypes: (K, d).

    Returns:
        a scalar.

    >>> orthogonality_loss(torch.eye(3) * 5)
    tensor(0.)
    >>> orthogonality_loss(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))  # two equal: 2 x cos^2 = 2
    tensor(2.)
    """
    p = F.normalize(prototypes, dim=-1)
    gram = p @ p.t()
    return (gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)).square().sum()


def plan_cross_entropy(
    cost: Tensor, plan: Tensor, col_mask: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """GPD-Net's auxiliary loss: the row-normalised plan as soft labels over prototypes.

    For each row j: ``q_j = T_j / sum_k T_jk`` (a constant) and
    ``-sum_k q_jk log softmax_k(cos(z_j, p_k) / temperature)`` over the real prototypes,
    with ``cos = 1 - cost``. Rows the plan gives no mass (padding among them) are not
    counted: their cross-entropy is 0 and the caller averages over the counted rows.

    Args:
        cost: (..., n, k) cosine costs (with gradient).
        plan: (..., n, k) transport plans (constant).
        col_mask: (..., k) real prototypes.
        temperature: softmax temperature.

    Returns:
        (cross-entropy (..., n), counted (..., n) bool).

    >>> cost = torch.tensor([[[0.0, 2.0], [1.0, 1.0]]])
    >>> plan = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    >>> plan_cross_entropy(cost, plan, torch.ones(1, 2, dtype=torch.bool), 1.0)
    (tensor([[0.1269, 0.0000]]), tensor([[ True, False]]))
    """
    logits = ((1.0 - cost) / temperature).masked_fill(~col_mask.unsqueeze(-2), float("-inf"))
    log_p = torch.log_softmax(logits, dim=-1).masked_fill(~col_mask.unsqueeze(-2), 0.0)
    mass = plan.sum(-1)
    target = plan.detach() / mass.clamp_min(torch.finfo(plan.dtype).tiny).unsqueeze(-1)
    return (target * -log_p).sum(-1), mass > 0
