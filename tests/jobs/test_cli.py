"""The `protorec` command itself: --version, and help that shows every verb's defaults."""

import subprocess
import sys
from importlib.metadata import version

import pytest

from protorec.jobs.cli import JOBS, build_parser


def test_version_is_the_installed_packages():
    run = subprocess.run(
        [sys.executable, "-m", "protorec.jobs.cli", "--version"], capture_output=True, text=True
    )
    assert run.returncode == 0 and run.stdout.strip() == f"protorec {version('protorec')}"


def test_help_loads_no_torch():
    # The job modules import torch in their run functions only: help answers at once.
    code = (
        "import sys; from protorec.jobs.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr


@pytest.mark.parametrize("verb", JOBS)
def test_every_verb_has_a_description_and_shows_defaults(verb, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([verb, "--help"])
    text = capsys.readouterr().out
    usage, _, rest = text.partition("\n\n")
    assert rest.strip().splitlines()[0] and not rest.startswith("options:")
    if "--config CONFIG" in text and verb not in ("ingest", "evaluate"):
        assert "(default: simulator)" in " ".join(text.split())
