"""A bad flag or file is one line on stderr and exit status 2, before any model is built.

Each case runs the real command in a subprocess. That nothing was built is seen in the
outputs the command would have written (``--out``, ``--export``, the work directory).
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from protorec.pipeline.job_config import CONFIG_DIR

CLI = [sys.executable, "-m", "protorec.jobs.cli"]
DAILY = [sys.executable, "-m", "protorec.jobs.train_daily"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A data set whose partitions exist for 2026-01-01..03 (the checks only look for files)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
        (root / "data" / f"date={day}").mkdir(parents=True)
        (root / "data" / f"date={day}" / "part-0.parquet").write_bytes(b"")
    return root / "data"


def _run(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run(args, env=env, capture_output=True, text=True, cwd=cwd)


def _one_line(run, *words):
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "train, test, flag, words",
    [
        ("2026-01-01", "2019-13-45", "--test", ["'2019-13-45' is not a date", "YYYY-MM-DD"]),
        ("2026-01-02..2026-01-01", "2026-01-03", "--train", ["ends before it starts"]),
        (
            "2026-01-01..2026-01-02",
            "2026-01-03..2026-01-05",
            "--test",
            ["2 day(s) without data", "first 2026-01-04", "present: 2026-01-01..2026-01-03"],
        ),
    ],
)
def test_train_checks_its_days_before_building_a_model(dataset, tmp_path, train, test, flag, words):
    run = _run(
        [
            *CLI,
            "train",
            "--dataset",
            str(dataset),
            "--train",
            train,
            "--test",
            test,
            "--out",
            str(tmp_path / "m.json"),
            "--export",
            str(tmp_path / "export"),
        ],
        tmp_path,
    )
    line = _one_line(run, "protorec train:", f"{flag}:", *words)
    assert line.startswith("protorec train: ")
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "export").exists()


def test_train_names_a_missing_data_set(tmp_path):
    run = _run(
        [
            *CLI,
            "train",
            "--dataset",
            str(tmp_path / "nowhere"),
            "--train",
            "2026-01-01",
            "--test",
            "2026-01-02",
            "--out",
            str(tmp_path / "m.json"),
        ],
        tmp_path,
    )
    _one_line(run, "--dataset:", "nowhere", "is not a folder", "protorec simulate")
    assert not (tmp_path / "m.json").exists()


def test_compare_and_tune_check_their_days(dataset, tmp_path):
    compare = _run(
        [
            *CLI,
            "compare",
            "--dataset",
            str(dataset),
            "--models",
            "mmoe",
            "--train",
            "2026-01-01",
            "--test",
            "2026-02-30",
            "--out",
            str(tmp_path / "cmp"),
        ],
        tmp_path,
    )
    _one_line(compare, "protorec compare:", "--test:", "'2026-02-30' is not a date")
    assert not (tmp_path / "cmp").exists()
    tune = _run(
        [
            *CLI,
            "tune",
            "--dataset",
            str(dataset),
            "--model",
            "mmoe",
            "--train",
            "2026-01-01",
            "--valid",
            "2026-01-09",
            "--out",
            str(tmp_path / "study"),
        ],
        tmp_path,
    )
    _one_line(tune, "protorec tune:", "--valid:", "first 2026-01-09")
    assert not (tmp_path / "study").exists()


def test_train_daily_checks_its_date_and_data_set(dataset, tmp_path):
    bad_date = _run(
        [
            *DAILY,
            "--dataset",
            str(dataset),
            "--workdir",
            str(tmp_path / "wd"),
            "--date",
            "2026-1-2x",
        ],
        tmp_path,
    )
    _one_line(bad_date, "train_daily:", "--date:", "is not a date")
    no_data = _run(
        [
            *DAILY,
            "--dataset",
            str(tmp_path / "nowhere"),
            "--workdir",
            str(tmp_path / "wd"),
            "--date",
            "2026-01-01",
        ],
        tmp_path,
    )
    _one_line(no_data, "train_daily:", "--dataset:", "is not a folder")
    assert not (tmp_path / "wd").exists()


def _export_with_bad_weights(folder):
    """An export whose manifest is in order but whose model.pt is no weights-only file."""
    from protorec.pipeline.manifest import file_entries

    folder.mkdir()
    cfg = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text())
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "model.pt").write_bytes(b"not a zip archive of tensors")
    manifest = {"format_version": 1, "model": "mmoe", "files": file_entries(folder)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_evaluate_refuses_an_export_whose_weights_do_not_load(dataset, tmp_path):
    export = _export_with_bad_weights(tmp_path / "export")
    run = _run(
        [
            *CLI,
            "evaluate",
            "--model",
            str(export),
            "--dataset",
            str(dataset),
            "--dates",
            "2026-01-01",
            "--out",
            str(tmp_path / "m.json"),
        ],
        tmp_path,
    )
    _one_line(run, "protorec evaluate:", "model.pt", "not a weights-only state dict")
    assert not (tmp_path / "m.json").exists()
    bad_dates = _run(
        [
            *CLI,
            "evaluate",
            "--model",
            str(export),
            "--dataset",
            str(dataset),
            "--dates",
            "2026-01-03..2026-01-01",
        ],
        tmp_path,
    )
    _one_line(bad_dates, "protorec evaluate:", "--dates:", "ends before it starts")


def test_report_without_run_records_says_so(tmp_path):
    run = _run([*CLI, "report", "--workdir", str(tmp_path)], tmp_path)
    _one_line(run, "protorec report:", "--workdir:", "no run records", "train_daily")


def test_report_into_a_closed_pipe_ends_quietly(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    block = {"samples": 10, "auc": 0.6, "gauc": 0.6, "logloss": 0.5}
    # 28 days x 41 rows of about 100 bytes: more than a pipe's buffer (64 KiB) holds.
    scenarios = {f"s{i}": block for i in range(40)}
    for day in range(1, 29):
        record = {
            "date": f"2026-01-{day:02d}",
            "status": "published",
            "metrics": {"overall": block, "per_scenario": scenarios},
            "drift": {},
        }
        (runs / f"2026-01-{day:02d}.json").write_text(json.dumps(record))
    # `| head -1`: the reader takes one line and goes while the table is still being written.
    report = subprocess.Popen(
        [*CLI, "report", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert report.stdout is not None and report.stderr is not None
    assert report.stdout.readline().startswith(b"| date |")
    report.stdout.close()
    report.wait()
    assert report.stderr.read() == b""
    assert report.returncode == 141
