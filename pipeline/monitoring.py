"""Prometheus metrics of a batch job: pushed to a Pushgateway, optionally a textfile.

One function maps protorec's metric names onto Prometheus series with a ``scenario``
label (:func:`build_registry`); drift measures are pure functions beside it. A
monitoring outage never fails the job: :func:`publish` logs any exception of the push or
the textfile as a warning and returns False.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

log = logging.getLogger(__name__)

#: Environment variable that gives the Pushgateway address when the config does not.
PUSHGATEWAY_ENV = "PROTOREC_PUSHGATEWAY"


def watch_ratio_shift(today: np.ndarray, yesterday: np.ndarray) -> float:
    """Wasserstein-1 distance between two days' watch-ratio samples (NaN if one is empty).

    >>> round(watch_ratio_shift(np.array([0.0, 1.0]), np.array([0.5, 1.5])), 3)
    0.5
    """
    if len(today) == 0 or len(yesterday) == 0:
        return math.nan
    return float(wasserstein_distance(today, yesterday))


def prototype_mass_shift(today: np.ndarray, yesterday: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between prototype-mass vectors.

    >>> prototype_mass_shift(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    1.0
    """
    p, q = np.asarray(today, float), np.asarray(yesterday, float)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2) ** 2)


@dataclass
class JobReport:
    """What one run of a job reports: per-scenario figures and per-job figures.

    ``per_scenario`` maps a scenario name to ``{metric: value}`` with metric among
    ``rows``, ``auc``, ``label_rate``, ``watch_ratio_shift``, ``prototype_mass_shift``,
    ``rows_quarantined``; ``job`` holds ``samples``, ``step_seconds``,
    ``duration_seconds``, ``last_success_timestamp``, ``exported`` (1 or 0).
    """

    job: str
    per_scenario: dict[str, dict[str, float]] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    #: managed id tables: table -> {rows_used, admitted, evicted, overflow, seen}
    ids: dict[str, dict[str, int]] = field(default_factory=dict)


_SCENARIO_SERIES = {
    "rows": "valid rows of the day (0 for a scenario that vanished)",
    "auc": "AUC of the click prediction on the held-out slice",
    "label_rate": "click rate of the day's data",
    "watch_ratio_shift": "Wasserstein-1 between today's and yesterday's watch-ratio samples",
    "prototype_mass_shift": "Jensen-Shannon divergence of prototype mass, today vs yesterday",
    "rows_quarantined": "rows of the day set aside by the contract check",
}
_JOB_SERIES = {
    "samples": "samples trained on",
    "step_seconds": "mean seconds per training step",
    "duration_seconds": "wall time of the job",
    "last_success_timestamp": "unix time of the last successful run",
    "exported": "1 if the run published an export, 0 if the gate refused it",
    "rows_invalid": "rows of the day that break the data contract, left out of the run",
}


def build_registry(report: JobReport) -> CollectorRegistry:
    """Prometheus series ``protorec_<metric>{job, scenario}`` for every finite value."""
    registry = CollectorRegistry()
    gauges = {
        name: Gauge(f"protorec_{name}", doc, ["scenario"], registry=registry)
        for name, doc in _SCENARIO_SERIES.items()
    }
    for scenario, values in report.per_scenario.items():
        for name, value in values.items():
            if name not in gauges:
                raise KeyError(f"unknown per-scenario metric {name!r}")
            if value is not None and math.isfinite(value):
                gauges[name].labels(scenario=scenario).set(value)
    for name, value in report.values.items():
        if name not in _JOB_SERIES:
            raise KeyError(f"unknown job metric {name!r}")
        if value is not None and math.isfinite(value):
            Gauge(f"protorec_job_{name}", _JOB_SERIES[name], registry=registry).set(value)
    if report.ids:
        ids = Gauge(
            "protorec_ids",
            "managed id tables: rows used, ids admitted, evicted, "
            "left without a row (overflow) and seen today",
            ["table", "kind"],
            registry=registry,
        )
        for table, counts in report.ids.items():
            for kind, value in counts.items():
                ids.labels(table=table, kind=kind).set(value)
    return registry


def publish(
    report: JobReport,
    pushgateway: str | None = None,
    textfile: str | None = None,
    timeout_s: float = 5.0,
) -> bool:
    """Push ``report`` to the Pushgateway and/or write it as a node-exporter textfile.

    The gateway address is ``pushgateway`` or else ``$PROTOREC_PUSHGATEWAY``; with
    neither, nothing is pushed. Returns True when every asked-for target got the
    metrics; a failure is logged as a warning, never raised.
    """
    registry = build_registry(report)
    ok = True
    address = pushgateway or os.environ.get(PUSHGATEWAY_ENV)
    if address:
        try:
            push_to_gateway(address, job=report.job, registry=registry, timeout=timeout_s)
        # Not only OSError: a peer that answers with something other than HTTP raises
        # http.client.BadStatusLine (an HTTPException), a bad address ValueError... The
        # outputs are published by then; monitoring must never turn that into a failure.
        except Exception as exc:  # noqa: BLE001
            log.warning(
                "metrics not pushed to %s: %s: %s (the job goes on)",
                address,
                type(exc).__name__,
                exc,
            )
            ok = False
    if textfile:
        try:
            write_to_textfile(textfile, registry)
        except Exception as exc:  # noqa: BLE001
            log.warning(
                "metrics textfile %s not written: %s: %s", textfile, type(exc).__name__, exc
            )
            ok = False
    return ok
