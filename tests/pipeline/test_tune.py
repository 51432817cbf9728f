"""`protorec tune`: a declared space per variant, scored on validation days, resumable."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from protorec.pipeline.config import ConfigError
from protorec.pipeline.job_config import CONFIG_DIR, load_config
from protorec.pipeline.tune import COMMON, space_of, tune


class FakeTraining:
    """Scores a trial by its embedding step alone (best near 0.3); counts the calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, dataset, train_days, valid_days, ctx, progress):
        self.calls.append((config.train.embedding_lr, train_days, valid_days))
        return {"overall": {"auc": 0.8 - abs(config.train.embedding_lr - 0.3)}}


def test_search_writes_the_best_config_and_resumes(tmp_path):
    config, fake = load_config("simulator"), FakeTraining()
    result = tune(
        config,
        "mmoe",
        "data",
        "2026-01-01..2026-01-05",
        "2026-01-06",
        4,
        tmp_path,
        None,
        train_fn=fake,
    )
    assert len(fake.calls) == 4 and result.trials == 4
    # trials are scored on the validation days only
    assert {call[1:] for call in fake.calls} == {("2026-01-01..2026-01-05", "2026-01-06")}
    best = max(fake.calls, key=lambda c: 0.8 - abs(c[0] - 0.3))[0]
    assert result.best_values["train.embedding_lr"] == best
    tuned = load_config(str(result.best_config))  # a config train/compare take as --config
    assert tuned.train.embedding_lr == best and tuned.model.name == "mmoe"
    record = json.loads((tmp_path / "trials.json").read_text())
    assert [t["state"] for t in record["trials"]] == ["COMPLETE"] * 4

    # stopped and started again with a larger budget: only the missing trials run
    tune(
        config,
        "mmoe",
        "data",
        "2026-01-01..2026-01-05",
        "2026-01-06",
        6,
        tmp_path,
        None,
        train_fn=fake,
    )
    assert len(fake.calls) == 6
    tune(
        config,
        "mmoe",
        "data",
        "2026-01-01..2026-01-05",
        "2026-01-06",
        6,
        tmp_path,
        None,
        train_fn=fake,
    )
    assert len(fake.calls) == 6


def test_every_variant_searches_the_common_settings_and_the_papers_their_own():
    assert set(COMMON) <= set(space_of("shared_bottom"))
    assert "model.distproto.align_weight" in space_of("distproto")
    assert "model.distproto.gpd_weight" in space_of("gpdnet")
    assert "model.watch.prowtp.temperature" in space_of("prowtp")
    # every declared key is a real config key: a point of each space validates
    config = load_config("simulator")
    from protorec.pipeline.variants import VARIANTS, apply_overrides, variant_config

    for variant in VARIANTS:
        for key, dim in space_of(variant).items():
            value = dim.values[0] if hasattr(dim, "values") else dim.low
            apply_overrides(variant_config(config, variant), {key: value})
    with pytest.raises(ConfigError, match="deepfm"):
        space_of("deepfm")


def test_unknown_metric_is_refused_before_any_trial(tmp_path):
    fake = FakeTraining()
    with pytest.raises(ConfigError, match="--metric"):
        tune(
            load_config("simulator"),
            "mmoe",
            "d",
            "a",
            "b",
            2,
            tmp_path,
            None,
            metric="accuracy",
            train_fn=fake,
        )
    assert fake.calls == []


def test_tune_command_runs_real_trials(tmp_path):
    cfg = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text())
    cfg["simulator"]["rows_per_day"] = 5_000
    cfg["data"]["dataset"] = str(tmp_path / "data")
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cli = [sys.executable, "-m", "protorec.jobs.cli"]
    subprocess.run(
        [
            *cli,
            "simulate",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "data"),
            "--start",
            "2026-01-01",
            "--days",
            "2",
            "--quiet",
        ],
        check=True,
        env=env,
    )
    run = subprocess.run(
        [
            *cli,
            "tune",
            "--config",
            str(config),
            "--model",
            "shared_bottom",
            "--train",
            "2026-01-01",
            "--valid",
            "2026-01-02",
            "--trials",
            "2",
            "--out",
            str(tmp_path / "study"),
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((tmp_path / "study" / "trials.json").read_text())
    scores = [t["score"] for t in record["trials"]]
    assert len(scores) == 2 and all(0.5 < s < 1 for s in scores)
    assert f"best auc {max(scores):.4f}" in run.stdout
