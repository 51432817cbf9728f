"""The top-level protorec config: one YAML file per data set and model choice."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from protorec.models.config import ModelConfig
from protorec.models.features import FeaturesConfig
from protorec.pipeline.config import load_yaml
from protorec.pipeline.daily_config import DailyConfig
from protorec.pipeline.data_config import DataConfig
from protorec.pipeline.ingest import IngestConfig
from protorec.pipeline.loader import LoaderConfig
from protorec.pipeline.simulator import SimulatorConfig
from protorec.pipeline.train_config import TrainConfig

#: The configs shipped with protorec (``configs/*.yaml``).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class ProtorecConfig:
    """Everything a job needs to know: data, features, loader, simulator, model, training, daily."""

    data: DataConfig
    features: FeaturesConfig
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    daily: DailyConfig = field(default_factory=DailyConfig)


def load_config(path: str | Path) -> ProtorecConfig:
    """Load and validate a protorec YAML config; a bare name looks in ``configs/``.

    >>> load_config("simulator").data.scenarios
    [0, 1, 2, 3, 4]
    """
    p = Path(path)
    if not p.exists() and p.suffix == "" and (CONFIG_DIR / f"{p.name}.yaml").exists():
        p = CONFIG_DIR / f"{p.name}.yaml"
    return load_yaml(ProtorecConfig, p)
