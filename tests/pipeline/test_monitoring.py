"""Monitoring against a real Pushgateway on 127.0.0.1 (Debian's prometheus-pushgateway)."""

import urllib.request

import numpy as np
import pytest

from protorec.pipeline.monitoring import (
    JobReport,
    build_registry,
    prototype_mass_shift,
    publish,
    watch_ratio_shift,
)


def _report():
    return JobReport(
        job="protorec_test",
        per_scenario={
            "feed": {"auc": 0.71, "label_rate": 0.2, "watch_ratio_shift": 0.05},
            "live": {"auc": 0.66, "rows_quarantined": 3.0, "prototype_mass_shift": float("nan")},
        },
        values={"samples": 1000.0, "exported": 1.0, "last_success_timestamp": 1.7e9},
        ids={"user": {"rows_used": 40, "admitted": 5, "evicted": 2, "overflow": 0}},
    )


def test_push_and_read_back(pushgateway):
    assert publish(_report(), pushgateway=pushgateway)
    text = urllib.request.urlopen(f"http://{pushgateway}/metrics", timeout=5).read().decode()
    assert 'protorec_auc{instance="",job="protorec_test",scenario="feed"} 0.71' in text
    assert 'protorec_rows_quarantined{instance="",job="protorec_test",scenario="live"} 3' in text
    assert 'protorec_job_exported{instance="",job="protorec_test"} 1' in text
    # NaN values are left out, not pushed as NaN
    assert "protorec_prototype_mass_shift{" not in text


def test_gateway_down_warns_and_does_not_raise(caplog, unused_port):
    port = unused_port
    assert publish(_report(), pushgateway=f"127.0.0.1:{port}", timeout_s=2) is False
    assert "not pushed" in caplog.text


def test_textfile(tmp_path):
    out = tmp_path / "protorec.prom"
    assert publish(_report(), textfile=str(out))
    assert 'protorec_label_rate{scenario="feed"} 0.2' in out.read_text()
    assert 'protorec_ids{kind="admitted",table="user"} 5.0' in out.read_text()


def test_unknown_metric_is_an_error():
    with pytest.raises(KeyError, match="unknown per-scenario metric 'acu'"):
        build_registry(JobReport(job="j", per_scenario={"s": {"acu": 1.0}}))


def test_drift_measures():
    rng = np.random.default_rng(0)
    a = rng.random(1000)
    assert watch_ratio_shift(a, a) == 0.0
    assert watch_ratio_shift(a, a + 0.25) == pytest.approx(0.25)
    assert np.isnan(watch_ratio_shift(a, a[:0]))
    m = np.array([3.0, 1.0, 0.0])
    assert prototype_mass_shift(m, 2 * m) == pytest.approx(0.0, abs=1e-12)
    assert 0 < prototype_mass_shift(m, m[::-1]) <= 1
