"""Model variants and ``--set`` overrides: validated like the YAML, errors name the key."""

import pytest

from protorec.pipeline.compare import config_differences
from protorec.pipeline.config import ConfigError, to_dict
from protorec.pipeline.job_config import load_config
from protorec.pipeline.variants import VARIANTS, apply_overrides, parse_override, variant_config

WATCH_HEADS = ("tr", "wlr", "d2q", "tpm", "prowtp", "mean_ratio")
WATCH_VARIANTS = {
    "tr_ratio": "tr",
    "prowtp_ratio": "prowtp",
    "prowtp_no_hvqvae": "prowtp",
    "prowtp_no_assign": "prowtp",
    "prowtp_no_compact": "prowtp",
    "prowtp_no_suot": "prowtp",
    "prowtp_uot": "prowtp",
    "prowtp_ot": "prowtp",
}
ABLATIONS = {
    "distproto_single_encoder": "model.distproto.extractor",
    "distproto_no_scenario_prototypes": "model.distproto.scenario_prototypes",
    "distproto_no_orthogonality": "model.distproto.orthogonality",
    "distproto_balanced_ot": "model.distproto.ot.balanced",
    "distproto_prototype_towers": "model.distproto.tower_input",
    "distproto_encoding_towers": "model.distproto.tower_input",
    "distproto_scenario_gates": "model.mmoe.scenario_gates",
}


@pytest.fixture(scope="module")
def base():
    return load_config("simulator")


@pytest.mark.parametrize(
    "name", [v for v in VARIANTS if v not in WATCH_HEADS and v not in WATCH_VARIANTS]
)
def test_every_click_variant_builds_a_valid_config(base, name):
    config = variant_config(base, name)
    distproto = name.startswith("distproto") or name == "gpdnet"
    expected = "distproto" if distproto else name.removesuffix("_scenario_gates")
    assert config.model.name == expected
    assert config.model.distproto.gpd == (name == "gpdnet")


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_each_ablation_changes_one_switch_of_distproto(base, ablation):
    plain = to_dict(variant_config(base, "distproto"))
    assert config_differences(plain, to_dict(variant_config(base, ablation))) == [
        ABLATIONS[ablation]
    ]


def test_mmoe_scenario_gates_changes_one_switch_of_mmoe(base):
    plain = to_dict(variant_config(base, "mmoe"))
    gated = to_dict(variant_config(base, "mmoe_scenario_gates"))
    assert config_differences(plain, gated) == ["model.mmoe.scenario_gates"]


@pytest.mark.parametrize("head", WATCH_HEADS)
def test_watch_variants_set_the_head_or_name_the_missing_section(base, head):
    try:
        config = variant_config(base, head)
    except ConfigError as exc:  # until the model config has a watch section
        assert "model.watch" in str(exc)
    else:
        assert config.model.watch.head == head


@pytest.mark.parametrize("name", sorted(WATCH_VARIANTS))
def test_watch_variants_build_on_the_watch_config(name):
    config = variant_config(load_config("kuairand_watch"), name)
    assert config.model.watch.head == WATCH_VARIANTS[name]
    prowtp = config.model.watch.prowtp
    assert (config.model.watch.target == "ratio") == name.endswith("_ratio")
    assert (prowtp.prototype_source == "random") == (name == "prowtp_no_hvqvae")
    if name in ("prowtp_no_assign", "prowtp_no_compact", "prowtp_no_suot"):
        assert prowtp.assign_weight == 0.0
    assert (prowtp.task_weight == 0.0) == (name == "prowtp_no_suot")
    assert (prowtp.transport == "entropic") == (name in ("prowtp_uot", "prowtp_ot"))
    assert prowtp.entropic.balanced == (name == "prowtp_ot")


def test_overrides_parse_yaml_values_and_leave_the_input_alone(base):
    pairs = [
        parse_override(t)
        for t in (
            "model.mmoe.expert_hidden=[32, 16]",
            "train.dense_lr=3e-4",
            "train.seed=7",
            "model.distproto.ot.balanced=true",
            "model.name=ple",
        )
    ]
    config = apply_overrides(base, pairs)
    assert config.model.mmoe.expert_hidden == [32, 16]
    assert config.train.dense_lr == pytest.approx(3e-4)
    assert (config.train.seed, config.model.distproto.ot.balanced) == (7, True)
    assert config.model.name == "ple" and base.model.name == "mmoe"


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.mmoe.num_expert=4", "model.mmoe.num_expert"),  # unknown leaf
        ("model.nosuch.x=1", "model.nosuch"),  # unknown section
        ("train.seed=seven", "train.seed"),  # wrong type
        ("train.seed.x=1", "train.seed.x"),  # a value is not a section
        ("model.name=deepfm", "model.name"),  # not a choice
    ],
)
def test_a_bad_override_is_a_config_error_naming_the_key(base, override, key):
    with pytest.raises(ConfigError) as info:
        apply_overrides(base, [parse_override(override)])
    assert f"--set: {key}:" in str(info.value)


def test_an_out_of_range_override_names_its_section(base):
    with pytest.raises(ConfigError, match="model.mmoe: num_experts must be >= 1"):
        apply_overrides(base, {"model.mmoe.num_experts": 0})


def test_malformed_override_and_unknown_variant_are_config_errors(base):
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_override("train.seed")
    with pytest.raises(ConfigError, match="deepfm: unknown variant"):
        variant_config(base, "deepfm")
