r"""Batched entropic unbalanced OT (DistProto's UOT alignment), semi-relaxed as a special case.

Problem, for each of B problems with costs C (n, k), masses a (n,) and b (k,):

.. math::

    \min_{T \ge 0} \langle T, C\rangle + \varepsilon\, \Omega(T)
        + \tau_a \mathrm{KL}(T 1 \,|\, a) + \tau_b \mathrm{KL}(T^\top 1 \,|\, b),
    \qquad \mathrm{KL}(p|q) = \textstyle\sum p \log(p/q) - p + q,

with :math:`\Omega(T) = H(T) = \sum T(\log T - 1)` ("entropy", DistProto's form and the
default) or :math:`\Omega(T) = \mathrm{KL}(T \,|\, a b^\top)` ("kl", POT's default since
0.9.5); the two give different plans. :math:`\tau = \infty` makes that marginal exact
(semi-relaxed UOT; both infinite, balanced OT, is not this solver's job).

Algorithm: the optimal plan is :math:`T = \exp(u_i + \log K_{ij} + v_j)`,
:math:`\log K = -C/\varepsilon` (plus :math:`\log a_i + \log b_j` for "kl"). For fixed v
the row potential has the closed form of a Sinkhorn row step,
:math:`u_i = \varphi_a(\log a_i - \mathrm{LSE}_j(\log K_{ij} + v_j))` with
:math:`\varphi_a = \tau_a / (\tau_a + \varepsilon)`, so the dual reduces to a smooth concave
function of the k column potentials alone (the reduced dual of Sinkhorn-Newton, Brauer et
al. 2017, "A Sinkhorn-Newton method for entropic optimal transport"). Its gradient is the
column-marginal residual :math:`\beta - c`, its Hessian
:math:`-(\mathrm{diag}(c + \tfrac{\varepsilon}{\tau_b}\beta) - \varphi_a T^\top P)` (column
masses c, target column masses :math:`\beta = b\, e^{-\varepsilon v / \tau_b}`, row-softmax
P). It is maximised by BFGS seeded with the exact Hessian (one O(n k^2) product and one
k x k Cholesky per call) under a batched line search without host synchronisation. A cold
start first runs a few over-relaxed Sinkhorn sweeps from v = 0 (in float32: a start
needs no precision), so that the Hessian seeds BFGS near the optimum.

Evaluations run in the scaling domain on a kernel stabilised by absorption (Schmitzer
2019, "Stabilized sparse scaling algorithms for entropy regularized transport problems"):
``K = exp(log K + v_abs - m)`` with row maxima m factored out, so an iteration costs two
batched matrix-vector products instead of an exp pass. Potentials are re-absorbed when
they drift more than ``_DRIFT`` from the absorbed ones (the cap also bounds each step,
like a trust region), so nothing overflows or turns NaN with eps down to 1e-3 and costs
up to 1e3 (see the tests). A problem with fewer rows than columns is solved transposed,
so the quasi-Newton always runs on the smaller side.

Why not Sinkhorn: with tau = 1 and eps = 0.05, Sinkhorn contracts by at most
``(tau / (tau + eps))**2 ~ 0.91`` per sweep: POT needs ~130 sweeps (two passes over C
each) for its default stopThr. From a cold start this solver runs 5 or 6 mass-corrected,
over-relaxed float32 sweeps, and more while they would meet tol within a few: on the
benchmark at tol 1e-6 in float32, 11-12 sweeps and no quasi-Newton iteration; in float64,
6 sweeps, the Hessian seed and 1 iteration (two passes each); plus one exp pass.
Measurements in docs/ot.md. On CPU, past the passes over the kernel, the time is the
count of small tensor operations (3 to 5 us each): the loop keeps them few.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from protorec.ot.damped_newton import accept_step, bfgs_update, inverse_pd
from protorec.ot.result import OTResult, check_problem

RegType = Literal["entropy", "kl"]

#: A problem whose step length fell below this has stalled (no progress is possible).
_MIN_STEP = 1e-10


#: Largest drift |v - v_abs| of the live column scalings exp(v - v_abs) from the potentials
#: last absorbed into the kernel: keeps them, and the kernel's row sums, far inside the
#: dtype's exponent range. Larger caps were measured to let BFGS take wild steps on
#: eps = 1e-3 problems, so the cap doubles as a trust region.
_DRIFT = {torch.float64: 50.0, torch.float32: 30.0}


_LOG2E = 1 / math.log(2)

#: Mass-corrected Sinkhorn sweeps of the cold start, at least, by dtype (see
#: _ReducedDual.start). They run in float32 either way, while a quasi-Newton iteration
#: costs ~1.5x more in float64: there one more sweep pays for the iteration it saves (2 -> 1
#: on the benchmark).
_SWEEPS = {torch.float64: 6, torch.float32: 5}

#: Over-relaxation of the sweeps after the second (Thibault et al. 2021, "Overrelaxed
#: Sinkhorn-Knopp algorithm for regularized optimal transport"): each moves the potentials
#: omega times the Sinkhorn step, omega = 1 + 1.1 eta (at most 1.6), eta the residual's
#: contraction ratio over the second plain sweep. Measured on 18 kinds of problems (eps
#: 0.01 to 1, cosine and uniform costs), the best fixed omega of 1, 1.2, ..., 1.8 after
#: 10 sweeps follows 1 + eta: 1.5-1.6 where eta is 0.53-0.57 (the benchmark, where 5
#: sweeps bring the residual from 2.5e-2 plain to 1.3e-3 at 1.6), 1.4 at 0.40, 1.0-1.2
#: where eta <= 0.05 (eps >= 0.2: there 1.6 costs 10-100x in residual); 1.8 oscillates,
#: and over-relaxing from v = 0 costs iterations.
_OVERRELAX = 1.6
_OVERRELAX_GAIN = 1.1

#: Past the minimum, the start sweeps on while the residual's last contraction ratio
#: predicts tol within this many more sweeps: the Hessian seed and one iteration cost about
#: as much as 7-8 sweeps on the benchmark. Only where tol is at least float32's resolution
#: (the sweeps' precision), and never past _MAX_SWEEPS.
_SWEEP_BUDGET = 8
_MAX_SWEEPS = 20
_SWEEP_TOL = 32 * torch.finfo(torch.float32).eps


def _symv(sym: Tensor, x: Tensor) -> Tensor:
    """``sym @ x`` for a batch of symmetric matrices (B, k, k) and vectors (B, k).

    Formed as ``x^T sym``: in MKL a row vector times a matrix is several times faster than
    the matrix times a column vector.
    """
    return torch.bmm(x.unsqueeze(-2), sym).squeeze(-2)


def _gram(x: Tensor) -> Tensor:
    """``x^T x`` for a batch (B, n, k), skipping one off-diagonal block of the product.

    The upper half of the block rows and the lower-right block, the missing block being
    the transpose of one computed: 3/4 of the arithmetic (13% faster with MKL at k = 64).
    """
    h = x.shape[-1] // 2
    if h < 16:  # small blocks: one product is faster
        return torch.bmm(x.mT, x)
    top = torch.bmm(x[..., :h].mT, x)
    low = torch.bmm(x[..., h:].mT, x[..., h:])
    return torch.cat([top, torch.cat([top[..., h:].mT, low], dim=-1)], dim=-2)


class _Pieces(NamedTuple):
    """The plan T = q K w of the reduced dual at column potentials v, and its marginals."""

    w: Tensor  # (B, k) column factors exp(v - v_abs)
    s: Tensor  # (B, n) row sums of K w
    log_q: Tensor  # (B, n) log row factors: the plan's row potential plus the kernel shift
    q: Tensor  # (B, n) row factors
    c: Tensor  # (B, k) column masses of the plan
    beta: Tensor  # (B, k) column masses the potentials ask for


def _phi(tau: float, eps: float) -> float:
    """Sinkhorn's exponent tau / (tau + eps): 1 for an exact marginal (tau = inf)."""
    return 1.0 if math.isinf(tau) else tau / (tau + eps)


