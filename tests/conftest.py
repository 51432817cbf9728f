"""Shared test fixtures: where the real data lies, a real Pushgateway, a job's environment."""

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROTOREC_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (CI clones main with shared/ beside it)."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.fail(f"real data not found at {SHARED_DATA}; set PROTOREC_SHARED_DATA")
    return SHARED_DATA


#: What a job's subprocess must not inherit: torchrun's placement of this process (a
#: test run under torchrun) and protorec's own settings (a Pushgateway, fault injection,
#: a status file, a signing key).
_INHERITED = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def job_env(**extra: str) -> dict[str, str]:
    """The environment of a job run as a subprocess: one torch thread, nothing inherited.

    ``OMP_NUM_THREADS=1`` (the 2-core CI machine runs several processes at once), without
    :data:`_INHERITED` or any ``PROTOREC_*`` variable; ``extra`` is set on top.
    """
    env = {
        k: v for k, v in os.environ.items() if k not in _INHERITED and not k.startswith("PROTOREC_")
    }
    return {**env, "OMP_NUM_THREADS": "1", **extra}


GATEWAY = shutil.which("prometheus-pushgateway")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (a monitoring outage)."""
    return _free_port()


@pytest.fixture
def pushgateway(tmp_path):
    if GATEWAY is None:
        pytest.skip("prometheus-pushgateway not installed (apt-get install prometheus-pushgateway)")
    port = _free_port()
    proc = subprocess.Popen(
        [
            GATEWAY,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={tmp_path / 'pg.data'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:  # wait until it answers (readiness, bounded), not a timing assumption
        try:
            urllib.request.urlopen(f"{url}/-/ready", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("pushgateway did not come up")
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    proc.kill()
    proc.wait()


@pytest.fixture
def scalar_tags():
    """Reads the scalar tags of the TensorBoard event files in a directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tags(directory) -> set[str]:
        events = EventAccumulator(str(directory))
        events.Reload()
        return set(events.Tags()["scalars"])

    return tags
