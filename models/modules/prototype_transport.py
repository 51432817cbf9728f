"""DistProto's transport step: rows grouped by scenario, one batched OT call, ragged padding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ot.batch import solve_batch
from torch import Tensor

from protorec.models.config import OTConfig
from protorec.ot.result import OTResult
from protorec.ot.uot import solve_uot


@dataclass
class ScenarioLayout:
    """A batch's rows grouped by scenario and padded to the largest group.

    Args:
        index: (S, n) the batch row in each slot (0 on padding).
        mask: (S, n) True on real slots.
        counts: (S,) rows of each scenario.
        scenario: (B,) each batch row's scenario, and
        slot: (B,) its slot there: row b sits at ``index[scenario[b], slot[b]]``.
    """

    index: Tensor
    mask: Tensor
    counts: Tensor
    scenario: Tensor
    slot: Tensor

    @classmethod
    def from_scenario(cls, scenario: Tensor, num_scenarios: int) -> ScenarioLayout:
        """Group the rows of ``scenario`` (B,) int64 in [0, S), keeping batch order within.

        >>> layout = ScenarioLayout.from_scenario(torch.tensor([1, 0, 1, 1]), 3)
        >>> layout.index.tolist(), layout.counts.tolist()
        ([[1, 0, 0], [0, 2, 3], [0, 0, 0]], [1, 3, 0])
        >>> layout.mask.sum(-1).tolist()
        [1, 3, 0]
        """
        counts = torch.bincount(scenario, minlength=num_scenarios)
        order = torch.argsort(scenario, stable=True)
        start = torch.cumsum(counts, 0) - counts
        group = scenario[order]
        slot = torch.arange(scenario.shape[0], device=scenario.device) - start[group]
        width = max(int(counts.max()), 1)  # one host sync: the padded width
        index = torch.zeros(num_scenarios, width, dtype=torch.long, device=scenario.device)
        mask = torch.zeros(num_scenarios, width, dtype=torch.bool, device=scenario.device)
        index[group, slot] = order
        mask[group, slot] = True
        row_slot = torch.empty_like(slot)
        row_slot[order] = slot
        return cls(index=index, mask=mask, counts=counts, scenario=scenario, slot=row_slot)

    def pad(self, x: Tensor) -> Tensor:
        """Rows of ``x`` (B, d) in the layout, (S, n, d), zero on padding (no gradient there)."""
        return x[self.index] * self.mask.unsqueeze(-1).to(x.dtype)

    def unpad(self, x: Tensor) -> Tensor:
        """The batch's rows of ``x`` (..., S, n, d) laid out, back in batch order: (..., B, d).

        >>> layout = ScenarioLayout.from_scenario(torch.tensor([1, 0, 1]), 2)
        >>> layout.unpad(layout.pad(torch.tensor([[1.0], [2.0], [3.0]]))).flatten().tolist()
        [1.0, 2.0, 3.0]
        """
        return x[..., self.scenario, self.slot, :]


def uniform_masses(mask: Tensor) -> Tensor:
    """Mass 1 / (real entries) on each real entry of every problem, 0 on padding.

    >>> uniform_masses(torch.tensor([[True, True, False], [False, False, False]]))
    tensor([[0.5000, 0.5000, 0.0000],
            [0.0000, 0.0000, 0.0000]])
    """
    m = mask.to(torch.get_default_dtype())
    return m / m.sum(-1, keepdim=True).clamp_min(1)


def solve_transport(
    cost: Tensor,
    row_mask: Tensor,
    col_mask: Tensor,
    config: OTConfig,
) -> OTResult:
    """Plans of a batch of sample-to-prototype problems with uniform masses; one solver call.

    UOT (``protorec.ot.uot.solve_uot``, DistProto's 3.3) unless ``config.balanced``,
    Table 2's ablation, solved by POT's batched log-domain Sinkhorn (``ot.batch``; the
    UOT solver leaves balanced OT to it). Masses: ``a = 1/n`` on the n real rows of a
    problem, ``b = 1/K`` on its K real prototypes (the paper does not say; uniform is the
    usual choice); padding gets zero mass and a zero plan. The plan carries no gradient.

    Args:
        cost: (P, n, k) costs (detached here).
        row_mask: (P, n) True on real rows.
        col_mask: (P, k) True on real prototypes.
        config: solver settings.

    Returns:
        OTResult with plan (P, n, k); the duals for UOT (None for balanced OT).

    >>> C = torch.rand(2, 5, 3)
    >>> rows, cols = torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)
    >>> res = solve_transport(C, rows, cols, OTConfig(balanced=True, tol=1e-7, max_iter=2000))
    >>> bool(torch.allclose(res.plan.sum(-1), torch.full((2, 5), 0.2), atol=1e-5))
    True
    """
    cost = cost.detach()
    a = uniform_masses(row_mask).to(cost.dtype)
    b = uniform_masses(col_mask).to(cost.dtype)
    if not config.balanced:
        return solve_uot(
            cost,
            a,
            b,
            eps=config.eps,
            tau_a=config.tau_a,
            tau_b=config.tau_b,
            reg_type=config.reg_type,
            max_iter=config.max_iter,
            tol=config.tol,
            check_every=config.check_every,
        )
    # Balanced OT needs equal masses: problems without rows (a scenario absent from the
    # batch) are left out of the call and keep a zero plan.
    present = row_mask.any(-1) & col_mask.any(-1)
    plan = torch.zeros_like(cost)
    res = solve_batch(
        cost[present],
        reg=config.eps,
        a=a[present],
        b=b[present],
        method="log_sinkhorn",
        max_iter=config.max_iter,
        tol=config.tol,
        grad="detach",
    )
    plan[present] = res.plan
    err_a = (plan.sum(-1) - a).abs().amax(-1) * present
    err_b = (plan.sum(-2) - b).abs().amax(-1) * present
    n_iter = int(res.log["n_iter"]) + 1
    converged = bool(torch.maximum(err_a, err_b).max() <= config.tol)
    return OTResult(
        plan=plan,
        log_u=None,
        log_v=None,
        n_iter=n_iter,
        err_a=err_a,
        err_b=err_b,
        converged=converged,
        message=f"balanced log-Sinkhorn (POT), {n_iter} sweeps, converged={converged}",
    )
