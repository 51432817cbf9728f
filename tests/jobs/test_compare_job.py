"""`protorec compare` on a tiny simulated data set: files, resume, mean ± std, checks."""

import datetime as dt
import importlib.metadata
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from protorec.jobs.cli import build_parser
from protorec.pipeline import compare as compare_module
from protorec.pipeline.compare import (
    Run,
    aggregate,
    mean_std,
    pending_runs,
    run_compare,
    run_config,
    scenario_figure,
    summary_markdown,
)
from protorec.pipeline.config import ConfigError, to_dict
from protorec.pipeline.distributed import DistContext
from protorec.pipeline.job_config import load_config
from protorec.pipeline.simulator import simulate
from protorec.pipeline.variants import apply_overrides, parse_override

SMALL = [
    "model.mmoe.num_experts=2",
    "model.mmoe.expert_hidden=[16]",
    "model.shared_bottom.hidden=[16]",
    "model.tower.hidden=[8]",
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    config = load_config("simulator")
    out = tmp_path_factory.mktemp("compare") / "data"
    sim = config.simulator
    sim = type(sim)(**{**sim.__dict__, "rows_per_day": 3000})
    simulate(out, dt.date(2026, 1, 1), 3, sim, config.data.scenarios, progress=False)
    return out


def _compare(data, out, models="shared_bottom,mmoe"):
    cmd = [
        sys.executable,
        "-m",
        "protorec.jobs.cli",
        "compare",
        "--config",
        "simulator",
        "--dataset",
        str(data),
        "--models",
        models,
        "--seeds",
        "2",
        "--train",
        "2026-01-01..2026-01-02",
        "--test",
        "2026-01-03",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    for s in SMALL:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_compare_writes_tables_and_resumes_skipping_finished_runs(tiny_data, tmp_path):
    out = tmp_path / "cmp"
    first = _compare(tiny_data, out)
    runs = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert runs == [
        "mmoe__seed0.json",
        "mmoe__seed1.json",
        "shared_bottom__seed0.json",
        "shared_bottom__seed1.json",
    ]
    summary = json.loads((out / "compare.json").read_text())
    assert list(summary["models"]) == ["shared_bottom", "mmoe"]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "compare.md").read_text()
    assert "| mmoe | 2 |" in md and "| oracle |" in md and "±" in md
    assert "| mmoe | 2 |" in first.stdout

    # the figures are the mean and sample std (n - 1) of the runs' own
    for variant in ("shared_bottom", "mmoe"):
        aucs = [
            json.loads((out / "runs" / f"{variant}__seed{s}.json").read_text())["metrics"][
                "overall"
            ]["auc"]
            for s in (0, 1)
        ]
        fig = summary["models"][variant]["figures"]["overall.auc"]
        assert fig["mean"] == pytest.approx(np.mean(aucs))
        assert fig["std"] == pytest.approx(np.std(aucs, ddof=1))
    assert summary["oracle"]["figures"]["overall.auc"] > 0.75

    # interrupted after 3 runs: the 4th is redone, the others are skipped, untouched
    (out / "runs" / "mmoe__seed1.json").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    second = _compare(tiny_data, out)
    assert "resume: 3 runs already finished" in second.stderr
    assert "run 1/1: mmoe seed 1" in second.stderr
    assert {p: (out / "runs" / p).stat().st_mtime_ns for p in kept} == kept
    assert (out / "runs" / "mmoe__seed1.json").exists()

    # report only: the tables of what is finished, nothing trained (no process group needed)
    (out / "compare.json").unlink()
    ctx = DistContext(
        rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo"
    )
    base = apply_overrides(load_config("simulator"), [parse_override(s) for s in SMALL])
    report = run_compare(
        base,
        ["mmoe", "ple"],
        2,
        tiny_data,
        "2026-01-01..2026-01-02",
        "2026-01-03",
        out,
        ctx,
        train=False,
    )
    assert list(report["models"]) == ["shared_bottom", "mmoe"]
    assert json.loads((out / "compare.json").read_text()) == report


def test_a_finished_run_with_another_config_stops_the_resume(tmp_path):
    base = load_config("simulator")
    settings = {"dataset": "d", "train_days": "a", "test_days": "b"}
    run = Run("mmoe", 0)
    record = {
        "variant": "mmoe",
        "seed": 0,
        "wall_s": 1.0,
        **settings,
        "config": to_dict(run_config(base, run)),
        "metrics": {},
    }
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "mmoe__seed0.json").write_text(json.dumps(record))
    assert pending_runs(tmp_path, base, [run, Run("mmoe", 1)], settings) == [Run("mmoe", 1)]
    changed = apply_overrides(base, {"model.mmoe.num_experts": 3})
    with pytest.raises(ConfigError, match="model.mmoe.num_experts"):
        pending_runs(tmp_path, changed, [run], settings)
    with pytest.raises(ConfigError, match="use another --out"):
        pending_runs(tmp_path, base, [run], {**settings, "test_days": "c"})


