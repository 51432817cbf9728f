"""The batched quasi-Newton helpers: inverse, BFGS secant equation, step acceptance."""

import torch

from protorec.ot.damped_newton import accept_step, bfgs_update, inverse_pd

F64 = torch.float64


def test_inverse_pd_inverts_and_falls_back_to_jacobi():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(3, 6, 6, generator=g, dtype=F64)
    spd = m @ m.transpose(-2, -1) + torch.eye(6, dtype=F64)
    assert torch.allclose(
        inverse_pd(spd) @ spd, torch.eye(6, dtype=F64).expand(3, 6, 6), atol=1e-10
    )
    broken = spd.clone()
    broken[1] = -torch.eye(6, dtype=F64) * 2  # not positive definite: Cholesky fails
    inv = inverse_pd(broken)
    assert torch.allclose(inv[1], torch.eye(6, dtype=F64) / 2)
    assert torch.allclose(inv[0] @ spd[0], torch.eye(6, dtype=F64), atol=1e-10)


def test_bfgs_update_satisfies_the_secant_equation_and_the_next_direction():
    g = torch.Generator().manual_seed(1)
    B, k = 4, 5
    m = torch.randn(B, k, k, generator=g, dtype=F64)
    hinv = m @ m.transpose(-2, -1) + torch.eye(k, dtype=F64)
    grad = torch.randn(B, k, generator=g, dtype=F64)
    d = (hinv @ grad.unsqueeze(-1)).squeeze(-1)
    s = 0.5 * d
    curvature = torch.randn(B, k, k, generator=g, dtype=F64)
    new_grad = grad - (
        (curvature @ curvature.transpose(-2, -1) + torch.eye(k, dtype=F64)) @ s.unsqueeze(-1)
    ).squeeze(-1)  # y = grad - new_grad, s . y > 0
    accepted = torch.tensor([True, True, False, True])
    h_new_grad = (hinv @ new_grad.unsqueeze(-1)).squeeze(-1)
    new_hinv, new_d = bfgs_update(hinv, d, s, grad, new_grad, h_new_grad, accepted)
    y = grad - new_grad
    secant = (new_hinv @ y.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(secant[accepted], s[accepted], atol=1e-10)
    assert torch.equal(new_hinv[2], hinv[2]) and torch.equal(new_d[2], d[2])
    expected = (new_hinv @ new_grad.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(new_d[accepted], expected[accepted], atol=1e-10)
    assert torch.allclose(new_hinv, new_hinv.transpose(-2, -1), atol=1e-12)


def test_accept_step_on_a_concave_parabola():
    # phi(t) = t - t^2 / 2 along the direction: slope 1 at 0, maximum at t = 1.
    def phi(t):
        return t - t * t / 2

    t = torch.tensor([0.5, 1.0, 1.9, 2.5, 1.0], dtype=F64)
    value = torch.zeros(5, dtype=F64)
    trial = phi(t)
    trial[4] = torch.nan
    ok = accept_step(value, trial, torch.ones(5, dtype=F64), 1 - t, t)
    assert ok.tolist() == [True, True, True, False, False]
    # Below round-off the increase is invisible, but a nonnegative slope still accepts.
    one = torch.ones(1, dtype=F64)
    ok = accept_step(one, one, 1e-30 * one, 0 * one, one)
    assert ok.tolist() == [True]
