"""The trainer refuses what fbgemm cannot run, before any model is built."""

import subprocess
import sys

import pytest
import torch

from protorec.pipeline.config import ConfigError
from protorec.pipeline.job_config import CONFIG_DIR
from protorec.pipeline.train_config import TrainConfig
from protorec.pipeline.trainer import CPU_EMBEDDING_OPTIMIZERS, check_embedding_optimizer


def test_adam_tables_are_refused_on_cpu_naming_what_runs():
    with pytest.raises(ConfigError, match="train.embedding_optimizer") as exc:
        check_embedding_optimizer(TrainConfig(embedding_optimizer="adam"), torch.device("cpu"))
    assert all(name in str(exc.value) for name in CPU_EMBEDDING_OPTIMIZERS)
    # CUDA kernels have Adam: nothing to refuse there.
    check_embedding_optimizer(TrainConfig(embedding_optimizer="adam"), torch.device("cuda"))
    for name in CPU_EMBEDDING_OPTIMIZERS:
        check_embedding_optimizer(TrainConfig(embedding_optimizer=name), torch.device("cpu"))


def test_train_job_exits_2_on_adam_tables_without_training(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "protorec.jobs.cli",
            "train",
            "--config",
            str(CONFIG_DIR / "simulator.yaml"),
            "--set",
            "train.embedding_optimizer=adam",
            "--train",
            "2026-01-01",
            "--test",
            "2026-01-02",
            "--dataset",
            str(tmp_path / "nothing"),
            "--device",
            "cpu",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "train.embedding_optimizer" in run.stderr and "rowwise_adagrad" in run.stderr
    assert "Traceback" not in run.stderr
