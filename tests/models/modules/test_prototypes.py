"""Prototype sets, cosine costs, the orthogonality penalty and GPD-Net's plan cross-entropy."""

import math

import torch

from protorec.models.modules.prototypes import (
    PrototypeSets,
    orthogonality_loss,
    plan_cross_entropy,
)


def test_orthogonality_loss_is_zero_for_orthonormal_prototypes_whatever_their_norms():
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    p = q[:10] * torch.rand(10, 1, dtype=torch.float64).add(0.1) * 5  # orthogonal rows, any norm
    assert orthogonality_loss(p) < 1e-20


def test_orthogonality_loss_is_positive_otherwise_and_counts_cosines():
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    p = q[:4].clone()
    p[1] = (q[0] + q[1]) / math.sqrt(2)  # cos(p0, p1) = 1/sqrt(2): two entries of 1/2
    torch.testing.assert_close(orthogonality_loss(p), torch.tensor(1.0, dtype=torch.float64))
    assert orthogonality_loss(torch.randn(8, 4)) > 0  # 8 vectors cannot be orthogonal in R^4


def test_prototype_sets_start_orthonormal():
    sets = PrototypeSets(3, 8, 16)
    for g in range(3):
        assert orthogonality_loss(sets.weight[g]) < 1e-10


def test_plan_cross_entropy_targets_are_row_normalised_plans_over_real_prototypes():
    cost = torch.rand(2, 3, 4) * 2
    plan = torch.rand(2, 3, 4)
    rows = torch.tensor([[True, True, False], [True, True, True]])
    cols = torch.tensor([[True, True, True, False], [True, True, True, True]])
    plan = plan * rows[..., None] * cols[:, None, :]
    got, counted = plan_cross_entropy(cost, plan, cols, temperature=0.5)
    assert counted.tolist() == rows.tolist()  # rows without mass are not counted
    expected = torch.zeros(2, 3)
    for p in range(2):
        k = int(cols[p].sum())
        for j in range(int(rows[p].sum())):
            q = plan[p, j, :k] / plan[p, j, :k].sum()
            logp = torch.log_softmax((1 - cost[p, j, :k]) / 0.5, -1)
            expected[p, j] = -(q * logp).sum()
    torch.testing.assert_close(got, expected)
    # Scaling the plan does not change the soft labels.
    torch.testing.assert_close(plan_cross_entropy(cost, 3 * plan, cols, 0.5)[0], got)
