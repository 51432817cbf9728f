from protorec.pipeline.gate import decide


def _metrics(**aucs):
    return {
        "per_scenario": {
            name: {"auc": auc, "samples": samples} for name, (auc, samples) in aucs.items()
        }
    }


def test_cold_start_passes():
    assert decide(_metrics(feed=(0.6, 1000)), None, 0.01, 100).passed


def test_a_fall_beyond_the_threshold_refuses_and_names_the_scenario():
    today = _metrics(feed=(0.700, 1000), live=(0.640, 1000))
    yesterday = _metrics(feed=(0.705, 1000), live=(0.660, 1000))
    gate = decide(today, yesterday, 0.01, 100)
    assert not gate.passed
    assert "live (0.6600 -> 0.6400)" in gate.reason and "feed" not in gate.reason
    assert gate.per_scenario["feed"]["gated"] and gate.per_scenario["feed"]["drop"] < 0.01


def test_small_or_undefined_scenarios_are_not_gated():
    today = _metrics(feed=(0.70, 1000), live=(0.40, 50), search=(None, 1000))
    yesterday = _metrics(feed=(0.70, 1000), live=(0.70, 50), search=(0.7, 1000))
    gate = decide(today, yesterday, 0.01, 100)
    assert gate.passed and "1 of 3 scenarios gated" in gate.reason
    assert not gate.per_scenario["live"]["gated"] and not gate.per_scenario["search"]["gated"]
