"""Named model variants and ``--set key.path=value`` overrides of a protorec config.

A variant is a set of dotted overrides of the config (``model.name``, the DistProto
ablation switches, the watch-time head), so that ``protorec compare`` and ``protorec
train`` name the papers' models and Table 2's ablations by one word. Overrides are
applied to the config's plain data and the whole config is built again with
:func:`protorec.pipeline.config.from_dict`, so an override is checked exactly like the
YAML: an unknown key, a wrong type or an out-of-range value is a :class:`ConfigError`
naming the key.

>>> from protorec.pipeline.job_config import load_config
>>> cfg = variant_config(load_config("simulator"), "gpdnet")
>>> cfg.model.name, cfg.model.distproto.gpd
('distproto', True)
>>> apply_overrides(cfg, [parse_override("train.seed=3")]).train.seed
3
>>> apply_overrides(cfg, {"model.mmoe.num_expert": 4})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
protorec.pipeline.config.ConfigError: --set: model.mmoe.num_expert: unknown key (known ...
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from protorec.pipeline.config import ConfigError, from_dict, to_dict
from protorec.pipeline.job_config import ProtorecConfig

_EXPONENT_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")

# DistProto's ablations (DistProto paper, Table 2) switch one thing off the plain model;
# gpd is set explicitly so that a config file with gpd on cannot turn them into GPD-Net.
_DISTPROTO = {"model.name": "distproto", "model.distproto.gpd": False}
_PROWTP = {"model.watch.head": "prowtp"}

#: Variant name -> dotted overrides of the config.
VARIANTS: dict[str, dict[str, Any]] = {
    "shared_bottom": {"model.name": "shared_bottom"},
    "mmoe": {"model.name": "mmoe"},
    "ple": {"model.name": "ple"},
    "star": {"model.name": "star"},
    "distproto": dict(_DISTPROTO),
    "gpdnet": {**_DISTPROTO, "model.distproto.gpd": True},
    "distproto_single_encoder": {**_DISTPROTO, "model.distproto.extractor": "single"},
    "distproto_no_scenario_prototypes": {
        **_DISTPROTO,
        "model.distproto.scenario_prototypes": False,
    },
    "distproto_no_orthogonality": {**_DISTPROTO, "model.distproto.orthogonality": False},
    "distproto_balanced_ot": {**_DISTPROTO, "model.distproto.ot.balanced": True},
    # How the prototypes reach the prediction (models/distproto.py, tower_input).
    "distproto_prototype_towers": {**_DISTPROTO, "model.distproto.tower_input": "prototypes"},
    "distproto_encoding_towers": {**_DISTPROTO, "model.distproto.tower_input": "encodings"},
    # Gates per (task, scenario), DistProto's "experts gated by scenario"; the default is
    # one gate per task (docs/results/simulator.md).
    "mmoe_scenario_gates": {"model.name": "mmoe", "model.mmoe.scenario_gates": True},
    "distproto_scenario_gates": {**_DISTPROTO, "model.mmoe.scenario_gates": True},
    # Watch-time heads (ProWTP and its baselines) on the config's backbone, and the
    # no-training yardstick duration x mean watch ratio.
    **{
        head: {"model.watch.head": head}
        for head in ("tr", "wlr", "d2q", "tpm", "prowtp", "mean_ratio")
    },
    # The heads that regress a target, on the watch ratio (times the row's duration).
    "tr_ratio": {"model.watch.head": "tr", "model.watch.target": "ratio"},
    "prowtp_ratio": {**_PROWTP, "model.watch.target": "ratio"},
    # ProWTP's ablations (ProWTP paper, Table 2), each off the config's ProWTP.
    "prowtp_no_hvqvae": {**_PROWTP, "model.watch.prowtp.prototype_source": "random"},
    "prowtp_no_assign": {**_PROWTP, "model.watch.prowtp.assign_weight": 0.0},
    # "w/o L_compact" removes it on top of L_assign, as the paper's Table 2 does.
    "prowtp_no_compact": {
        **_PROWTP,
        "model.watch.prowtp.assign_weight": 0.0,
        "model.watch.prowtp.compact_weight": 0.0,
    },
    # The transport (ProWTP paper, Table 4): entropic UOT and balanced OT instead of SUOT.
    "prowtp_uot": {**_PROWTP, "model.watch.prowtp.transport": "entropic"},
    "prowtp_ot": {
        **_PROWTP,
        "model.watch.prowtp.transport": "entropic",
        "model.watch.prowtp.entropic.balanced": True,
    },
    # "w/o SUOT": no plan at all; g learns from the mixture of the inference path alone.
    "prowtp_no_suot": {
        **_PROWTP,
        "model.watch.prowtp.assign_weight": 0.0,
        "model.watch.prowtp.compact_weight": 0.0,
        "model.watch.prowtp.task_weight": 0.0,
    },
}


def parse_override(text: str) -> tuple[str, Any]:
    """``"key.path=value"`` -> ``("key.path", value)``, the value read as YAML.

    >>> parse_override("model.mmoe.expert_hidden=[64, 32]")
    ('model.mmoe.expert_hidden', [64, 32])
    >>> parse_override("model.distproto.gpd=true")
    ('model.distproto.gpd', True)
    >>> parse_override("train.dense_lr=3e-4")
    ('train.dense_lr', 0.0003)
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError("--set", text, "expected key.path=value (the value is YAML)")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError("--set", key, f"value {raw!r} is not valid YAML: {exc}") from None
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        # YAML 1.1 reads 3e-4 (no dot) as a string; on a command line it means a number.
        value = float(value)
    return key, value


def apply_overrides(
    config: ProtorecConfig,
    overrides: Mapping[str, Any] | Iterable[tuple[str, Any]],
    source: str = "--set",
) -> ProtorecConfig:
    """``config`` with each dotted key set to its value, validated again as a whole.

    Args:
        config: the config to start from (left unchanged).
        overrides: ``{"model.name": "ple", ...}`` or ``(key, value)`` pairs, in order.
        source: what the error messages name as the origin of the overrides.

    Raises:
        ConfigError: naming the key, when a key does not exist, or the value has the wrong
            type or is out of range.
    """
    pairs = overrides.items() if isinstance(overrides, Mapping) else overrides
    data = to_dict(config)
    for key, value in pairs:
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            # A missing section is created here and reported by from_dict as an unknown key
            # with the list of known ones; a leaf value cannot be descended into.
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(source, key, f"{where} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return from_dict(ProtorecConfig, data, source=source)


def variant_config(config: ProtorecConfig, name: str) -> ProtorecConfig:
    """``config`` turned into the variant ``name`` (see :data:`VARIANTS`).

    >>> from protorec.pipeline.job_config import load_config
    >>> variant_config(load_config("simulator"), "deepfm")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    protorec.pipeline.config.ConfigError: model variants: deepfm: unknown variant (known: ...
    """
    if name not in VARIANTS:
        raise ConfigError("model variants", name, f"unknown variant (known: {', '.join(VARIANTS)})")
    return apply_overrides(config, VARIANTS[name], source=f"variant {name}")
