"""Entropic UOT and semi-relaxed UOT against POT, optimality certificates and padding."""

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from protorec.ot import uot
from protorec.ot.uot import solve_semirelaxed_uot, solve_uot, uot_objective

INF = math.inf
F64 = torch.float64


def pot_plan(C, a, b, eps, tau_a, tau_b, reg_type):
    """POT's plan for one problem, run to a tight tolerance (the reference)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns that reg_type="entropy" overrides c
        plan = ot.unbalanced.sinkhorn_unbalanced(
            a.numpy(),
            b.numpy(),
            C.numpy(),
            eps,
            (tau_a, tau_b),
            reg_type=reg_type,
            method="sinkhorn_stabilized",
            numItermax=200_000,
            stopThr=1e-14,
        )
    return torch.from_numpy(plan)


def dual_objective(res, C, a, b, eps, tau_a, tau_b, reg_type):
    """The UOT dual at the solver's potentials f, g: equals the primal at the optimum."""
    value = torch.zeros(C.shape[0], dtype=C.dtype)
    for f, mass, tau in ((res.f, a, tau_a), (res.g, b, tau_b)):
        f = torch.where(mass > 0, f, 0)
        if math.isinf(tau):
            value += (mass * f).sum(-1)
        else:
            value -= tau * (mass * (torch.exp(-f / tau) - 1)).sum(-1)
    expo = res.f.unsqueeze(-1) + res.g.unsqueeze(-2) - C
    if reg_type == "kl":
        ref = a.unsqueeze(-1) * b.unsqueeze(-2)
        value -= eps * (ref * (torch.exp(expo / eps) - 1)).nan_to_num(0.0).sum((-2, -1))
    else:
        value -= eps * torch.exp(expo / eps).sum((-2, -1))
    return value


