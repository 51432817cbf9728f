"""The publish gate: today's model against yesterday's, per scenario, on the same held-out rows."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GateDecision:
    """Whether to publish, and why.

    Args:
        passed: publish (True) or keep yesterday's export (False).
        reason: one line for the log and the run record.
        per_scenario: ``{scenario: {"today": auc, "yesterday": auc, "drop": d,
            "gated": bool}}``; ``gated`` is False for scenarios too small to judge.
        refused_by: the scenarios whose AUC fell too far (empty when it passed).
    """

    passed: bool
    reason: str
    per_scenario: dict[str, dict] = field(default_factory=dict)
    refused_by: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "refused_by": self.refused_by,
            "per_scenario": self.per_scenario,
        }


def decide(today: dict, yesterday: dict | None, max_auc_drop: float, min_rows: int) -> GateDecision:
    """Refuse when a scenario's AUC fell by more than ``max_auc_drop`` against yesterday.

    Args:
        today: :func:`protorec.pipeline.metrics.compute_metrics` of today's model.
        yesterday: the same for yesterday's model on the same rows; None means a cold
            start (passes).
        max_auc_drop: the largest allowed fall of a scenario's AUC.
        min_rows: scenarios with fewer rows, or an undefined AUC, are not gated.

    >>> m = lambda a: {"per_scenario": {"feed": {"auc": a, "samples": 900}}}
    >>> decide(m(0.70), m(0.72), 0.01, 100).reason
    'AUC fell by more than 0.01 in: feed (0.7200 -> 0.7000)'
    >>> decide(m(0.70), m(0.72), 0.01, 100).refused_by
    ['feed']
    >>> decide(m(0.715), m(0.72), 0.01, 100).passed
    True
    """
    if yesterday is None:
        return GateDecision(True, "cold start: no previous model to compare with")
    per_scenario, fell, refused_by = {}, [], []
    for name, block in today["per_scenario"].items():
        before = yesterday["per_scenario"].get(name, {}).get("auc")
        after = block.get("auc")
        gated = before is not None and after is not None and block.get("samples", 0) >= min_rows
        drop = before - after if gated else None
        per_scenario[name] = {"today": after, "yesterday": before, "drop": drop, "gated": gated}
        if drop is not None and drop > max_auc_drop:
            fell.append(f"{name} ({before:.4f} -> {after:.4f})")
            refused_by.append(name)
    if fell:
        return GateDecision(
            False,
            f"AUC fell by more than {max_auc_drop} in: " + ", ".join(fell),
            per_scenario,
            refused_by,
        )
    judged = sum(v["gated"] for v in per_scenario.values())
    return GateDecision(
        True,
        f"no scenario's AUC fell by more than {max_auc_drop} "
        f"({judged} of {len(per_scenario)} scenarios gated)",
        per_scenario,
    )
