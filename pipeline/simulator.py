"""The built-in simulator: a seeded generator of contract data (see SimulatorConfig)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SimulatorConfig:
    """Size and seed of the simulated world.

    Args:
        num_users: users in the world.
        num_items: items in the world.
        rows_per_day: impressions generated per day.
        seed: seed of the world and of every day's draws.
    """

    num_users: int = 20_000
    num_items: int = 5_000
    rows_per_day: int = 200_000
    seed: int = 0
