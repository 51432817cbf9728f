"""The container entrypoint, run directly (no Docker engine here), with a fake torchrun."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


@pytest.fixture
def fake_torchrun(tmp_path):
    fake = tmp_path / "torchrun"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    return str(fake)


def _run(fake_torchrun, *args, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROTOREC_")}
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        env={**clean, "TORCHRUN": fake_torchrun, **env},
    )


def test_single_node(fake_torchrun):
    run = _run(
        fake_torchrun,
        "--quiet",
        PROTOREC_WORKDIR="/w",
        PROTOREC_DATE="2026-01-05",
        PROTOREC_NPROC_PER_NODE="2",
        PROTOREC_CONFIG="kuairand",
        PROTOREC_FORCE="1",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:-1] == [
        "--nproc_per_node=2",
        "--standalone",
        str(ROOT / "jobs" / "train_daily.py"),
        "--config",
        "kuairand",
        "--date",
        "2026-01-05",
        "--workdir",
        "/w",
        "--device",
        "auto",
        "--force",
        "--quiet",
    ]


def test_multi_node_rendezvous(fake_torchrun):
    run = _run(
        fake_torchrun,
        PROTOREC_WORKDIR="/w",
        PROTOREC_DATE="2026-01-05",
        PROTOREC_NNODES="4",
        PROTOREC_NODE_RANK="3",
        PROTOREC_NPROC_PER_NODE="8",
        PROTOREC_RDZV_ENDPOINT="head:29400",
        PROTOREC_DATASET="/data/contract",
    )
    assert run.returncode == 0, run.stderr
    args = run.stdout.split()
    assert args[:6] == [
        "--nproc_per_node=8",
        "--nnodes=4",
        "--node_rank=3",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=head:29400",
        "--rdzv_id=protorec-2026-01-05",
    ]
    assert args[-2:] == ["--dataset", "/data/contract"]


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "PROTOREC_WORKDIR is not set"),
        ({"PROTOREC_WORKDIR": "/w", "PROTOREC_DATE": "5 Jan"}, "PROTOREC_DATE must be YYYY-MM-DD"),
        (
            {"PROTOREC_WORKDIR": "/w", "PROTOREC_NPROC_PER_NODE": "two"},
            "PROTOREC_NPROC_PER_NODE must be a whole number, got 'two'",
        ),
        ({"PROTOREC_WORKDIR": "/w", "PROTOREC_NNODES": "2"}, "PROTOREC_RDZV_ENDPOINT (host:port)"),
    ],
)
def test_bad_environment_is_named(fake_torchrun, env, message):
    run = _run(fake_torchrun, **env)
    assert run.returncode == 2 and message in run.stderr and run.stdout == ""


@pytest.mark.parametrize(
    "recorded, force, expected",
    [
        ('"exit_status": 3', "0", 3),  # refused: torchrun says 1, the run record says 3
        ('"exit_status": 0', "0", 1),  # a real failure stays a failure
        (None, "0", 1),
    ],
)
def test_gate_refusal_survives_torchrun(tmp_path, recorded, force, expected):
    failing = tmp_path / "torchrun"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    if recorded is not None:
        (tmp_path / "w" / "runs").mkdir(parents=True)
        (tmp_path / "w" / "runs" / "2026-01-05.json").write_text("{" + recorded + "}")
    run = _run(
        str(failing),
        PROTOREC_WORKDIR=str(tmp_path / "w"),
        PROTOREC_DATE="2026-01-05",
        PROTOREC_FORCE=force,
    )
    assert run.returncode == expected, run.stderr


@pytest.mark.parametrize("status", [4, 5, 6])
def test_job_status_file_survives_torchrun(tmp_path, status):
    # as jobs/train_daily.py does under a launcher: the status in the file, exit 0
    reporting = tmp_path / "torchrun"
    reporting.write_text(f'#!/bin/sh\necho {status} > "$PROTOREC_STATUS_FILE"\nexit 0\n')
    reporting.chmod(0o755)
    run = _run(str(reporting), PROTOREC_WORKDIR=str(tmp_path / "w"), PROTOREC_DATE="2026-01-05")
    assert run.returncode == status, run.stderr


def test_other_commands_run_as_given(fake_torchrun):
    run = _run(fake_torchrun, "echo", "protorec", "ingest")
    assert run.returncode == 0 and run.stdout == "protorec ingest\n"


def test_images_install_with_the_setup_script():
    for variant in ("cpu", "cuda"):
        text = (ROOT / "docker" / f"Dockerfile.{variant}").read_text()
        assert f"RUN bash docker/install.sh {variant} python" in text
    assert "docker/install.sh cpu" in (ROOT / "Makefile").read_text()


def test_shell_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    scripts = [
        ROOT / "docker" / "entrypoint.sh",
        ROOT / "docker" / "install.sh",
        ROOT / "jobs" / "demo.sh",
        ROOT / ".ci" / "run",
    ]
    run = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout
