"""`protorec report`'s table from run records: refused days and the label rate."""

import json

from protorec.pipeline.daily_report import daily_table
from protorec.pipeline.gate import decide


def _block(auc, label_rate):
    return {"samples": 1000, "auc": auc, "gauc": auc, "logloss": 0.5, "label_rate": label_rate}


def _metrics(feed, live):
    return {
        "overall": _block((feed + live) / 2, 0.25),
        "per_scenario": {"feed": _block(feed, 0.2), "live": _block(live, 0.3)},
    }


def _write(workdir, date, metrics, baseline):
    gate = decide(metrics, baseline, 0.01, 100)
    drift = {name: {"label_rate": 0.9, "watch_ratio_shift": None} for name in ("feed", "live")}
    record = {
        "date": date,
        "status": "exported" if gate.passed else "refused",
        "gate": gate.as_dict(),
        "metrics": metrics,
        "baseline": baseline,
        "oracle": None,
        "drift": drift,
    }
    (workdir / "runs").mkdir(exist_ok=True)
    (workdir / "runs" / f"{date}.json").write_text(json.dumps(record))


def test_a_refused_day_names_the_scenarios_that_refused_it(tmp_path):
    day1 = _metrics(0.70, 0.70)
    _write(tmp_path, "2026-01-01", day1, None)
    _write(tmp_path, "2026-01-02", _metrics(0.70, 0.60), day1)  # live fell by 0.10
    rows = {
        tuple(c.strip() for c in line.split("|")[1:4]): line
        for line in daily_table(tmp_path).splitlines()[2:]
    }
    assert ("2026-01-01", "exported", "overall") in rows
    assert ("2026-01-02", "refused by live", "overall") in rows
    assert ("2026-01-02", "refused: AUC fell", "live") in rows
    assert ("2026-01-02", "refused", "feed") in rows


def test_the_label_rate_is_the_hold_out_rows_as_in_the_exports_metrics(tmp_path):
    _write(tmp_path, "2026-01-01", _metrics(0.70, 0.70), None)
    lines = daily_table(tmp_path).splitlines()
    header = [c.strip() for c in lines[0].split("|")]
    label = header.index("label rate")
    rates = {line.split("|")[3].strip(): line.split("|")[label].strip() for line in lines[2:]}
    # the metrics' label_rate (clicks / rows of the hold-out), not the drift's 0.9
    assert rates == {"overall": "0.2500", "feed": "0.2000", "live": "0.3000"}