class _ReducedDual:
    """The UOT dual reduced to the k column potentials, for a batch (k <= n orientation).

    The plan is ``T = exp(u_i + r_i - C_ij / eps + c_j + v_j)`` with reference terms
    ``r = log a, c = log b`` for "kl" and ``r = c = 0`` for "entropy". The solver holds
    the stabilised kernel ``K = exp(-C / eps + c + v_abs - m)`` (one (B, n, k) buffer, row
    maxima m factored out), so that an evaluation at v costs two batched matrix-vector
    products instead of an exp pass; :meth:`absorb` rebuilds it when v drifts.

    An evaluation's state is one packed (B, 3 + 2k + n) tensor (see :meth:`evaluate`), so
    that one ``torch.where`` keeps or takes a trial: on CPU the solver's time is mostly the
    count of small tensor operations, not the two passes over the kernel.
    """

    def __init__(
        self,
        C: Tensor,
        a: Tensor,
        b: Tensor,
        eps: float,
        tau_a: float,
        tau_b: float,
        reg_type: RegType,
    ) -> None:
        self.C, self.eps, self.tau_a, self.tau_b = C, eps, tau_a, tau_b
        self.phi_a, self.phi_b = _phi(tau_a, eps), _phi(tau_b, eps)
        self.sweeps = 0  # of the cold start, if any
        self.drift = _DRIFT[C.dtype]
        self.tiny = torch.finfo(C.dtype).tiny
        # A row (column) takes part only if it has mass and its problem has some column
        # (row) with mass. Padding of ragged batches drops out: zero-mass rows get a zero
        # row factor q, zero-mass columns a -inf column shift, so they neither receive
        # mass nor change the other rows' plans.
        self.row_ok = (a > 0) & (b > 0).any(-1, keepdim=True)
        self.col_ok = (b > 0) & (a > 0).any(-1, keepdim=True)
        self.a = torch.where(self.row_ok, a, 0)
        self.b = torch.where(self.col_ok, b, 0)
        log_a, log_b = torch.log(self.a), torch.log(self.b)
        neg_inf = torch.full_like(log_b, -math.inf)
        self.kl = reg_type == "kl"
        self.row_ref = log_a  # used for "kl" only
        self.col_shift = log_b if self.kl else torch.where(self.col_ok, 0, neg_inf)
        # log a - r and log b - c: the marginals seen through the reference measure.
        self.log_a_eff = torch.where(self.row_ok, 0, -math.inf) if self.kl else log_a
        self.log_b_eff = torch.where(self.col_ok, 0, neg_inf) if self.kl else log_b
        self.kernel = torch.empty_like(C, memory_format=torch.contiguous_format)
        self.absorb(torch.zeros_like(self.b))

    def absorb(self, v: Tensor) -> None:
        """Rebuild the kernel around potentials v: the one exp pass over (B, n, k).

        In base 2 (exponents scaled by log2(e), folded into the add): torch's exp2 is 2.3x
        (float64) to 3.3x (float32) faster than its exp on CPU, for the same rounding.
        """
        torch.add(
            ((v + self.col_shift) * _LOG2E).unsqueeze(-2),
            self.C,
            alpha=-_LOG2E / self.eps,
            out=self.kernel,
        )
        m2 = self.kernel.amax(-1, keepdim=True)
        m2 = torch.where(torch.isfinite(m2), m2, torch.zeros_like(m2))
        self.kernel.sub_(m2).exp2_()
        self._kernel32: Tensor | None = None  # float32 copy, made on demand
        self.m = m2.squeeze(-1) * math.log(2)  # back to natural units
        self.a_m = torch.linalg.vecdot(self.a, self.m)
        self.v_abs = v.clone()
        # log q = u + m + r = phi_a (log a - r - m - log s) + m + r = row_const - phi_a log s,
        # with everything but log s folded here, once per absorption.
        row_const = self.phi_a * self.log_a_eff
        if self.phi_a != 1.0:
            row_const = row_const + (1 - self.phi_a) * self.m
        self.row_const = row_const + self.row_ref if self.kl else row_const

    def kernel32(self) -> Tensor:
        """The kernel in float32 (itself if float32), for what only needs an estimate."""
        if self._kernel32 is None:
            self._kernel32 = self.kernel.float()
        return self._kernel32

    def threshold(self, tol: float) -> tuple[float, Tensor]:
        """The tolerance raised to the dtype's resolution, and each problem's residual bound.

        Residuals are measured against the largest column mass; below the dtype's
        resolution (float32: ~4e-6) a tolerance cannot be met and is raised to it.
        """
        tol_used = max(tol, 32 * torch.finfo(self.b.dtype).eps)
        return tol_used, tol_used * self.b.amax(-1, keepdim=True)

    def start(self, tol: float) -> Tensor:
        """Column potentials after mass-corrected, over-relaxed Sinkhorn sweeps from v = 0.

        The cold start. A sweep first moves all column potentials by the common shift
        that balances the plan's total mass with the mass the potentials ask for (the
        reduced dual's exact maximum along the all-ones direction, in closed form: along
        it the rows' optimum scales exactly, s by e^d and q by e^(-phi_a d), so the shift
        costs no product), then takes the Sinkhorn column step from there. Plain Sinkhorn
        (and any diagonal method) fixes that common mode slowly when both marginals are
        relaxed: its curvature is only eps/tau_b sum(beta) + (1 - phi_a) sum(c). Every
        sweep after the second is over-relaxed: the new potentials are
        ``v + shift + omega (step - v - shift)``, a linear extrapolation past the Sinkhorn
        step, by ``omega = 1 + 1.1 eta`` (at most 1.6) from the contraction ratio eta of
        the second sweep (see ``_OVERRELAX``).

        A sweep costs the two matrix-vector products of an evaluation but fewer small
        operations, and ``_SWEEPS`` of them bring the point where the exact Hessian seeds
        BFGS near the optimum: from 6 to 1 quasi-Newton iteration on the benchmark's
        problems, from 11-25 to 2-3 on the tests' random ones (see the tests). Past that
        minimum the sweeps go on while their residual (known from each sweep's products)
        shrinks fast enough to meet tol within ``_SWEEP_BUDGET`` more sweeps: then the
        solve needs no Hessian at all (11-12 sweeps on the benchmark at tol 1e-6 in
        float32, 5-13 on DistProto's training problems at tol 1e-4). That test reads one
        number per sweep (a host synchronisation on CUDA), and only where tol is at least
        float32's resolution.

        A start needs no precision: the sweeps run in float32 whatever the dtype, on the
        kernel copy the Hessian seed uses. Columns whose kernel entries all underflow get
        potentials clipped to the drift bound, from where the solver carries them on.
        The number of sweeps run is left in ``self.sweeps``.
        """
        # The problem's own drift bound even in float64 (50): exp(50) is far inside float32's
        # range, and the optimum may lie beyond float32's 30 (unequal total masses).
        kernel, tiny, drift = self.kernel32(), torch.finfo(torch.float32).tiny, self.drift
        kernel_t = kernel.mT
        # Vectors as (B, 1, len) rows throughout: the products need no reshaping.
        row_const = self.row_const.float().unsqueeze(-2)
        b, log_b_eff = self.b.float().unsqueeze(-2), self.log_b_eff.float().unsqueeze(-2)
        # Curvature exponents along all-ones: beta ~ e^(-alpha d), c ~ e^(gamma d).
        alpha = 0.0 if math.isinf(self.tau_b) else self.eps / self.tau_b
        gamma = 1 - self.phi_a  # alpha + gamma > 0: both marginals exact is refused
        tol_used, thresh = self.threshold(tol)
        unit = thresh.float().clamp_min_(tiny).unsqueeze(-1)  # residuals in units of tol
        adaptive = tol_used >= _SWEEP_TOL
        least = _SWEEPS[self.b.dtype]
        v = torch.zeros_like(b)
        res = prev = math.inf  # worst residual over the batch, this sweep's and the last
        omega = 1.0
        self.sweeps = 0
        while True:
            w = torch.exp(v.clamp_(-drift, drift))
            s = torch.bmm(w, kernel_t).add_(tiny)
            q = torch.add(row_const, s.log_(), alpha=-self.phi_a).exp_()
            col = torch.bmm(q, kernel).add_(tiny)
            c = w * col  # the plan's column masses
            beta = b * w.pow_(-alpha) if alpha else b
            if self.sweeps and (adaptive or self.sweeps <= 2):
                gap = torch.linalg.vector_norm((beta - c).div_(unit), math.inf)
                prev, res = res, float(gap)
                if self.sweeps == 2:
                    eta = res / prev if prev > 0 else 0.0
                    omega = 1 + min(_OVERRELAX_GAIN * eta, _OVERRELAX - 1) if eta >= 0 else 1.0
            shift = torch.log(beta.sum(-1, keepdim=True).div_(c.sum(-1, keepdim=True)))
            shift = shift.div_(alpha + gamma).nan_to_num_(0.0).clamp_(-drift, drift)
            # v + shift + omega (step - v - shift) with the Sinkhorn column step from
            # v + shift, step = phi_b (log b_eff - log col + phi_a shift): there K^T q is
            # col e^(-phi_a shift).
            step = torch.sub(log_b_eff, col.log_()).add_(shift, alpha=self.phi_a)
            if self.phi_b != 1:
                step = step.mul_(self.phi_b)
            v = v.add_(shift).lerp_(step, omega) if omega != 1 else step
            self.sweeps += 1
            if self.sweeps < least:
                continue
            if not adaptive:
                break
            ratio = res / prev if prev > 0 else 0.0
            # Stop where this sweep's update should have met tol (with a margin of 2), or
            # where meeting it would take more than the budget.
            if (
                not ratio < 1
                or res * ratio <= 0.5
                or self.sweeps >= _MAX_SWEEPS
                or math.log(2 * res) > -math.log(ratio) * _SWEEP_BUDGET
            ):
                break
        v = v.squeeze(-2).clamp_(-drift, drift)
        return torch.where(self.col_ok, v.to(self.b.dtype), 0)

    def pieces(self, v: Tensor) -> _Pieces:
        """The plan's factors at v (rows exactly optimal for v): two matrix-vector products."""
        w = torch.exp(v - self.v_abs)
        # s >= exp(-drift) on rows that take part: tiny only keeps padding rows finite.
        # (w^T K^T) rather than (K w): the same product, twice as fast in MKL for float32.
        s = torch.bmm(w.unsqueeze(-2), self.kernel.mT).squeeze(-2).add_(self.tiny)
        log_q = torch.add(self.row_const, torch.log(s), alpha=-self.phi_a)
        q = torch.exp(log_q)
        c = torch.bmm(q.unsqueeze(-2), self.kernel).squeeze(-2).mul_(w)
        beta = self.b
        if not math.isinf(self.tau_b):
            beta = beta * torch.exp(v * (-self.eps / self.tau_b))
        return _Pieces(w, s, log_q, q, c, beta)

    def evaluate(self, v: Tensor) -> tuple[Tensor, _Pieces]:
        """Reduced dual over eps (up to a constant), its gradient and more at v, packed.

        One (B, 3 + 2k + n) tensor: ``[value, max |grad|, max |v - v_abs|, grad, v, log q]``,
        so that one ``torch.where`` keeps or takes a trial (see :meth:`unpack`).
        """
        p = self.pieces(v)
        # The plan's mass q . s (up to the tiny added to s) is the sum of its column masses.
        if math.isinf(self.tau_a):  # sum a u = -sum a (m + log s) + const
            value = -torch.linalg.vecdot(self.a, torch.log(p.s)) - self.a_m - p.c.sum(-1)
        else:
            value = (-1 - self.tau_a / self.eps) * p.c.sum(-1)
        if math.isinf(self.tau_b):
            value = value + torch.linalg.vecdot(self.b, v)
        else:
            value = value - (self.tau_b / self.eps) * p.beta.sum(-1)
        grad = p.beta - p.c
        return torch.cat(
            [
                value.unsqueeze(-1),
                grad.abs().amax(-1, keepdim=True),
                (v - self.v_abs).abs().amax(-1, keepdim=True),
                grad,
                v,
                p.log_q,
            ],
            dim=-1,
        ), p

    def unpack(self, state: Tensor) -> tuple[Tensor, ...]:
        """(value, max |grad|, drift, grad, v, log q) views of a packed state."""
        k = self.b.shape[-1]
        return state.split([1, 1, 1, k, k, state.shape[-1] - 3 - 2 * k], dim=-1)

    def neg_hessian(self, p: _Pieces) -> Tensor:
        """Minus the Hessian: diag(c + eps/tau_b beta) - phi_a T^T P, T = plan, P = row softmax.

        The (k, k) product T^T P is formed in float32 whatever the dtype: it only seeds
        BFGS's curvature estimate, and float32 halves the one O(n k^2) product.
        """
        scaled = self.kernel32() * (p.q / p.s).sqrt().unsqueeze(-1).float()  # a copy
        tp = _gram(scaled).to(p.w.dtype)
        tp = tp * p.w.unsqueeze(-1) * p.w.unsqueeze(-2)
        diag = p.c if math.isinf(self.tau_b) else p.c + (self.eps / self.tau_b) * p.beta
        diag = torch.where(self.col_ok, diag, torch.ones_like(diag))
        return torch.diag_embed(diag) - self.phi_a * tp

    def seed(self, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """State at v, the inverse of its exact Hessian and the first direction."""
        cur, p = self.evaluate(v)
        hinv = inverse_pd(self.neg_hessian(p))
        return cur, hinv, _symv(hinv, self.unpack(cur)[3])

    def solve(self, v: Tensor, max_iter: int, tol: float, check_every: int) -> OTResult:
        """Quasi-Newton (BFGS from the exact Hessian) on v until the residual is below tol."""
        tol_used, thresh = self.threshold(tol)
        half_drift = self.drift / 2
        if (v - self.v_abs).abs().amax() > half_drift:
            self.absorb(v)
        cur, p = self.evaluate(v)
        # A start that already meets tol (~5% of DistProto's steps at its tol 1e-4) needs
        # no Hessian: the seed is a third of a short solve. This host sync is the loop's
        # first check.
        converged = bool((self.unpack(cur)[1] <= thresh).all())
        n_iter, stalled = 0, False
        rejected_nonfinite = torch.zeros((), dtype=torch.long, device=v.device)
        if not converged and max_iter:
            hinv = inverse_pd(self.neg_hessian(p))
            d = _symv(hinv, self.unpack(cur)[3])
            step = torch.ones_like(thresh)
        while not converged and n_iter < max_iter:
            value, gmax, dev, grad, v, _ = self.unpack(cur)
            done = gmax <= thresh
            # Cap the step so that the scalings stay within the drift bound until the next
            # check re-absorbs them; problems already within tol stop moving (in float32,
            # steps at the round-off level would otherwise wander until the next check).
            room = (self.drift - dev).clamp_min_(0)
            t = torch.minimum(step, room / d.abs().amax(-1, keepdim=True).clamp_min_(self.tiny))
            s = t.masked_fill_(done, 0) * d
            trial, _ = self.evaluate(v + s)
            trial_value, _, _, trial_grad, _, _ = self.unpack(trial)
            ok = accept_step(
                value,
                trial_value,
                torch.linalg.vecdot(grad, d).unsqueeze(-1),
                torch.linalg.vecdot(trial_grad, d).unsqueeze(-1),
                t,
            )
            rejected_nonfinite += (trial_value.abs() < math.inf).logical_not_().sum()
            new = torch.where(ok, trial, cur)
            step = torch.where(ok, 1.0, step * 0.5)
            n_iter += 1
            if n_iter % check_every == 0 or n_iter == max_iter:
                # The only host synchronisation: every check_every iterations, before the
                # BFGS update, which the last iteration does not need.
                _, gmax, dev, _, v, _ = self.unpack(new)
                done = gmax <= thresh
                flags = torch.stack(
                    [done.all(), (done | (step < _MIN_STEP)).all(), dev.amax() > half_drift]
                ).tolist()
                converged, stalled = flags[0], flags[1] and not flags[0]
                if converged or stalled or n_iter == max_iter:
                    cur = new
                    break
                if flags[2]:  # potentials drifted: re-absorb and restart BFGS there
                    self.absorb(v)
                    cur, hinv, d = self.seed(v)
                    step = torch.ones_like(step)
                    continue
            hinv, d = bfgs_update(
                hinv, d, s, grad, trial_grad, _symv(hinv, trial_grad), ok.squeeze(-1)
            )
            cur = new
        message = (
            f"converged in {n_iter} quasi-Newton iterations"
            if converged
            else f"line search stalled after {n_iter} iterations: stopped at last finite iterate"
            if stalled
            else f"max_iter={max_iter} reached before tol={tol:g}"
        )
        if self.sweeps:
            message += f" after {self.sweeps} Sinkhorn sweeps"
        if tol_used > tol:
            message += f" (tol {tol:g} raised to {tol_used:.1g}, the {v.dtype} resolution)"
        n_bad = int(rejected_nonfinite)
        if n_bad:
            message += f"; {n_bad} non-finite trial steps rejected (kept the last finite iterate)"
        _, _, _, _, v, log_q = self.unpack(cur)
        return self._result(v, log_q, n_iter, converged, message)

    def _result(
        self, v: Tensor, log_q: Tensor, n_iter: int, converged: bool, message: str
    ) -> OTResult:
        """Plan, potentials and residuals at the final iterate."""
        u = log_q - self.m - self.row_ref if self.kl else log_q - self.m
        u = torch.where(self.row_ok, u, -math.inf)
        w = torch.exp(v - self.v_abs)
        # The plan q K w, built in the kernel's buffer (its last use).
        plan = self.kernel.mul_(torch.exp(log_q).unsqueeze(-1)).mul_(w.unsqueeze(-2))
        # Residuals from the plan's own marginals (two reduction passes, no shortcuts).
        if math.isinf(self.tau_a):
            row_target = self.a
        else:
            row_target = self.a * torch.exp(u * (-self.eps / self.tau_a))
            row_target = torch.where(self.row_ok, row_target, 0)
        col_target = self.b
        if not math.isinf(self.tau_b):
            col_target = col_target * torch.exp(v * (-self.eps / self.tau_b))
        err_a = (plan.sum(-1) - row_target).abs().amax(-1)
        err_b = (plan.sum(-2) - col_target).abs().amax(-1)
        log_v = torch.where(self.col_ok, v, -math.inf)
        return OTResult(
            plan=plan,
            log_u=u,
            log_v=log_v,
            n_iter=n_iter,
            err_a=err_a,
            err_b=err_b,
            converged=converged,
            message=message,
            f=self.eps * u,
            g=self.eps * log_v,
            sweeps=self.sweeps,
        )


def _check(
    C: Tensor,
    a: Tensor,
    b: Tensor,
    eps: float,
    tau_a: float,
    tau_b: float,
    reg_type: str,
    max_iter: int,
    tol: float,
    check_every: int,
) -> None:
    """Raise ValueError naming the first argument that breaks the solver's contract."""
    check_problem(C, a, b, max_iter, tol, check_every)
    if not eps > 0 or math.isinf(eps):
        raise ValueError(f"eps must be finite and > 0, got {eps}")
    if not (tau_a > 0 and tau_b > 0):
        raise ValueError(
            f"tau_a and tau_b must be > 0 (math.inf for an exact marginal), got {tau_a}, {tau_b}"
        )
    if math.isinf(tau_a) and math.isinf(tau_b):
        raise ValueError("tau_a = tau_b = inf is balanced OT: relax at least one marginal")
    if reg_type not in ("entropy", "kl"):
        raise ValueError(f"reg_type must be 'entropy' or 'kl', got {reg_type!r}")
    for tau, mass, other, side in ((tau_a, a, b, "a"), (tau_b, b, a, "b")):
        if math.isinf(tau):
            infeasible = ((mass > 0).any(-1) & ~(other > 0).any(-1)).nonzero().flatten()
            if len(infeasible):
                raise ValueError(
                    f"exact marginal {side} is infeasible in problems "
                    f"{infeasible.tolist()}: mass on side {side} but none on "
                    f"the other side"
                )


def solve_uot(
    C: Tensor,
    a: Tensor,
    b: Tensor,
    eps: float = 0.05,
    tau_a: float = 1.0,
    tau_b: float = 1.0,
    reg_type: RegType = "entropy",
    max_iter: int = 1000,
    tol: float = 1e-6,
    check_every: int = 5,
    warm_start: OTResult | tuple[Tensor | None, Tensor | None] | None = None,
) -> OTResult:
    r"""Entropic unbalanced OT plans for a batch of problems (DistProto's UOT, eq. in 3.3).

    Solves, for each problem b of the batch, :math:`\min_{T\ge0} \langle T,C\rangle +
    \varepsilon\Omega(T) + \tau_a\mathrm{KL}(T1|a) + \tau_b\mathrm{KL}(T^\top1|b)` with
    :math:`\Omega = H(T) = \sum T(\log T - 1)` (``reg_type="entropy"``, the paper's) or
    :math:`\mathrm{KL}(T|ab^\top)` (``"kl"``, POT's default): the same plans as
    ``ot.unbalanced.sinkhorn_unbalanced(a, b, C, eps, (tau_a, tau_b), reg_type=...)``, by
    quasi-Newton on the dual reduced to the smaller side (see the module docstring).
    ``tau = math.inf`` makes that marginal exact (semi-relaxed UOT). The plan is a
    constant: computed under ``torch.no_grad()`` on detached inputs, it carries no
    gradient (the papers use it as a fixed target).

    Args:
        C: (B, n, k) costs, finite.
        a: (B, n) row masses >= 0; zero rows (padding of ragged batches) get a zero plan
            row and do not change the other rows' plans.
        b: (B, k) column masses >= 0; zero columns likewise.
        eps: entropic regularisation > 0.
        tau_a: KL weight of the row marginal, > 0, or ``math.inf`` (exact).
        tau_b: KL weight of the column marginal, > 0, or ``math.inf`` (exact).
        reg_type: "entropy" or "kl".
        max_iter: at most this many quasi-Newton iterations (two matrix-vector products
            over the (B, n, k) kernel each), after the cold start's Sinkhorn sweeps (5 to
            20, the message says how many).
        tol: stop when every problem's marginal residual ``max(err_a, err_b)`` is at most
            ``tol`` times its largest mass entry (of b, or of a when ``n < k``): a relative
            accuracy of the plan's marginals. float32 resolves about 4e-6; a smaller tol
            is raised to that (and the message says so).
        check_every: test convergence (a host sync on CUDA) every this many iterations;
            on CPU a test costs nothing, and 1 saves the iterations run past convergence.
            (The cold start's sweeps read their residual every sweep from the second on
            where tol is at least float32's resolution, and twice otherwise.)
        warm_start: a previous OTResult or ``(log_u, log_v)`` (either may be None; only the
            potentials of the smaller side are used, non-finite entries are ignored).

    Returns:
        OTResult with plan (B, n, k), log_u (B, n), log_v (B, k) (POT's ``logu``/``logv``),
        f = eps log_u and g = eps log_v, n_iter, err_a and err_b (B,) (see OTResult).

    Shapes:
        C (B, n, k), a (B, n), b (B, k) -> plan (B, n, k)

    >>> C = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    >>> half = torch.full((1, 2), 0.5, dtype=torch.float64)
    >>> res = solve_uot(C, half, half, eps=1.0, reg_type="kl", tol=1e-12)
    >>> res.plan.squeeze(0)  # POT: ot.sinkhorn_unbalanced(a, b, M, 1, 1)
    tensor([[0.3221, 0.1185],
            [0.1185, 0.3221]], dtype=torch.float64)
    >>> res.converged, res.plan.requires_grad
    (True, False)
    """
    _check(C, a, b, eps, tau_a, tau_b, reg_type, max_iter, tol, check_every)
    if isinstance(warm_start, OTResult):
        warm_start = (warm_start.log_u, warm_start.log_v)
    log_u0, log_v0 = warm_start if warm_start is not None else (None, None)
    transpose = C.shape[-2] < C.shape[-1]
    # Inference mode rather than no_grad: no version counters or view tracking on the
    # solver's small operations (its time on CPU is their count).
    with torch.inference_mode():
        C, a, b = C.detach(), a.detach(), b.detach()
        if transpose:  # Newton on the smaller side: rows become columns.
            C, a, b, tau_a, tau_b = C.transpose(-2, -1), b, a, tau_b, tau_a
            log_v0 = log_u0
        solver = _ReducedDual(C, a, b, eps, tau_a, tau_b, reg_type)
        if log_v0 is not None:
            if log_v0.shape != b.shape:
                raise ValueError(
                    f"warm start potentials of shape {tuple(log_v0.shape)} do "
                    f"not match the {'rows' if transpose else 'columns'} "
                    f"{tuple(b.shape)}"
                )
            v0 = log_v0.detach().to(C.dtype)
            v0 = torch.where(torch.isfinite(v0) & solver.col_ok, v0, 0)
        else:
            v0 = solver.start(tol)
        res = solver.solve(v0, max_iter, tol, check_every)
    res = res.cloned()  # ordinary tensors, out of inference mode
    if transpose:
        res = dataclasses.replace(
            res,
            plan=res.plan.transpose(-2, -1),
            log_u=res.log_v,
            log_v=res.log_u,
            err_a=res.err_b,
            err_b=res.err_a,
            f=res.g,
            g=res.f,
        )
    return res


def solve_semirelaxed_uot(
    C: Tensor,
    a: Tensor,
    b: Tensor,
    eps: float = 0.05,
    tau: float = 1.0,
    exact: Literal["a", "b"] = "a",
    reg_type: RegType = "entropy",
    max_iter: int = 1000,
    tol: float = 1e-6,
    check_every: int = 5,
    warm_start: OTResult | tuple[Tensor | None, Tensor | None] | None = None,
) -> OTResult:
    r"""Entropic semi-relaxed UOT: one marginal exact, the other KL-penalised with weight tau.

    :func:`solve_uot` with ``tau_a = inf`` (``exact="a"``: :math:`T1 = a`, the columns
    relaxed) or ``tau_b = inf`` (``exact="b"``); see it for arguments, shapes and result.

    >>> C = torch.rand(3, 8, 4, dtype=torch.float64)
    >>> a, b = torch.full((3, 8), 1 / 8, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64)
    >>> res = solve_semirelaxed_uot(C, a, b, tol=1e-10)
    >>> bool(torch.allclose(res.plan.sum(-1), a, atol=1e-9))
    True
    """
    if exact not in ("a", "b"):
        raise ValueError(f"exact must be 'a' or 'b', got {exact!r}")
    tau_a, tau_b = (math.inf, tau) if exact == "a" else (tau, math.inf)
    return solve_uot(
        C,
        a,
        b,
        eps=eps,
        tau_a=tau_a,
        tau_b=tau_b,
        reg_type=reg_type,
        max_iter=max_iter,
        tol=tol,
        check_every=check_every,
        warm_start=warm_start,
    )


def uot_objective(
    plan: Tensor,
    C: Tensor,
    a: Tensor,
    b: Tensor,
    eps: float,
    tau_a: float,
    tau_b: float,
    reg_type: RegType = "entropy",
) -> Tensor:
    r"""Primal objective of :func:`solve_uot` for given plans (exact marginals excluded).

    Args:
        plan: (B, n, k) nonnegative plans.
        C: (B, n, k) costs.
        a: (B, n) row masses.
        b: (B, k) column masses.
        eps: entropic regularisation.
        tau_a: row KL weight; ``math.inf`` adds no term (the plan is assumed to satisfy
            the exact marginal).
        tau_b: column KL weight, likewise.
        reg_type: "entropy" or "kl", as in :func:`solve_uot`.

    Returns:
        (B,) :math:`\langle T,C\rangle + \varepsilon\Omega(T) + \tau_a\mathrm{KL}(T1|a) +
        \tau_b\mathrm{KL}(T^\top1|b)`, with the constant-free ``H(T) = sum T(log T - 1)``.

    >>> C = torch.zeros(1, 1, 1)
    >>> uot_objective(torch.ones(1, 1, 1), C, torch.ones(1, 1), torch.ones(1, 1), 1.0, 1.0, 1.0)
    tensor([-1.])
    """

    def xlogy(x: Tensor, y: Tensor) -> Tensor:
        return torch.special.xlogy(x, torch.where(x > 0, y, 1))

    def kl(p: Tensor, q: Tensor) -> Tensor:
        return (xlogy(p, p / torch.where(q > 0, q, 1)) - p + q).sum(-1)

    value = (plan * C).sum((-2, -1))
    if reg_type == "entropy":
        value = value + eps * (xlogy(plan, plan) - plan).sum((-2, -1))
    else:
        ref = a.unsqueeze(-1) * b.unsqueeze(-2)
        value = value + eps * kl(plan.flatten(-2), ref.flatten(-2))
    if not math.isinf(tau_a):
        value = value + tau_a * kl(plan.sum(-1), a)
    if not math.isinf(tau_b):
        value = value + tau_b * kl(plan.sum(-2), b)
    return value
