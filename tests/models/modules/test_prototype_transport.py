"""The ragged transport step: grouping by scenario, padding that changes nothing, the solvers."""

import math

import torch

from protorec.models.config import OTConfig
from protorec.models.modules.prototype_transport import ScenarioLayout, solve_transport


def test_layout_places_every_row_once_in_its_scenario():
    scenario = torch.randint(4, (50,))
    layout = ScenarioLayout.from_scenario(scenario, 5)
    assert layout.counts.tolist() == torch.bincount(scenario, minlength=5).tolist()
    rows = layout.index[layout.mask]
    assert sorted(rows.tolist()) == list(range(50))
    for s in range(5):
        members = layout.index[s][layout.mask[s]]
        assert (scenario[members] == s).all()
        assert members.tolist() == sorted(members.tolist())  # batch order kept
    x = torch.randn(50, 3)
    padded = layout.pad(x)
    torch.testing.assert_close(padded[layout.mask], x[layout.index[layout.mask]])
    assert (padded[~layout.mask] == 0).all()


def _problem(n=30, k=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, n, k, generator=g, dtype=dtype) * 2


def test_padding_changes_no_plan_entry_of_the_real_rows_and_prototypes():
    config = OTConfig(tol=1e-9, max_iter=500)
    cost = _problem()
    rows, cols = torch.ones(1, 30, dtype=torch.bool), torch.ones(1, 6, dtype=torch.bool)
    plain = solve_transport(cost, rows, cols, config).plan
    padded_cost = torch.nn.functional.pad(cost, (0, 3, 0, 10), value=0.3)
    padded_rows = torch.nn.functional.pad(rows, (0, 10))
    padded_cols = torch.nn.functional.pad(cols, (0, 3))
    padded = solve_transport(padded_cost, padded_rows, padded_cols, config).plan
    torch.testing.assert_close(padded[:, :30, :6], plain, atol=1e-10, rtol=1e-7)
    assert (padded[:, 30:] == 0).all() and (padded[:, :, 6:] == 0).all()


def test_balanced_plans_meet_both_marginals_and_uot_plans_relax_them():
    cost = _problem().float()
    rows = torch.ones(1, 30, dtype=torch.bool)
    cols = torch.ones(1, 6, dtype=torch.bool)
    balanced = solve_transport(cost, rows, cols, OTConfig(balanced=True, tol=1e-7, max_iter=5000))
    torch.testing.assert_close(
        balanced.plan.sum(-1), torch.full((1, 30), 1 / 30), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(balanced.plan.sum(-2), torch.full((1, 6), 1 / 6), atol=1e-6, rtol=0)
    assert balanced.converged
    uot = solve_transport(cost, rows, cols, OTConfig())
    assert (uot.plan.sum(-2) - 1 / 6).abs().max() > 1e-3  # mass may vary per prototype
    assert uot.converged


def test_balanced_ot_leaves_problems_without_rows_at_zero():
    cost = torch.rand(3, 8, 4)
    rows = torch.ones(3, 8, dtype=torch.bool)
    rows[1] = False
    rows[2, 5:] = False
    cols = torch.ones(3, 4, dtype=torch.bool)
    res = solve_transport(cost, rows, cols, OTConfig(balanced=True, tol=1e-6, max_iter=2000))
    assert (res.plan[1] == 0).all() and (res.plan[2, 5:] == 0).all()
    assert math.isclose(float(res.plan[2].sum()), 1.0, rel_tol=1e-5)
    assert torch.isfinite(res.plan).all()
