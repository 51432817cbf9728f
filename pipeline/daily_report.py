"""The daily job's history as one table: per day and scenario, hold-out metrics and drift."""

from __future__ import annotations

import json
from pathlib import Path


def _cell(value, fmt: str = "{:.4f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def daily_table(workdir: str | Path) -> str:
    """Markdown: one row per (day, scope) from ``workdir/runs/*.json``, oldest first.

    Columns: the gate's outcome (on a refused day, the overall row names the scenarios that
    refused it and their rows say so), hold-out rows, AUC of the day's model, of
    yesterday's and of the simulator's oracle (simulated data) on the same rows, GAUC,
    logloss, label rate (clicks / rows of the same hold-out rows: the ``label_rate`` of the
    export's metrics.json), the watch-ratio shift (W1) and the prototype-mass shift (JS)
    against the day before, rows quarantined.
    """
    runs = sorted(Path(workdir, "runs").glob("*.json"))
    if not runs:
        raise FileNotFoundError(f"no run records in {Path(workdir, 'runs')}")
    lines = [
        "| date | status | scope | rows | AUC | AUC yesterday | AUC oracle | GAUC | logloss "
        "| label rate | watch-ratio W1 | prototype JS | quarantined |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path in runs:
        record = json.loads(path.read_text())
        metrics, baseline, oracle = (
            record["metrics"],
            record.get("baseline"),
            record.get("oracle"),
        )

        def auc(m, scope):
            if m is None:
                return None
            return (m["overall"] if scope == "overall" else m["per_scenario"][scope])["auc"]

        # Which scenarios refused the day (records older than ``refused_by``: "refused").
        refused_by = record.get("gate", {}).get("refused_by") or []
        status = {"overall": record["status"]}
        if refused_by:
            status = {
                "overall": "refused by " + ", ".join(refused_by),
                **{name: "refused: AUC fell" for name in refused_by},
            }
        scopes: list[tuple[str, dict, dict]] = [("overall", metrics["overall"], {})]
        for name, block in metrics["per_scenario"].items():
            scopes.append((name, block, record["drift"].get(name, {})))
        for scope, block, drift in scopes:
            lines.append(
                f"| {record['date']} | {status.get(scope, record['status'])} | {scope} | "
                f"{block['samples']} | "
                f"{_cell(block['auc'])} | {_cell(auc(baseline, scope))} | "
                f"{_cell(auc(oracle, scope))} | "
                f"{_cell(block['gauc'])} | {_cell(block['logloss'])} | "
                f"{_cell(block.get('label_rate'))} | {_cell(drift.get('watch_ratio_shift'))} | "
                f"{_cell(drift.get('prototype_mass_shift'))} | "
                f"{_cell(drift.get('rows_quarantined'), '{:.0f}')} |"
            )
    return "\n".join(lines)