def _metrics(auc, xauc=None):
    block = {"auc": auc, "gauc": auc, "ndcg@10": 0.9, "logloss": 0.5}
    if xauc is not None:
        block.update(mae=1000.0, rmse=2000.0, xauc=xauc, xgauc=xauc)
    return {
        "overall": block,
        "per_scenario": {"feed": dict(block), "live": dict(block)},
        "worst_scenario_auc": auc,
        "worst_scenario": "feed",
    }


def test_aggregate_mean_std_and_watch_table():
    records = [
        {"variant": "prowtp", "seed": s, "wall_s": 10.0 + s, "metrics": _metrics(a, x)}
        for s, (a, x) in enumerate([(0.7, 0.6), (0.8, 0.7)])
    ]
    records.append({"variant": "mmoe", "seed": 0, "wall_s": 5.0, "metrics": _metrics(0.75)})
    summary = aggregate(
        records, _metrics(0.9, 0.8), {"dataset": "d", "train_days": "a", "test_days": "b"}
    )
    assert list(summary["models"]) == ["mmoe", "prowtp"]  # the registry's order
    fig = summary["models"]["prowtp"]["figures"]
    assert fig["overall.auc"]["mean"] == pytest.approx(0.75)
    assert fig["overall.auc"]["std"] == pytest.approx(np.sqrt(0.005))
    assert fig["per_scenario.live.xauc"]["values"] == [0.6, 0.7]
    assert summary["models"]["mmoe"]["figures"]["overall.auc"]["std"] is None  # one seed
    md = summary_markdown(summary)
    assert "| prowtp | 1000.0 ± 0.0 | 2000.0 ± 0.0 | 0.6500 ± 0.0707 | 0.6500 ± 0.0707 |" in md
    assert "| oracle | 1000.0 | 2000.0 | 0.8000 | 0.8000 |" in md
    assert mean_std([None, None]) == {"mean": None, "std": None, "n": 0}


def _with_empty_scenario(metrics):
    """``metrics`` plus a scenario without test rows, as compute_metrics lists it."""
    empty = {"samples": 0, "auc": None, "gauc": None, "ndcg@10": None, "logloss": None}
    metrics["per_scenario"]["tab7"] = empty
    return metrics


def test_chart_names_its_data_starts_at_chance_and_plots_only_scenarios_with_rows():
    settings = {"dataset": "/x/data/kuairand", "train_days": "d1..d4", "test_days": "d5"}
    records = [
        {"variant": "mmoe", "seed": s, "wall_s": 1.0, "metrics": _with_empty_scenario(_metrics(a))}
        for s, a in enumerate([0.7, 0.72])
    ]
    summary = aggregate(records, None, settings)
    assert summary["models"]["mmoe"]["scenarios"] == ["feed", "live"]  # tab7: no rows
    assert "tab7" not in summary_markdown(summary)
    fig = scenario_figure(summary)
    (ax,) = fig.axes
    assert fig._suptitle.get_text() == "kuairand, train d1..d4, test d5"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["overall", "feed", "live"]
    assert ax.get_ylim()[0] == 0.5
    chance = [line for line in ax.get_lines() if line.get_label() == "chance (0.5)"]
    assert len(chance) == 1 and chance[0].get_linestyle() == "--"
    assert list(chance[0].get_ydata()) == [0.5, 0.5]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["chance (0.5)", "mmoe"]


def test_chart_of_watch_heads_adds_mae_and_xauc_panels():
    records = [
        {"variant": "prowtp", "seed": 0, "wall_s": 1.0, "metrics": _metrics(0.7, 0.62)},
        {"variant": "mmoe", "seed": 0, "wall_s": 1.0, "metrics": _metrics(0.75)},
    ]
    settings = {"dataset": "sim", "train_days": "a", "test_days": "b"}
    fig = scenario_figure(aggregate(records, _metrics(0.9, 0.8), settings))
    click, mae, xauc = fig.axes
    assert [a.get_title() for a in fig.axes] == [
        "click AUC per scenario",
        "watch-time MAE (ms)",
        "watch-time XAUC",
    ]
    assert [p.get_height() for p in mae.patches] == [1000.0]  # prowtp only: mmoe has no head
    assert mae.get_ylim()[0] == 0.0
    (prowtp_bars,) = [c for c in click.containers if c.get_label() == "prowtp"]
    assert mae.patches[0].get_facecolor() == prowtp_bars.patches[0].get_facecolor()
    assert [p.get_height() for p in xauc.patches] == [0.62]
    assert xauc.get_ylim()[0] == 0.5
    assert any(line.get_linestyle() == "--" for line in xauc.get_lines())
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(legend) == ["chance (0.5)", "mmoe", "oracle", "prowtp"]


