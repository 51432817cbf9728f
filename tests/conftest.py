"""Shared test fixtures: where the real data lies."""

import os
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
