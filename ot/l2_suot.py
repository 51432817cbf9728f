r"""Batched semi-relaxed OT with a squared-L2 penalty on the prototype marginal (ProWTP eq. 8).

Problem, for each of B problems with costs C (n, k), instance masses a (n,) and prototype
masses b (k,):

.. math::

    P^* = \min_{T \ge 0,\; T 1 = a} \langle T, C\rangle + \lambda \|T^\top 1 - b\|_2^2 ,

a convex QP, solved to its exact optimum within a certified duality gap (not an entropic
approximation). ProWTP (after Chapel et al. 2021, "Unbalanced optimal transport through
non-negative penalized linear regression") solves it with POT's regularisation path,
``ot.regpath.regularization_path(b, a, C.T, reg=1 / (2 lam), semi_relaxed=True)``:
seconds per 128 x 64 problem, one problem per call.

Dual: with column potentials :math:`g = 2\lambda(T^\top 1 - b)`, row potentials f and
slacks :math:`S = C + g - f \ge 0`, the KKT conditions are primal feasibility, dual
feasibility and :math:`T \odot S = 0`; for any feasible pair the duality gap is exactly
:math:`\langle T, S\rangle`.

Algorithm: Mehrotra's predictor-corrector primal-dual interior-point method (Nocedal and
Wright, ch. 14 and 16.6), feasible throughout. The row constraints are separable, so the
Newton system reduces to one k x k symmetric positive definite system per problem,
:math:`(I + 2\lambda L)\,\Delta c = r`, with L the Laplacian-like matrix
:math:`\mathrm{diag}(D^\top 1) - D^\top \mathrm{diag}(1/D1) D`, ``D = T / S``: a few passes
over the real (nonzero-mass) rows, whatever the padding, and a batched Cholesky per
iteration, ~15 iterations to a relative gap of 1e-8 whatever the conditioning. Written by
hand: no torch library solves batched QPs (qpth, for one, is dense in the n k variables
and unmaintained).

Computation is in float64, except for float32 input at ``tol >= 1e-4`` (ProWTP's): the
iterations then run in float32 (~1000x its resolution leaves the rounding far below the
gap sought) and, should they not certify tol, the problem is solved again in float64.
The certificate is computed in float64 either way; the plan comes back in the input
dtype. Everything runs under ``torch.inference_mode()`` (no autograd bookkeeping on the
~100 small operations of an iteration); the results are ordinary tensors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from protorec.ot.result import OTResult, check_problem

#: Fraction of the way to the boundary of the positive orthant that a step may go.
_TO_BOUNDARY = 0.99
#: Slack of the starting point: these fractions of the costs' spread and of the penalty's
#: scale 2 lam max b (rather than 1 of their sum: 12.4 -> 9.3 iterations at tol 1e-4 on
#: ProWTP's problems, with the centred start; a smaller share of the spread helps them
#: further but costs iterations at lam 5-50; docs/ot.md).
_START_SLACK_SPREAD = 0.05
_START_SLACK_PENALTY = 0.1
#: Smallest relative gap certified from float32 iterations (float32 input only): ~1000x
#: float32's resolution, so that the iterates' rounding stays far below the gap sought.
_FLOAT32_TOL = 1e-4


def _check(
    C: Tensor, a: Tensor, b: Tensor, lam: float, max_iter: int, tol: float, check_every: int
) -> None:
    """Raise ValueError naming the first argument that breaks the solver's contract."""
    check_problem(C, a, b, max_iter, tol, check_every)
    if not (lam > 0 and math.isfinite(lam)):
        raise ValueError(f"lam must be finite and > 0, got {lam}")
    infeasible = ((a > 0).any(-1) & ~(b > 0).any(-1)).nonzero().flatten()
    if len(infeasible):
        raise ValueError(
            f"T 1 = a is infeasible in problems {infeasible.tolist()}: row mass "
            "but no column with mass (zero-mass columns are padding)"
        )