def _job_args(data, out, *extra):
    argv = [
        "compare",
        "--config",
        "simulator",
        "--dataset",
        str(data),
        "--models",
        "shared_bottom,mmoe",
        "--seeds",
        "2",
        "--train",
        "2026-01-01..2026-01-02",
        "--test",
        "2026-01-03",
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]
    for s in SMALL:
        argv += ["--set", s]
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("finished", [0, 1])
def test_ctrl_c_keeps_the_finished_runs_in_one_line_and_the_same_command_resumes(
    tiny_data, tmp_path, monkeypatch, capsys, finished
):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(compare_module, "oracle_metrics", lambda *a, **k: None)
    trained = []

    def fake_train(config, *args, **kwargs):
        if len(trained) == finished:
            raise KeyboardInterrupt
        trained.append((config.model.name, config.train.seed))
        return _metrics(0.7)

    monkeypatch.setattr(compare_module, "train_and_evaluate", fake_train)
    out = tmp_path / "cmp"
    args = _job_args(tiny_data, out)
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped the job as a traceback")
    assert status == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert lines == [
        f"protorec compare: interrupted; {finished} of 4 runs finished and kept "
        f"in {out / 'runs'}: run the same command again to resume"
    ]
    assert len(list((out / "runs").glob("*.json"))) == finished
    assert (out / "runs").is_dir()  # stopped in the first run, the folder is there to resume

    # the same command again: only the runs not finished are trained
    trained.clear()
    monkeypatch.setattr(
        compare_module,
        "train_and_evaluate",
        lambda config, *a, **k: trained.append(config.train.seed) or _metrics(0.7),
    )
    assert args.func(args) == 0
    assert len(trained) == 4 - finished
    assert len(list((out / "runs").glob("*.json"))) == 4


def test_each_run_records_where_it_ran(tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(compare_module, "oracle_metrics", lambda *a, **k: None)
    monkeypatch.setattr(compare_module, "train_and_evaluate", lambda *a, **k: _metrics(0.7))
    out = tmp_path / "cmp"
    args = _job_args(tiny_data, out, "--threads", "1", "--quiet")
    assert args.func(args) == 0
    env = json.loads((out / "runs" / "mmoe__seed1.json").read_text())["environment"]
    assert env["world_size"] == 1 and env["device"] == "cpu" and env["torch_threads"] == 1
    version = importlib.metadata.version("protorec")
    assert env["code_version"].startswith(f"protorec {version} (git ")


def test_runs_of_one_variant_on_different_world_sizes_are_not_averaged(
    tiny_data, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(compare_module, "oracle_metrics", lambda *a, **k: None)
    base = apply_overrides(load_config("simulator"), [parse_override(s) for s in SMALL])
    out = tmp_path / "cmp"
    (out / "runs").mkdir(parents=True)
    for seed, world_size in ((0, 1), (1, 2)):
        run = Run("mmoe", seed)
        record = {
            "variant": "mmoe",
            "seed": seed,
            "wall_s": 1.0,
            "dataset": str(tiny_data.resolve()),
            "train_days": "2026-01-01..2026-01-02",
            "test_days": "2026-01-03",
            "environment": {
                "world_size": world_size,
                "torch_threads": 1,
                "device": "cpu",
                "code_version": "protorec 0.1.0 (git x)",
            },
            "config": to_dict(run_config(base, run)),
            "metrics": _metrics(0.7),
        }
        (out / "runs" / f"{run.run_id}.json").write_text(json.dumps(record))
    args = _job_args(tiny_data, out, "--report-only")
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("protorec compare: mmoe: world_size: its runs differ (")
    assert "runs/mmoe__seed0.json (world_size 1)" in err[-1]
    assert "runs/mmoe__seed1.json (world_size 2)" in err[-1]
    assert not (out / "compare.json").exists()
    # records written before protorec kept the environment are averaged as before
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    del records[1]["environment"]
    assert aggregate(records, None, {})["models"]["mmoe"]["seeds"] == [0, 1]

    # a compare (world size 1) that would add seed 1 beside a seed 0 run on 2 ranks stops
    # before training it
    (out / "runs" / "mmoe__seed0.json").unlink()
    monkeypatch.setattr(
        compare_module,
        "train_and_evaluate",
        lambda *a, **k: pytest.fail("trained a run it cannot average"),
    )
    args = _job_args(tiny_data, out)
    args.models = "mmoe"
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "(runs/mmoe__seed1.json (world_size 2), this compare (world_size 1))" in err
