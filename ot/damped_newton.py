"""Batched quasi-Newton steps for concave duals, without host synchronisation.

The entropic UOT solver maximises a smooth concave dual over the k column potentials of
each problem in a batch (k is small: the prototypes). Newton-type steps need few passes
over the (B, n, k) costs where Sinkhorn needs hundreds; these helpers make them safe and
batched: an inverse that never fails (Jacobi fallback), a BFGS update, and a
step-acceptance test that each problem applies on its own through ``torch.where``, so the
solver loop never asks the host which problems accepted (a line search loop would).

Written by hand: torch.optim.LBFGS optimises one problem with host-side line searches, and
no library ships a batched, synchronisation-free quasi-Newton.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Armijo's sufficient-increase fraction.
ARMIJO = 1e-4


def inverse_pd(neg_hess: Tensor) -> Tensor:
    """Inverse of a batch of symmetric positive definite matrices, never failing.

    Cholesky after a relative ridge of a few machine epsilons (nearly singular input stays
    solvable); where it still fails (``cholesky_ex`` reports it without a host sync), the
    inverse of the diagonal (a Jacobi preconditioner).

    Args:
        neg_hess: (B, k, k) symmetric positive (semi)definite.

    Returns:
        (B, k, k) symmetric positive definite.

    >>> h = torch.tensor([[[2.0, 1.0], [1.0, 4.0]]], dtype=torch.float64)
    >>> torch.allclose(inverse_pd(h) @ h, torch.eye(2, dtype=torch.float64), atol=1e-12)
    True
    """
    diag = neg_hess.diagonal(dim1=-2, dim2=-1)
    tiny = torch.finfo(neg_hess.dtype).tiny
    ridge = 16 * torch.finfo(neg_hess.dtype).eps * diag.abs() + tiny
    factor, info = torch.linalg.cholesky_ex(neg_hess + torch.diag_embed(ridge))
    # cholesky_solve against I: the same inverse, measured ~30% faster than cholesky_inverse
    # on a batch of 64 x 64 float32 matrices (MKL, one thread).
    eye = torch.eye(neg_hess.shape[-1], dtype=neg_hess.dtype, device=neg_hess.device)
    inv = torch.cholesky_solve(eye.expand_as(neg_hess), factor)
    # One non-finite entry makes the sum non-finite (a sum that merely overflows also
    # falls back, which is harmless): ten times cheaper than isfinite().all() per matrix.
    ok = (info == 0) & torch.isfinite(inv.sum((-2, -1)))
    jacobi = torch.diag_embed((diag.abs() + tiny).reciprocal_())
    return torch.where(ok.view(-1, 1, 1), inv, jacobi)


def bfgs_update(
    hinv: Tensor,
    d: Tensor,
    s: Tensor,
    grad: Tensor,
    new_grad: Tensor,
    h_new_grad: Tensor,
    accepted: Tensor,
) -> tuple[Tensor, Tensor]:
    """BFGS update of inverse curvature estimates and of the next ascent direction.

    For maximising a concave function (Nocedal and Wright, eq. 6.17, with ``y`` the
    gradient decrease). ``hinv y = d - h_new_grad`` follows from ``d = hinv grad``; the
    next direction is one more (k, k) product, with the updated matrix.

    Args:
        hinv: (B, k, k) estimate of the inverse of minus the Hessian at the current point.
        d: (B, k) current direction ``hinv @ grad``.
        s: (B, k) trial step ``x_trial - x``.
        grad: (B, k) gradient at x.
        new_grad: (B, k) gradient at the trial point.
        h_new_grad: (B, k) ``hinv @ new_grad``.
        accepted: (B,) bool: problems that take the trial step.

    Returns:
        (hinv, d) for the next iteration: updated where accepted (the curvature update
        skipped where ``s . y`` is not safely positive), unchanged where not.

    >>> h = torch.eye(2)[None]
    >>> g, g_new = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])
    >>> h, d = bfgs_update(h, g, g, g, g_new, g_new, torch.tensor([True]))
    >>> h  # now h y = s for y = g - g_new = (2, 0), s = (1, 0)
    tensor([[[0.5000, 0.0000],
             [0.0000, 1.0000]]])
    """
    y = grad - new_grad
    hy = d - h_new_grad  # hinv @ y without another (k, k) product
    # The four dot products in one batched (2, k) x (k, 3) product: on CPU the update's
    # time is the count of small operations, not their arithmetic.
    dots = torch.bmm(torch.stack([s, y], dim=-2), torch.stack([s, y, hy], dim=-1))
    ss, sy, _, _, yy, yhy = dots.flatten(-2).unsqueeze(-1).unbind(-2)
    safe = accepted.unsqueeze(-1) & (sy > 1e3 * torch.finfo(s.dtype).eps * ss.sqrt() * yy.sqrt())
    rho = torch.where(safe, sy, math.inf).reciprocal_()  # 0 where the update is skipped
    coef = rho * (1 + rho * yhy)
    rho_hy = rho * hy
    # hinv + coef s s^T - rho (hy s^T + s hy^T) = hinv + s (coef s - rho hy)^T - rho hy s^T
    # One batched rank-2 product (broadcast addcmul is ~10x slower here on CPU).
    left = torch.stack([s, -rho_hy], dim=-1)
    right = torch.stack([coef * s - rho_hy, s], dim=-2)
    hinv = torch.baddbmm(hinv, left, right)
    # The next direction hinv @ new_grad, as new_grad^T hinv (hinv is symmetric): a row
    # vector times a matrix is several times faster in MKL than the other way round.
    new_d = torch.bmm(new_grad.unsqueeze(-2), hinv).squeeze(-2)
    return hinv, torch.where(accepted.unsqueeze(-1), new_d, d)


def accept_step(
    value: Tensor, trial_value: Tensor, slope: Tensor, trial_slope: Tensor, step: Tensor
) -> Tensor:
    """Which problems accept a trial step ``x + step * d`` of a concave maximisation.

    Accept where Armijo's sufficient increase holds, or where the directional derivative
    at the trial point is still >= 0 (along a line, a concave function whose derivative is
    still >= 0 has only increased). Near the optimum the increase sinks below the round-off
    of the objective (in float32 long before the gradient does), so there a trial whose
    value is unchanged within that round-off is accepted if its slope is above
    ``-slope / 2``: for a near-quadratic function that is a step of at most 1.5 times the
    exact line maximum, which still increases it. Non-finite trials are always rejected,
    so the iterate stays the last finite one.

    Args:
        value: (B,) objective at ``x``.
        trial_value: (B,) objective at the trial point.
        slope: (B,) directional derivative ``grad(x) . d`` (> 0 for an ascent direction).
        trial_slope: (B,) directional derivative at the trial point, ``grad(x + step d) . d``.
        step: (B,) step lengths.

    Returns:
        (B,) bool.

    >>> one = torch.ones(1)
    >>> accept_step(one * 0, one * 0.4, one, -one, one)  # Armijo holds
    tensor([True])
    >>> accept_step(one * 0, one * -1, one, -one, one)  # overshoot: reject
    tensor([False])
    """
    change = trial_value - value
    armijo = change >= ARMIJO * step * slope
    noise = 16 * torch.finfo(value.dtype).eps * (value.abs() + trial_value.abs())
    flat = (change.abs() <= noise) & (trial_slope >= -0.5 * slope)
    finite = trial_value.abs() < math.inf  # False for NaN too; cheaper than isfinite
    return finite & (armijo | (trial_slope >= 0) | flat)
