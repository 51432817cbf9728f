"""Two "nodes" on this machine: two entrypoint launches meeting at a c10d rendezvous.

Each launch is what one node of a multi-node job runs (docs/daily.md, "Several nodes"):
its own torchrun agent with one worker, ``--nnodes=2`` and the same rendezvous endpoint,
not ``--standalone``. The workdir is shared, as a cluster's shared file system is.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from protorec.pipeline.job_config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))


def test_daily_job_over_two_nodes_through_the_rendezvous(tmp_path, unused_port):
    cfg = yaml.safe_load((CONFIG_DIR / "simulator.yaml").read_text())
    cfg["simulator"]["rows_per_day"] = 20_000
    cfg["daily"] = {"min_gate_rows": 100}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PROTOREC_")
        and k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    clean["OMP_NUM_THREADS"] = "1"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "protorec.jobs.cli",
            "simulate",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "data"),
            "--start",
            "2026-01-01",
            "--days",
            "1",
            "--quiet",
        ],
        check=True,
        env=clean,
    )
    env = {
        **clean,
        "TORCHRUN": TORCHRUN,
        "PROTOREC_WORKDIR": str(tmp_path / "work"),
        "PROTOREC_CONFIG": str(config),
        "PROTOREC_DATASET": str(tmp_path / "data"),
        "PROTOREC_DATE": "2026-01-01",
        "PROTOREC_DEVICE": "cpu",
        "PROTOREC_NNODES": "2",
        "PROTOREC_NPROC_PER_NODE": "1",
        "PROTOREC_RDZV_ENDPOINT": f"127.0.0.1:{unused_port}",
        "PROTOREC_RDZV_ID": "two-nodes-test",
    }
    nodes = [
        subprocess.Popen(
            ["bash", str(ENTRYPOINT), "--quiet"],
            text=True,
            env={**env, "PROTOREC_NODE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in (0, 1)
    ]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    record = json.loads((tmp_path / "work" / "runs" / "2026-01-01.json").read_text())
    assert record["status"] == "exported" and record["exit_status"] == 0
    meta = json.loads((tmp_path / "work" / "checkpoints" / "2026-01-01" / "meta.json").read_text())
    assert meta["world_size"] == 2
    assert (tmp_path / "work" / "exports" / "2026-01-01" / "manifest.json").is_file()