def _dual_objective(a_f: Tensor, g: Tensor, b: Tensor, lam: float) -> Tensor:
    """Dual objective ``sum a f - <g, b> - |g|^2 / (4 lam)`` from ``a_f = sum a f`` (B,).

    A lower bound on the primal when the slacks ``C + g - f`` are >= 0.
    """
    return a_f - torch.linalg.vecdot(g, b) - g.square().sum(-1) / (4 * lam)


class _InteriorPoint:
    """Feasible primal-dual interior-point iterations for a batch of L2 semi-relaxed QPs.

    Works on the real rows only: the rows with mass of all B problems. Without zero-mass
    rows they keep the input's (B, n) layout (problem-level terms broadcast for free);
    otherwise (ragged) they are the N real rows flattened into a (1, N) layout, each
    knowing its ``problem``. The row constraints are per row; only the column terms couple
    the rows of one problem, through per-problem sums (there one (B, N) one-hot product)
    and the k x k systems (one batched product over the padded layout, into which the rows
    are copied once per iteration). A padded batch (ProWTP's scenarios, ~2.1x the real
    rows) thus costs what its real rows cost. Row tensors are (G, m, k): (B, n, k) or
    (1, N, k). The primal T and slack S are packed in one (2, G, m, k) tensor, so that an
    update or a ratio test is one operation for both.
    """

    def __init__(self, C: Tensor, a: Tensor, b: Tensor, lam: float) -> None:
        B, n, k = C.shape
        self.lam, self.b, self.shape = lam, b, (B, n, k)
        row_ok = a > 0
        col_ok = b > 0
        valid = row_ok.unsqueeze(-1) & col_ok.unsqueeze(-2)
        c_max = torch.where(valid, C, -math.inf).amax((-2, -1))
        c_min = torch.where(valid, C, math.inf).amin((-2, -1))
        spread = torch.where(torch.isfinite(c_max), c_max - c_min, 0)
        penalty = 2 * lam * b.amax(-1)
        # Twice a bound on |objective| over feasible plans: sum a max |C| for <T, C>, and
        # lam (sum a + sum b)^2 for the penalty (|v|_2 <= |v|_1 for v >= 0).
        c_abs = torch.where(torch.isfinite(c_max), torch.maximum(c_max.abs(), c_min.abs()), 0)
        mass = a.sum(-1)
        self.objective_bound = 2 * (mass * c_abs + lam * (mass + b.sum(-1)).square())
        self.scale = spread + penalty + torch.finfo(C.dtype).tiny
        self.start_slack = (
            _START_SLACK_SPREAD * spread + _START_SLACK_PENALTY * penalty
        ).clamp_min(torch.finfo(C.dtype).tiny)
        # The real rows, in the padded layout's order (one host sync, before the loop).
        self.pos = row_ok.flatten().nonzero().squeeze(-1)  # (N,) index into B * n
        self.ragged = self.pos.shape[0] < B * n
        if self.ragged:
            self.problem = torch.div(self.pos, n, rounding_mode="floor")
            self.onehot = (self.problem == torch.arange(B, device=C.device).unsqueeze(-1)).to(
                C.dtype
            )  # (B, N): per-problem sums over rows as one product
            self.C = C.reshape(B * n, k).index_select(0, self.pos).unsqueeze(0)
            self.a = a.flatten().index_select(0, self.pos).unsqueeze(0)
            # A buffer in the padded layout (padding stays zero), for w in the k x k
            # products and then for the decrease rates in the per-problem step lengths.
            self.padded = torch.zeros(B * n, k, dtype=C.dtype, device=C.device)
        else:
            self.C, self.a = C, a
        # Zero-mass columns are padding: their entries are fixed at T = 0 with a huge slack.
        self.col_padded = not bool(col_ok.all())
        self.valid = self.rows(col_ok).expand_as(self.C)  # (G, m, k)
        self.n_valid = self.per_problem(self.valid.sum(-1).to(C.dtype)).clamp_min(1)
        self.big = torch.finfo(C.dtype).max ** 0.5
        self.lam_b2 = lam * b.square().sum(-1)
        self.eps_scale = torch.finfo(C.dtype).eps * self.scale

    def per_problem(self, x: Tensor) -> Tensor:
        """Sums over each problem's rows: (G, m) -> (B,), (G, m, k) -> (B, k)."""
        return self.onehot.to(x.dtype) @ x[0] if self.ragged else x.sum(1)

    def per_problem_max(self, x: Tensor) -> Tensor:
        """Largest value of each problem's rows of x >= 0: (E, G, m) -> (E, B)."""
        if self.ragged:  # zero on absent rows
            x = x.new_zeros(x.shape[0], self.shape[0] * self.shape[1]).index_copy_(
                1, self.pos, x[:, 0]
            )
        return x.view(x.shape[0], self.shape[0], -1).amax(-1)

    def rows(self, x: Tensor) -> Tensor:
        """Per-problem values (B,) or (B, k), broadcastable against (G, m) or (G, m, k)."""
        return x.index_select(0, self.problem).unsqueeze(0) if self.ragged else x.unsqueeze(1)

    def start(self) -> tuple[Tensor, Tensor]:
        """A strictly feasible, roughly centred point: T ~ 1 / S on each row, slack ~ scale.

        From T uniform on each row, the slacks S its potentials give, then T = a 1 / S
        normalised per row (every row's T S constant, as on the central path) and its S:
        one iteration fewer than from the uniform T (on ProWTP's problems and on random
        ones, lam 0.5-50, tol 1e-4 and 1e-8).

        Returns X = [T, S] (2, G, m, k) and f (G, m).
        """
        per_row = self.valid.sum(-1, keepdim=True).clamp_min(1).to(self.C.dtype)
        S, _ = self.slacks(self.masked((self.a.unsqueeze(-1) / per_row).expand_as(self.C), 0))
        inv_S = self.masked(S.reciprocal(), 0)
        T = inv_S.mul_((self.a / inv_S.sum(-1)).unsqueeze(-1))
        S, f = self.slacks(T)
        return torch.stack([T, S]), f

    def slacks(self, T: Tensor) -> tuple[Tensor, Tensor]:
        """Slacks S = C + g - f of T's potentials g (huge on padding columns), and f.

        f is each row's least C + g minus the start's slack (``_START_SLACK_*``).
        """
        g = 2 * self.lam * (self.per_problem(T) - self.b)
        x = self.masked(self.C + self.rows(g), math.inf)
        f = x.amin(-1) - self.rows(self.start_slack)
        return self.masked(x - f.unsqueeze(-1), self.big), f

    def masked(self, x: Tensor, fill: float) -> Tensor:
        """X (G, m, k) with ``fill`` on padding columns (x itself where there are none)."""
        return torch.where(self.valid, x, fill) if self.col_padded else x

    def objective(self, T: Tensor, f: Tensor, gap: Tensor) -> Tensor:
        """(B,) objective of the iterate (T, f) with its gap: :func:`_dual_objective` + gap.

        Exact for feasible iterates. With c = T^T 1 and g = 2 lam (c - b), the dual's
        ``<g, b> + |g|^2 / (4 lam)`` is ``lam (|c|^2 - |b|^2)``: a few operations fewer
        for the test of every iteration.
        """
        c = self.per_problem(T)
        dual = self.per_problem(self.a * f).sub_(torch.linalg.vecdot(c, c), alpha=self.lam)
        return dual.add_(self.lam_b2).add_(gap)

    def max_step(self, inv_X: Tensor, dX: Tensor) -> Tensor:
        """(B,) largest step keeping every problem's T and S >= 0 (inf if nothing decreases).

        ``inv_X`` is 1 / X. NaN in a direction propagates into its problem's step (the
        caller refuses it).
        """
        rate = dX * inv_X
        if self.col_padded:  # T = dT = 0 on padding columns: no limit
            rate = rate.masked_fill_(~self.valid, 0)
        # T's and S's rates in one, then one reduction per problem over all its entries,
        # contiguous: a reduction over a last dimension of k (24 for ProWTP) is ~3x slower
        # per entry in float32.
        rate = torch.minimum(rate[0], rate[1])  # (G, m, k)
        if self.ragged:  # the buffer's padding stays 0: no limit from absent rows
            rate = self.padded.index_copy_(0, self.pos, rate[0])
        return rate.view(self.shape[0], -1).amin(-1).clamp_max_(0).reciprocal_().neg_()

    def step(self, X: Tensor, gap: Tensor, done: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One Mehrotra predictor-corrector step from X = [T, S]: (dX, df, alpha, refused).

        alpha (B,) is 0 where done and where the step came out non-finite (refused).
        """
        T = X[0]
        # Reciprocals once: a division costs twice a product here, and 1 / X serves D,
        # the corrector's target and both ratio tests.
        inv_X = X.reciprocal()
        inv_S = inv_X[1]
        D = T * inv_S  # zero on padding columns (T = 0 there)
        d = D.sum(-1)
        inv_d = d.reciprocal()
        w = D * inv_d.sqrt().unsqueeze(-1)
        if self.ragged:
            w = self.padded.index_copy_(0, self.pos, w[0]).view(self.shape)
        gram = w.transpose(-2, -1) @ w
        # L = diag(D^T 1) - D^T diag(1/d) D, its diagonal formed as the sum of the
        # off-diagonal magnitudes (rows of L sum to zero): no cancellation of huge terms.
        diagonal = gram.diagonal(dim1=-2, dim2=-1)
        diagonal.zero_()
        off = gram.sum(-1)
        system = gram.neg_()
        diagonal.copy_(off).add_(1 / (2 * self.lam))
        factor, _ = torch.linalg.cholesky_ex(system)  # SPD, eigenvalues >= 1 / (2 lam)

        def direction(Q: Tensor) -> tuple[Tensor, Tensor]:
            q = Q.sum(-1)
            rhs = self.per_problem(torch.addcmul(Q, D, (q * inv_d).unsqueeze(-1), value=-1))
            # e = 2 lam dc: the system is (I + 2 lam L) / (2 lam).
            e = self.rows(torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1))
            df = torch.linalg.vecdot(D, e).sub_(q).mul_(inv_d)
            dX = torch.empty_like(X)
            dS = torch.sub(e, df.unsqueeze(-1), out=dX[1])
            torch.addcmul(Q, D, dS, value=-1, out=dX[0])
            return dX, df

        dX, _ = direction(-T)  # affine-scaling predictor
        alpha = self.max_step(inv_X, dX).clamp_(max=1.0)
        # The predictor solves S dT + T dS = -T S, so its complementarity after a step
        # alpha is (1 - alpha) gap + alpha^2 <dT, dS>: no trial point to form.
        cross = dX[0] * dX[1]
        gap_aff = torch.addcmul(gap * (1 - alpha), alpha.square(), self.per_problem(cross.sum(-1)))
        # sigma mu = (mu_aff / mu)^3 mu, mu = gap / n_valid the mean complementarity.
        sigma_mu = (gap_aff / gap).clamp_(min=0.0, max=1.0).pow_(3).mul_(gap / self.n_valid)
        target = torch.sub(self.rows(sigma_mu).unsqueeze(-1), cross).mul_(inv_S).sub_(T)
        if self.col_padded:
            target = target.masked_fill_(~self.valid, 0)
        dX, df = direction(target)  # centring corrector
        alpha = self.max_step(inv_X, dX).mul_(_TO_BOUNDARY).clamp_(max=1.0).masked_fill_(done, 0)
        # A non-finite direction (NaN propagates into alpha: at most 1, never inf) is
        # refused: alpha = 0.
        refused = alpha.isnan()
        return dX, df, alpha.nan_to_num_(0.0), refused


def solve_l2_semirelaxed(
    C: Tensor,
    a: Tensor,
    b: Tensor,
    lam: float,
    max_iter: int = 100,
    tol: float = 1e-8,
    check_every: int = 5,
    warm_start: OTResult | Tensor | None = None,
) -> OTResult:
    r"""Exact plans of ProWTP's semi-relaxed L2 OT (eq. 8) for a batch of problems.

    Solves :math:`\min_{T\ge0,\,T1=a} \langle T,C\rangle + \lambda\|T^\top1-b\|^2` for each
    problem by a primal-dual interior-point method (see the module docstring): the
    objective POT's ``regularization_path(b, a, C.T, reg=1/(2*lam), semi_relaxed=True)``
    reaches (its plan is ``t.reshape(k, n).T``). The plan is a constant: computed under
    ``torch.inference_mode()`` on detached inputs, it carries no gradient (ProWTP uses it as a
    fixed target).

    Args:
        C: (B, n, k) costs, finite.
        a: (B, n) instance masses >= 0 (the exact marginal); zero rows (padding of ragged
            batches) get a zero plan row and do not change the others.
        b: (B, k) prototype masses >= 0 (the L2-penalised marginal). A zero column is
            padding: it receives no mass (unlike in the plain QP, where it could) and does
            not change the others.
        lam: penalty weight lambda > 0.
        max_iter: at most this many interior-point iterations (each a few passes over C).
        tol: stop when every problem's duality gap is at most ``tol`` times its objective.
        check_every: test convergence (a host sync on CUDA) every this many iterations;
            problems that have converged stop moving in between. On CPU a test costs
            nothing, and 1 saves the iterations run past convergence.
        warm_start: must be None: interior-point methods start from a central point, and
            a previous plan or potential (on the boundary) would only slow them down.

    Returns:
        OTResult with plan (B, n, k) in the input dtype; f (B, n) and g (B, k) the QP's
        multipliers (``g = 2 lam (T^T 1 - b)``, ``C + g - f >= 0``); gap (B,) the duality
        gap ``P(T) - D(f, g)``, certified (>= the plan's suboptimality); err_a the row
        constraint violation ``max |T 1 - a|``; err_b the violation of the dual
        constraint, ``max(0, max -(C + g - f))``; log_u = log_v = None.

    Shapes:
        C (B, n, k), a (B, n), b (B, k) -> plan (B, n, k)

    >>> C = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]], dtype=torch.float64)
    >>> a = b = torch.full((1, 2), 0.5, dtype=torch.float64)
    >>> res = solve_l2_semirelaxed(C, a, b, lam=1.0)
    >>> res.plan.sum(-2)  # column masses: the penalty pulls 1/4 of the mass to column 2
    tensor([[0.7500, 0.2500]], dtype=torch.float64)
    >>> bool(res.gap.item() <= 1e-8)
    True
    """
    _check(C, a, b, lam, max_iter, tol, check_every)
    if warm_start is not None:
        raise ValueError("solve_l2_semirelaxed takes no warm start (interior-point method)")
    # Inference mode rather than no_grad: no version counters or view tracking on the
    # ~100 small operations of an iteration (~17% of a ProWTP solve on CPU).
    with torch.inference_mode():
        C, a, b = (x.detach() for x in (C, a, b))
        result = None
        if C.dtype == torch.float32 and tol >= _FLOAT32_TOL:
            result = _solve(C, a, b, lam, max_iter, tol, check_every, torch.float32)
            # Not converged: float32 did not certify tol (rounding stalled it), so float64
            # from the start.
        if result is None or not result.converged:
            result = _solve(C, a, b, lam, max_iter, tol, check_every, torch.float64)
    return result.cloned()  # ordinary tensors, out of inference mode


def _solve(
    C: Tensor,
    a: Tensor,
    b: Tensor,
    lam: float,
    max_iter: int,
    tol: float,
    check_every: int,
    dtype: torch.dtype,
) -> OTResult:
    """:func:`solve_l2_semirelaxed`'s iterations in ``dtype``, its certificate in float64."""
    out_dtype = C.dtype
    ipm = _InteriorPoint(C.to(dtype), a.to(dtype), b.to(dtype), lam)
    X, f = ipm.start()
    n_bad = torch.zeros(C.shape[0], dtype=torch.long, device=C.device)
    n_iter, converged = 0, False
    # With a test every iteration, no problem can pass while every gap exceeds tol times
    # the objective's bound: the test's ~10 operations wait until one may (the same stops).
    upper = (ipm.objective_bound + ipm.eps_scale).mul_(tol) if check_every == 1 else None
    none_done = torch.zeros(C.shape[0], dtype=torch.bool, device=C.device)
    while True:
        gap = ipm.per_problem(torch.linalg.vecdot(X[0], X[1]))
        if upper is not None and n_iter < max_iter and not bool((gap <= upper).any()):
            done = none_done
        elif n_iter % check_every == 0 or n_iter >= max_iter:
            limit = ipm.objective(X[0], f, gap).abs_().add_(ipm.eps_scale).mul_(tol)
            done = gap <= limit
            converged = bool(done.all())  # a test is one host synchronisation
            if converged or n_iter >= max_iter:
                break
        else:  # between checks, problems under the last check's limit stop moving
            done = gap <= limit
        dX, df, alpha, refused = ipm.step(X, gap, done)
        n_bad += refused
        alpha = ipm.rows(alpha)
        X = X.addcmul_(alpha.unsqueeze(-1), dX)
        f = f.addcmul_(alpha, df)
        n_iter += 1
    T = ipm.masked(X[0], 0)
    # Certificate from scratch, on the real rows, in float64 whatever the iterations ran
    # in (ipm's C and a are the input's values): the primal objective of the returned
    # plan minus the exact dual at its g (hard row minima, not the iteration's f).
    T64, C64, a64, f64, b64 = (x.to(torch.float64) for x in (T, ipm.C, ipm.a, f, b))
    c = ipm.per_problem(T64)
    g = 2 * lam * (c - b64)
    row_min = ipm.masked(C64 + ipm.rows(g), math.inf).amin(-1)
    dual = _dual_objective(ipm.per_problem(a64 * row_min), g, b64, lam)
    primal = ipm.per_problem(torch.linalg.vecdot(T64, C64)) + lam * (c - b64).square().sum(-1)
    gap = primal - dual
    # Each problem's largest row errors: |T 1 - a| and the most negative slack C + g - f.
    err_a, err_b = ipm.per_problem_max(
        torch.stack([(T64.sum(-1) - a64).abs(), (f64 - row_min).clamp_min(0)])
    )
    B, n, k = C.shape
    plan = T.to(out_dtype)
    f = f.to(out_dtype)
    if ipm.ragged:
        plan = plan.new_zeros(B * n, k).index_copy_(0, ipm.pos, plan[0]).view(B, n, k)
        f = f.new_zeros(B * n).index_copy_(0, ipm.pos, f[0]).view(B, n)
    message = (
        f"converged in {n_iter} interior-point iterations"
        if converged
        else f"max_iter={max_iter} reached before a relative duality gap of {tol:g}"
    )
    n_refused = int(n_bad.sum())
    if n_refused:
        message += f"; {n_refused} non-finite steps refused (kept the last finite iterate)"
    return OTResult(
        plan=plan,
        log_u=None,
        log_v=None,
        n_iter=n_iter,
        err_a=err_a.to(out_dtype),
        err_b=err_b.to(out_dtype),
        converged=converged,
        message=message,
        f=f,
        g=g.to(out_dtype),
        gap=gap.to(out_dtype),
    )


def l2_semirelaxed_objective(plan: Tensor, C: Tensor, b: Tensor, lam: float) -> Tensor:
    r"""Objective :math:`\langle T,C\rangle + \lambda\|T^\top1-b\|^2` of given plans.

    Args:
        plan: (B, n, k) plans.
        C: (B, n, k) costs.
        b: (B, k) prototype masses.
        lam: penalty weight.

    Returns:
        (B,) objective values (the row constraint ``T 1 = a`` is not checked here).

    >>> l2_semirelaxed_objective(torch.ones(1, 1, 2), torch.ones(1, 1, 2), torch.ones(1, 2), 1.0)
    tensor([2.])
    """
    return (plan * C).sum((-2, -1)) + lam * (plan.sum(-2) - b).square().sum(-1)