def random_problem(B, n, k, seed, cost_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    C = cost_scale * torch.rand(B, n, k, generator=g, dtype=F64)
    a = torch.rand(B, n, generator=g, dtype=F64) + 0.1
    b = torch.rand(B, k, generator=g, dtype=F64) + 0.1
    return C, a, b


def assert_matches_pot(res, C, a, b, eps, tau_a, tau_b, reg_type, rel=1e-6):
    for i in range(C.shape[0]):
        ref = pot_plan(C[i], a[i], b[i], eps, tau_a, tau_b, reg_type)
        err = (res.plan[i] - ref).abs().max() / ref.abs().max()
        assert err <= rel, f"problem {i}: plan differs from POT's by {err:.2e} of its max"


MARGINALS = [(1.0, 1.0), (0.3, 2.0), (INF, 1.0), (1.0, INF)]


@pytest.mark.parametrize("reg_type", ["entropy", "kl"])
@pytest.mark.parametrize("tau_a, tau_b", MARGINALS)
@pytest.mark.parametrize("eps", [0.05, 1.0])
def test_matches_pot_float64(reg_type, tau_a, tau_b, eps):
    C, a, b = random_problem(3, 12, 5, seed=0)
    res = solve_uot(
        C, a, b, eps=eps, tau_a=tau_a, tau_b=tau_b, reg_type=reg_type, tol=1e-12, check_every=1
    )
    assert res.converged, res.message
    assert_matches_pot(res, C, a, b, eps, tau_a, tau_b, reg_type)


@pytest.mark.parametrize("tau_a, tau_b", MARGINALS)
def test_fewer_rows_than_columns_matches_pot(tau_a, tau_b):
    C, a, b = random_problem(2, 5, 12, seed=1)
    res = solve_uot(C, a, b, tau_a=tau_a, tau_b=tau_b, tol=1e-12, check_every=1)
    assert res.log_u.shape == (2, 5) and res.log_v.shape == (2, 12)
    assert_matches_pot(res, C, a, b, 0.05, tau_a, tau_b, "entropy")


def test_awkward_problems_match_pot():
    # Duplicate points (equal rows and equal columns of C).
    C, a, b = random_problem(1, 12, 5, seed=2)
    C[0, 3] = C[0, 7]
    C[0, :, 1] = C[0, :, 4]
    res = solve_uot(C, a, b, tol=1e-12, check_every=1)
    assert_matches_pot(res, C, a, b, 0.05, 1.0, 1.0, "entropy")
    # Equal cost rows get proportional plan rows, in the ratio (a_3 / a_7)^(tau / (tau + eps)).
    ratio = (a[0, 3] / a[0, 7]) ** (1.0 / 1.05)
    assert torch.allclose(res.plan[0, 3], res.plan[0, 7] * ratio, rtol=1e-9)
    # Costs spanning 1e-6 .. 1e3 (eps = 1 keeps POT's own Sinkhorn convergent).
    g = torch.Generator().manual_seed(3)
    C = 10.0 ** (torch.rand(2, 12, 5, generator=g, dtype=F64) * 9 - 6)
    for tau_a, tau_b in MARGINALS:
        res = solve_uot(
            C,
            a.expand(2, -1),
            b.expand(2, -1),
            eps=1.0,
            tau_a=tau_a,
            tau_b=tau_b,
            tol=1e-12,
            check_every=1,
        )
        assert_matches_pot(res, C, a.expand(2, -1), b.expand(2, -1), 1.0, tau_a, tau_b, "entropy")
    # eps = 1e-3 on costs where POT still converges (C / eps <= 50; on the first problem
    # of this seed its Sinkhorn needs more than 200k iterations, so it is left out).
    C, a, b = (x[1:] for x in random_problem(2, 12, 5, seed=4, cost_scale=0.05))
    for reg_type in ("entropy", "kl"):
        res = solve_uot(C, a, b, eps=1e-3, reg_type=reg_type, tol=1e-12, check_every=1)
        assert_matches_pot(res, C, a, b, 1e-3, 1.0, 1.0, reg_type)


@pytest.mark.parametrize("reg_type", ["entropy", "kl"])
@pytest.mark.parametrize("tau_a, tau_b", MARGINALS)
def test_primal_equals_dual_where_pot_fails(reg_type, tau_a, tau_b):
    # eps = 1e-3 on costs up to 1e3: POT's stabilised Sinkhorn diverges here; the solver's
    # plan is certified by a zero duality gap instead, and beats POT's objective.
    g = torch.Generator().manual_seed(5)
    C = 10.0 ** (torch.rand(2, 10, 6, generator=g, dtype=F64) * 4 - 1)
    a = torch.rand(2, 10, generator=g, dtype=F64) + 0.1
    b = torch.rand(2, 6, generator=g, dtype=F64) + 0.1
    C[0] = torch.rand(10, 6, generator=g, dtype=F64)  # and one problem on [0, 1)
    res = solve_uot(
        C, a, b, eps=1e-3, tau_a=tau_a, tau_b=tau_b, reg_type=reg_type, tol=1e-12, check_every=1
    )
    assert res.converged, res.message
    assert torch.isfinite(res.plan).all()
    primal = uot_objective(res.plan, C, a, b, 1e-3, tau_a, tau_b, reg_type)
    dual = dual_objective(res, C, a, b, 1e-3, tau_a, tau_b, reg_type)
    assert ((primal - dual).abs() <= 1e-9 * primal.abs().clamp_min(1)).all()
    for exact, mass, err in ((tau_a, a, res.plan.sum(-1)), (tau_b, b, res.plan.sum(-2))):
        if math.isinf(exact):
            assert torch.allclose(err, mass, rtol=0, atol=1e-11)


def test_padding_does_not_change_the_plan():
    C, a, b = random_problem(2, 12, 5, seed=6)
    padded_C = torch.cat([C, torch.rand(2, 4, 5, dtype=F64)], dim=1)
    padded_C = torch.cat([padded_C, torch.rand(2, 16, 3, dtype=F64)], dim=2)
    padded_a = torch.cat([a, torch.zeros(2, 4, dtype=F64)], dim=1)
    padded_b = torch.cat([b, torch.zeros(2, 3, dtype=F64)], dim=1)
    # Ragged: the second problem has only 9 rows and 4 columns.
    padded_a[1, 9:] = 0
    padded_b[1, 4:] = 0
    for reg_type in ("entropy", "kl"):
        for tau_a, tau_b in MARGINALS:
            res = solve_uot(
                padded_C,
                padded_a,
                padded_b,
                tau_a=tau_a,
                tau_b=tau_b,
                reg_type=reg_type,
                tol=1e-12,
                check_every=1,
            )
            assert res.plan[0, 12:].abs().max() == 0 and res.plan[0, :, 5:].abs().max() == 0
            assert res.plan[1, 9:].abs().max() == 0 and res.plan[1, :, 4:].abs().max() == 0
            alone = solve_uot(
                C[:1],
                a[:1],
                b[:1],
                tau_a=tau_a,
                tau_b=tau_b,
                reg_type=reg_type,
                tol=1e-12,
                check_every=1,
            )
            assert torch.allclose(res.plan[0, :12, :5], alone.plan[0], rtol=1e-9, atol=1e-15)
            ragged = padded_C[1:, :9, :4], padded_a[1:, :9], padded_b[1:, :4]
            alone = solve_uot(
                *ragged, tau_a=tau_a, tau_b=tau_b, reg_type=reg_type, tol=1e-12, check_every=1
            )
            assert torch.allclose(res.plan[1, :9, :4], alone.plan[0], rtol=1e-9, atol=1e-15)
            assert_matches_pot(alone, *ragged, 0.05, tau_a, tau_b, reg_type)


@pytest.mark.parametrize("tau_a, tau_b", MARGINALS)
def test_float32_agrees_with_float64(tau_a, tau_b):
    C, a, b = random_problem(4, 64, 16, seed=7)
    ref = solve_uot(C, a, b, tau_a=tau_a, tau_b=tau_b, tol=1e-12)
    res = solve_uot(C.float(), a.float(), b.float(), tau_a=tau_a, tau_b=tau_b, tol=1e-5)
    assert res.plan.dtype == torch.float32 and res.converged, res.message
    assert (res.plan.double() - ref.plan).abs().max() <= 2e-5 * ref.plan.max()


def test_warm_start_converges_faster_to_the_same_plan():
    C, a, b = random_problem(4, 40, 8, seed=8)
    cold = solve_uot(C, a, b, tol=1e-10, check_every=1)
    nudged = C + 1e-3 * torch.rand_like(C)
    again = solve_uot(nudged, a, b, tol=1e-10, check_every=1)
    warm = solve_uot(nudged, a, b, tol=1e-10, check_every=1, warm_start=cold)
    assert warm.n_iter < again.n_iter
    assert torch.allclose(warm.plan, again.plan, rtol=1e-7, atol=1e-12)
    # A far-off warm start (drifting potentials need re-absorption) still converges.
    far = solve_uot(C, a, b, tol=1e-10, check_every=1, warm_start=(None, cold.log_v + 80))
    assert far.converged and torch.allclose(far.plan, cold.plan, rtol=1e-7, atol=1e-12)


def test_a_start_within_tol_forms_no_hessian(monkeypatch):
    # Warm started at the optimum, the solve stops before seeding BFGS: the Hessian and
    # its Cholesky (a third of a short solve) are not computed, and the plan is the same.
    C, a, b = random_problem(3, 30, 6, seed=15)
    ref = solve_uot(C, a, b, tol=1e-10, check_every=1)

    def no_hessian(self, pieces):
        raise AssertionError("Hessian formed for a start within tol")

    monkeypatch.setattr(uot._ReducedDual, "neg_hessian", no_hessian)
    again = solve_uot(C, a, b, tol=1e-8, check_every=1, warm_start=ref)
    assert again.converged and again.n_iter == 0, again.message
    assert torch.allclose(again.plan, ref.plan, rtol=1e-7, atol=1e-12)


def cosine_problem(B, n, k, seed, dtype=F64):
    """The benchmark's kind: cosine costs between random unit vectors, uniform masses."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(B, n, 32, generator=g, dtype=F64), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(B, k, 32, generator=g, dtype=F64), dim=-1)
    C = 1 - x @ p.transpose(-2, -1)
    a, b = torch.full((B, n), 1 / n, dtype=F64), torch.full((B, k), 1 / k, dtype=F64)
    return C.to(dtype), a.to(dtype), b.to(dtype)


@pytest.mark.parametrize("tau_a, tau_b", MARGINALS)
def test_cold_float32_sweeps_meet_tol_without_a_hessian(monkeypatch, tau_a, tau_b):
    # Where tol is within float32's reach, the cold start sweeps on while they contract fast
    # enough: on the benchmark's kind of problems they meet tol alone, so no Hessian is
    # formed, and the plan is float32's best (within 2e-6 of a float64 reference).
    C, a, b = cosine_problem(2, 512, 64, seed=24)
    ref = solve_uot(C, a, b, tau_a=tau_a, tau_b=tau_b, tol=1e-12, check_every=1).plan

    def no_hessian(self, pieces):
        raise AssertionError("Hessian formed although the sweeps met tol")

    monkeypatch.setattr(uot._ReducedDual, "neg_hessian", no_hessian)
    res = solve_uot(
        C.float(), a.float(), b.float(), tau_a=tau_a, tau_b=tau_b, tol=1e-6, check_every=1
    )
    assert res.converged and res.n_iter == 0, res.message
    sweeps = int(res.message.split("after ")[1].split()[0])
    assert uot._SWEEPS[torch.float32] < sweeps < uot._MAX_SWEEPS, res.message
    err = (res.plan.double() - ref).abs().amax((-2, -1)) / ref.amax((-2, -1))
    assert (err <= 2e-6).all(), err


def test_cold_sweeps_stop_where_they_contract_slowly():
    # At eps = 0.01 the sweeps barely contract: the start stops at its minimum instead of
    # sweeping on, and quasi-Newton converges from there. At eps = 0.3 plain sweeps converge
    # so fast that over-relaxing by 1.6 would overshoot (11 sweeps): it adapts to ~1, and
    # the minimum alone meets tol.
    least = f"after {uot._SWEEPS[torch.float32]} Sinkhorn sweeps"
    C, a, b = cosine_problem(2, 64, 16, seed=22, dtype=torch.float32)
    slow = solve_uot(C, a, b, eps=0.01, tol=1e-5, check_every=1)
    assert slow.converged and slow.n_iter > 0 and least in slow.message, slow.message
    C, a, b = (x.float() for x in random_problem(2, 64, 16, seed=1))
    fast = solve_uot(C, a, b, eps=0.3, tol=1e-5, check_every=1)
    assert fast.converged and fast.n_iter == 0 and least in fast.message, fast.message


@pytest.mark.parametrize("kind", ["cosine", "uniform"])
@pytest.mark.parametrize("tau_a, tau_b", MARGINALS)
def test_cold_start_sweeps_save_iterations_not_accuracy(monkeypatch, tau_a, tau_b, kind):
    # The cold start's mass-corrected Sinkhorn sweeps move the point where the exact
    # Hessian seeds BFGS near the optimum: fewer quasi-Newton iterations than from one
    # sweep, and the same plan (both within 1e-6 of a 1e-12 reference), on the
    # benchmark's kind of problems (cosine costs, uniform masses) and on random ones.
    if kind == "cosine":
        g = torch.Generator().manual_seed(13)
        x = torch.nn.functional.normalize(torch.randn(4, 128, 16, generator=g, dtype=F64), dim=-1)
        p = torch.nn.functional.normalize(torch.randn(4, 32, 16, generator=g, dtype=F64), dim=-1)
        C = 1 - x @ p.transpose(-2, -1)
        a, b = torch.full((4, 128), 1 / 128, dtype=F64), torch.full((4, 32), 1 / 32, dtype=F64)
    else:
        C, a, b = random_problem(4, 128, 32, seed=14)
    ref = solve_uot(C, a, b, tau_a=tau_a, tau_b=tau_b, tol=1e-12, check_every=1).plan
    swept = solve_uot(C, a, b, tau_a=tau_a, tau_b=tau_b, tol=1e-9, check_every=1)
    monkeypatch.setitem(uot._SWEEPS, F64, 1)
    once = solve_uot(C, a, b, tau_a=tau_a, tau_b=tau_b, tol=1e-9, check_every=1)
    assert swept.converged and once.converged
    assert swept.n_iter < once.n_iter, (swept.n_iter, once.n_iter)
    for res in (swept, once):
        err = (res.plan - ref).abs().amax((-2, -1)) / ref.amax((-2, -1))
        assert (err <= 1e-6).all(), err


def test_semirelaxed_wrapper_and_exact_marginal():
    C, a, b = random_problem(2, 12, 5, seed=9)
    res = solve_semirelaxed_uot(C, a, b, tau=0.5, exact="b", tol=1e-12)
    ref = solve_uot(C, a, b, tau_a=0.5, tau_b=INF, tol=1e-12)
    assert torch.equal(res.plan, ref.plan)
    assert torch.allclose(res.plan.sum(-2), b, rtol=0, atol=1e-12)
    assert (res.err_b <= 1e-12).all()


@pytest.mark.parametrize("shape", [(6, 3), (3, 6)])  # as given and transposed
def test_plan_is_a_constant_and_an_ordinary_tensor(shape):
    C, a, b = random_problem(1, *shape, seed=10)
    C.requires_grad_(True)
    res = solve_uot(C, a, b)
    assert not res.plan.requires_grad and res.plan.grad_fn is None
    # solved under inference mode, returned as ordinary tensors: usable in a loss's graph
    for name in ("plan", "log_u", "log_v", "err_a", "err_b", "f", "g"):
        assert not getattr(res, name).is_inference(), name
    (res.plan * C).sum().backward()
    torch.testing.assert_close(C.grad, res.plan)


def test_clear_errors():
    C, a, b = random_problem(1, 6, 3, seed=11)
    with pytest.raises(ValueError, match="a must be"):
        solve_uot(C, a[:, :5], b)
    with pytest.raises(ValueError, match="balanced"):
        solve_uot(C, a, b, tau_a=INF, tau_b=INF)
    with pytest.raises(ValueError, match="a must be finite and >= 0"):
        solve_uot(C, -a, b)
    with pytest.raises(ValueError, match="C must be finite"):
        solve_uot(C.index_put((torch.tensor([0]),), torch.tensor(math.nan, dtype=F64)), a, b)
    with pytest.raises(ValueError, match="infeasible"):
        solve_uot(C, a, torch.zeros_like(b), tau_a=INF)
    with pytest.raises(ValueError, match="reg_type"):
        solve_uot(C, a, b, reg_type="l2")


def test_max_iter_is_reported():
    C, a, b = random_problem(2, 30, 8, seed=12)
    res = solve_uot(C, a, b, eps=0.01, tol=1e-14, max_iter=2, check_every=1)
    assert not res.converged and res.n_iter == 2 and "max_iter" in res.message
    assert np.isfinite(res.plan.numpy()).all()
