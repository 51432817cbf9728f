"""The data section of the config: where the contract data set is, which scenarios exist."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    """Where the contract data set is and which scenarios exist.

    Args:
        dataset: directory of the contract data set (``date=YYYY-MM-DD/`` partitions);
            relative paths are taken from the working directory of the job.
        scenarios: the scenario codes that exist, in model order: the code at position s
            is scenario index s in every batch. Rows with another code are quarantined.
        scenario_names: optional display names, one per scenario.
        max_bad_share: a partition with a larger share of quarantined rows stops the job.
    """

    dataset: str
    scenarios: list[int]
    scenario_names: list[str] = field(default_factory=list)
    max_bad_share: float = 0.5

    def __post_init__(self) -> None:
        if not self.scenarios:
            raise ValueError("data.scenarios must list at least one scenario code")
        if len(set(self.scenarios)) != len(self.scenarios):
            raise ValueError("data.scenarios has duplicate codes")
        if self.scenario_names and len(self.scenario_names) != len(self.scenarios):
            raise ValueError("data.scenario_names must have one name per scenario")
        if not 0.0 < self.max_bad_share <= 1.0:
            raise ValueError("data.max_bad_share must be in (0, 1]")

    def scenario_name(self, index: int) -> str:
        return self.scenario_names[index] if self.scenario_names else str(self.scenarios[index])
