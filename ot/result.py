"""What every protorec OT solver returns: the plan and its diagnostics, one typed result."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class OTResult:
    """A batch of transport plans with the solver's diagnostics (POT's ``log=True``, typed).

    Notation: B problems in the batch, n rows (instances), k columns (prototypes).
    Plans are constants: solvers run under ``torch.inference_mode()`` (or ``no_grad``) on
    detached inputs and return ordinary tensors, so ``plan`` carries no graph, as the
    papers use it (a fixed target for the alignment loss).

    Args:
        plan: (B, n, k) transport plans; zero on rows and columns of zero mass.
        log_u: (B, n) or None. Log-domain row scaling of entropic solvers, POT's
            ``log["logu"]``: ``plan = exp(log_u[:, :, None] + log_K + log_v[:, None, :])``;
            ``-inf`` on zero-mass rows. Pass ``(log_u, log_v)`` back as ``warm_start``.
        log_v: (B, k) or None. Log-domain column scaling, POT's ``log["logv"]``.
        n_iter: iterations run, each one pass over the (B, n, k) costs (for the UOT
            solver, quasi-Newton iterations after its cold start's sweeps: may be 0).
        err_a: (B,) max-norm optimality residual of the row marginal, in mass units. For an
            exact row constraint it is the violation ``max |plan 1 - a|``; for a relaxed one
            the distance of ``plan 1`` to the mass the dual potential asks for (zero at the
            optimum, not ``|plan 1 - a|``, which a relaxed marginal is free to leave nonzero).
        err_b: (B,) the same for the column marginal.
        converged: every problem of the batch met the solver's stopping test.
        message: one line on how the solver stopped (e.g. "stopped at last finite iterate").
        f: (B, n) or None. Row dual potentials (Lagrange multipliers) in cost units.
        g: (B, k) or None. Column dual potentials in cost units.
        gap: (B,) or None. Certified duality gap (primal minus dual objective, >= 0) where
            the solver computes one: an upper bound on the plan's suboptimality.
        sweeps: Sinkhorn sweeps of the UOT solver's cold start (0 for a warm start and for
            the other solvers): with ``n_iter``, the solve's work.
    """

    plan: Tensor
    log_u: Tensor | None
    log_v: Tensor | None
    n_iter: int
    err_a: Tensor
    err_b: Tensor
    converged: bool
    message: str
    f: Tensor | None = None
    g: Tensor | None = None
    gap: Tensor | None = None
    sweeps: int = 0

    def cloned(self) -> OTResult:
        """A copy with every tensor cloned, for solvers that run under inference mode.

        Inference tensors can neither be saved for backward nor changed in place outside
        ``torch.inference_mode()``; the clones, made outside it, are ordinary tensors.
        """
        copy = dataclasses.replace(self)
        for f in dataclasses.fields(copy):
            value = getattr(copy, f.name)
            if isinstance(value, Tensor):
                setattr(copy, f.name, value.clone())
        return copy


def check_problem(
    C: Tensor, a: Tensor, b: Tensor, max_iter: int, tol: float, check_every: int
) -> None:
    """Raise ValueError naming what breaks the contract every solver shares.

    Shapes (C (B, n, k), a (B, n), b (B, k)), one float dtype and device, finite costs,
    finite non-negative masses, and the iteration settings. Each solver checks its own
    parameters (eps, tau, lam) beside this. One host sync, at entry, not in the loop.
    """
    if C.dim() != 3:
        raise ValueError(f"C must be (B, n, k), got shape {tuple(C.shape)}")
    B, n, k = C.shape
    if a.shape != (B, n) or b.shape != (B, k):
        raise ValueError(
            f"a must be (B, n) = {(B, n)} and b (B, k) = {(B, k)} for C of shape "
            f"{tuple(C.shape)}; got a {tuple(a.shape)}, b {tuple(b.shape)}"
        )
    if C.dtype not in (torch.float32, torch.float64) or a.dtype != C.dtype or b.dtype != C.dtype:
        raise ValueError(
            f"C, a, b must share dtype float32 or float64; got {C.dtype}, {a.dtype}, {b.dtype}"
        )
    if a.device != C.device or b.device != C.device:
        raise ValueError(f"C, a, b must be on one device; got {C.device}, {a.device}, {b.device}")
    if max_iter < 0 or check_every < 1 or not tol > 0:
        raise ValueError(
            f"need max_iter >= 0, check_every >= 1, tol > 0; got {max_iter}, {check_every}, {tol}"
        )
    # A NaN or inf anywhere makes the sum non-finite: one reduction pass instead of four.
    bad = torch.stack(
        [
            ~torch.isfinite(C.sum()),
            ~(torch.isfinite(a) & (a >= 0)).all(),
            ~(torch.isfinite(b) & (b >= 0)).all(),
        ]
    ).tolist()
    bad[0] = bad[0] and not bool(torch.isfinite(C).all())  # the sum may just overflow
    for flag, name in zip(
        bad, ("C must be finite", "a must be finite and >= 0", "b must be finite and >= 0")
    ):
        if flag:
            raise ValueError(name)
