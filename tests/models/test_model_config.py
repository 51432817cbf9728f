"""The model config: the papers' defaults, and errors that say which key is wrong."""

import math

import pytest

from protorec.models.config import ModelConfig
from protorec.pipeline.config import ConfigError, from_dict
from protorec.pipeline.job_config import load_config


def test_defaults_are_the_papers_hyper_parameters():
    cfg = ModelConfig()
    assert cfg.mmoe.num_experts == 8
    assert cfg.distproto.dim == 64
    assert (cfg.distproto.num_global_prototypes, cfg.distproto.num_scenario_prototypes) == (64, 32)
    ot = cfg.distproto.ot
    assert (ot.eps, ot.tau_a, ot.tau_b, ot.reg_type, ot.balanced) == (
        0.05,
        1.0,
        1.0,
        "entropy",
        False,
    )
    assert cfg.distproto.extractor == "mmoe"
    assert cfg.distproto.scenario_prototypes and cfg.distproto.orthogonality
    assert not cfg.distproto.gpd


def test_the_simulator_config_spells_out_the_defaults():
    assert load_config("simulator").model == ModelConfig()


@pytest.mark.parametrize(
    "section, key",
    [
        ({"distproto": {"align_weight": -1.0}}, "model.distproto"),
        ({"distproto": {"ot": {"eps": 0.0}}}, "model.distproto.ot"),
        ({"distproto": {"ot": {"tau_a": math.inf, "tau_b": math.inf}}}, "model.distproto.ot"),
        ({"ple": {"num_shared_experts": 0, "num_scenario_experts": 0}}, "model.ple"),
        ({"star": {"norm_momentum": 1.5}}, "model.star"),
        ({"tower": {"hidden": [0]}}, "model.tower"),
        ({"l2_weight": -0.1}, "model"),
    ],
)
def test_out_of_range_values_name_their_section(section, key):
    with pytest.raises(ConfigError) as err:
        from_dict(ModelConfig, section, source="c.yaml", key="model")
    assert str(err.value).startswith(f"c.yaml: {key}: ")


def test_balanced_ot_with_infinite_taus_is_allowed_only_as_the_ablation():
    cfg = from_dict(
        ModelConfig, {"distproto": {"ot": {"balanced": True, "tau_a": math.inf, "tau_b": math.inf}}}
    )
    assert cfg.distproto.ot.balanced


def test_unknown_keys_and_wrong_types_are_refused():
    with pytest.raises(ConfigError, match="model.distproto.protos: unknown key"):
        from_dict(ModelConfig, {"distproto": {"protos": 3}}, source="c.yaml", key="model")
    with pytest.raises(ConfigError, match="model.distproto.extractor: expected one of"):
        from_dict(ModelConfig, {"distproto": {"extractor": "moe"}}, source="c.yaml", key="model")
