"""The model section of the config: which architecture, and its sizes and loss weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class ModelConfig:
    """Which model to build.

    Args:
        name: the architecture.
    """

    name: Literal["shared_bottom", "mmoe", "ple", "star", "distproto"] = "mmoe"
