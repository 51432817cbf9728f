import dataclasses

import pytest

from protorec.pipeline.config import ConfigError, from_dict, to_dict
from protorec.pipeline.job_config import CONFIG_DIR, ProtorecConfig, load_config


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path):
    cfg = load_config(path)
    assert from_dict(ProtorecConfig, to_dict(cfg)) == cfg


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


BASE = """
data: {dataset: d, scenarios: [0, 1]}
features:
  sparse: [{name: user, column: user_id, num_embeddings: 10}]
"""


def test_unknown_key_names_file_and_path(tmp_path):
    p = _write(tmp_path, BASE + "loader: {batch_size: 8, bach: 3}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: loader\.bach: unknown key"):
        load_config(p)


def test_wrong_type_names_list_index(tmp_path):
    p = _write(tmp_path, BASE.replace("num_embeddings: 10", "num_embeddings: ten"))
    with pytest.raises(ConfigError, match=r"features\.sparse\[0\]\.num_embeddings: expected int"):
        load_config(p)


def test_missing_key(tmp_path):
    p = _write(tmp_path, "data: {scenarios: [0]}\nfeatures: {sparse: []}\n")
    with pytest.raises(ConfigError, match=r"data\.dataset: missing required key"):
        load_config(p)


def test_range_check_reports_section(tmp_path):
    p = _write(tmp_path, BASE.replace("scenarios: [0, 1]", "scenarios: [0, 0]"))
    with pytest.raises(ConfigError, match=r"c\.yaml: data: data\.scenarios has duplicate"):
        load_config(p)


def test_bool_is_not_an_int():
    @dataclasses.dataclass
    class C:
        n: int = 1

    with pytest.raises(ConfigError, match="expected int, got bool"):
        from_dict(C, {"n": True})


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "data: [unclosed\n"))
