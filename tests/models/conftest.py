"""Fixtures for the model tests: tiny configs and a synthetic click generator.

The synthetic data: users and items with latent factors; the click logit of a row in
scenario s is ``scale[s] * <u, v> + bias[s] + 0.5 * dense_0``, so a model must learn the
user x item interaction, how each scenario scales (one flips its sign) and the dense
feature. Held-out batches come from the same distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from protorec.models.batch import Batch
from protorec.pipeline.config import from_dict
from protorec.pipeline.job_config import ProtorecConfig

NUM_USERS, NUM_ITEMS = 20, 20
SCENARIO_SHARES = (0.5, 0.3, 0.2)
SCENARIO_SCALE = (2.5, 1.5, -2.0)
SCENARIO_BIAS = (-0.5, 0.5, 0.0)
MODEL_NAMES = ("shared_bottom", "mmoe", "ple", "star", "distproto")

#: Small sizes for every architecture, so that each test runs in well under a second.
TINY_MODEL = {
    "input": {"dense_hidden": [8], "scenario_dim": 4},
    "tower": {"hidden": [16]},
    "shared_bottom": {"hidden": [32, 16]},
    "mmoe": {"num_experts": 4, "expert_hidden": [32, 16]},
    "ple": {
        "num_layers": 2,
        "num_shared_experts": 2,
        "num_scenario_experts": 1,
        "expert_hidden": [16],
    },
    "star": {"hidden": [32, 16], "aux_hidden": [8]},
    "distproto": {"dim": 16, "num_global_prototypes": 16, "num_scenario_prototypes": 8},
}


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same global RNG state: failures reproduce."""
    torch.manual_seed(0)


@pytest.fixture
def tiny_config() -> Callable[..., ProtorecConfig]:
    """``tiny_config(name, **model_overrides)``: a 3-scenario config with tiny models."""

    def make(name: str = "mmoe", num_scenarios: int = 3, **model: dict) -> ProtorecConfig:
        return from_dict(
            ProtorecConfig,
            {
                "data": {"dataset": "unused", "scenarios": list(range(num_scenarios))},
                "features": {
                    "sparse": [
                        {
                            "name": "user",
                            "column": "user_id",
                            "num_embeddings": NUM_USERS,
                            "embedding_dim": 8,
                        },
                        {
                            "name": "item",
                            "column": "item_id",
                            "num_embeddings": NUM_ITEMS,
                            "embedding_dim": 8,
                        },
                    ],
                    "dense": [{"name": "d0", "column": "d0"}, {"name": "d1", "column": "d1"}],
                },
                "model": _merge({"name": name, **TINY_MODEL}, model),
            },
        )

    return make


class SyntheticClicks:
    """Batches whose clicks depend on user x item latent factors, the scenario and a dense feature.

    Args:
        num_scenarios: S (at most 3).
        rank: latent dimension.
        seed: the seed of the users', items' and scenarios' parameters.
    """

    def __init__(self, num_scenarios: int = 3, rank: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.num_scenarios = num_scenarios
        self.user = torch.randn(NUM_USERS, rank, generator=g) / math.sqrt(rank)
        self.item = torch.randn(NUM_ITEMS, rank, generator=g)
        shares = torch.tensor(SCENARIO_SHARES[:num_scenarios])
        self.shares = shares / shares.sum()
        self.scale = torch.tensor(SCENARIO_SCALE[:num_scenarios])
        self.bias = torch.tensor(SCENARIO_BIAS[:num_scenarios])

    def rows(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The raw columns of n rows drawn with ``generator`` (see :meth:`make_batch`)."""
        users = torch.randint(NUM_USERS, (n,), generator=generator)
        items = torch.randint(NUM_ITEMS, (n,), generator=generator)
        scenario = torch.multinomial(self.shares, n, replacement=True, generator=generator)
        dense = torch.randn(n, 2, generator=generator)
        affinity = (self.user[users] * self.item[items]).sum(-1)
        logit = self.scale[scenario] * affinity + self.bias[scenario] + 0.5 * dense[:, 0]
        click = torch.bernoulli(torch.sigmoid(logit), generator=generator)
        return {"user": users, "item": items, "scenario": scenario, "dense": dense, "click": click}

    @staticmethod
    def make_batch(rows: dict[str, torch.Tensor]) -> Batch:
        """A Batch of the given columns (user, item, scenario, dense, click)."""
        n = rows["user"].shape[0]
        sparse = KeyedJaggedTensor.from_lengths_sync(
            keys=["user", "item"],
            values=torch.cat([rows["user"], rows["item"]]),
            lengths=torch.ones(2 * n, dtype=torch.int32),
        )
        nan = torch.full((n,), float("nan"))
        return Batch(
            dense=rows["dense"],
            sparse=sparse,
            scenario=rows["scenario"],
            click=rows["click"],
            watch_ms=nan,
            duration_ms=nan.clone(),
            user_id=rows["user"],
            day=torch.zeros(n, dtype=torch.long),
        )

    def batch(self, n: int, generator: torch.Generator) -> Batch:
        """A batch of n rows drawn with ``generator``."""
        return self.make_batch(self.rows(n, generator))


@pytest.fixture
def synthetic() -> SyntheticClicks:
    return SyntheticClicks()


@pytest.fixture(params=MODEL_NAMES)
def model_name(request) -> str:
    """Each model name in turn."""
    return request.param
