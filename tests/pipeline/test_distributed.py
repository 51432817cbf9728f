"""The one-rank process group of a plain ``python`` run leaves the environment alone."""

import os
import subprocess
import sys

import torch.distributed as dist

from protorec.pipeline.distributed import init_distributed, shutdown_distributed

RENDEZVOUS_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def test_plain_run_opens_one_rank_group_without_writing_rendezvous_variables(monkeypatch):
    for key in RENDEZVOUS_KEYS:
        monkeypatch.delenv(key, raising=False)
    was_open = dist.is_initialized()
    ctx = init_distributed("cpu")
    try:
        assert (ctx.rank, ctx.world_size) == (0, 1)
        # A child must not inherit a port this process still listens on (CI once failed
        # three subprocess tests with EADDRINUSE that way).
        assert not [key for key in RENDEZVOUS_KEYS if key in os.environ]
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "from protorec.pipeline.distributed import init_distributed;"
                " print(init_distributed('cpu').world_size)",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert child.returncode == 0, child.stderr[-2000:]
        assert child.stdout.strip() == "1"
    finally:
        if not was_open:
            shutdown_distributed()
