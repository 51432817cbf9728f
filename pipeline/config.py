"""Typed YAML configuration: dataclasses checked at load, errors that name the file and key.

Every section of a protorec config is a dataclass. :func:`from_dict` builds one from the
``yaml.safe_load`` output, recursively, and rejects unknown keys, missing keys and wrong
types with a :class:`ConfigError` that names the file and the dotted key path
(``configs/sim.yaml: model.mmoe.num_experts: expected int, got str 'eight'``).
Dataclasses check their own value ranges in ``__post_init__`` by raising ``ValueError``;
the loader re-raises those with the key path too.

The section dataclasses live beside the code they configure (``models/features.py``,
``models/config.py``, ...); this module only holds the mechanism, and
``pipeline/job_config.py`` the top-level ``ProtorecConfig``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, mistyped or out of range."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and build nested dataclasses."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, source, key)
            except ConfigError as exc:
                errors.append(str(exc).rsplit(": ", 1)[-1])
        raise ConfigError(source, key, " or ".join(errors))
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(source, key, f"expected one of {list(allowed)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(source, key, f"expected a list, got {_describe(value)}")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_convert(item_tp, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {_describe(value)}")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {
            _convert(key_tp, k, source, f"{key}.{k}"): _convert(val_tp, v, source, f"{key}.{k}")
            for k, v in value.items()
        }
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source=source, key=key)
    if tp is float:
        # YAML reads "1e-3" as a string and "1" as an int: accept ints for floats.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, key, f"expected float, got {_describe(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected int, got {_describe(value)}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(source, key, f"expected {tp.__name__}, got {_describe(value)}")
        return value
    raise TypeError(f"config type {tp!r} at {key} is not supported by the loader")


def from_dict(cls: type[T], data: Any, source: str = "<dict>", key: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping, checking keys and types recursively.

    >>> @dataclasses.dataclass
    ... class Opt:
    ...     lr: float = 0.01
    ...     name: str = "adam"
    >>> from_dict(Opt, {"lr": 1})
    Opt(lr=1.0, name='adam')
    >>> try:
    ...     from_dict(Opt, {"lr": "fast"}, source="a.yaml", key="train.opt")
    ... except ConfigError as exc:
    ...     print(exc)
    a.yaml: train.opt.lr: expected float, got str 'fast'
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, key, f"expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{key}." if key else ""
        raise ConfigError(
            source, f"{prefix}{unknown[0]}", f"unknown key (known keys: {', '.join(fields)})"
        )
    kwargs = {}
    for name, field in fields.items():
        path = f"{key}.{name}" if key else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], source, path)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(source, path, "missing required key")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(source, key or "<top>", str(exc)) from None


def to_dict(obj: Any) -> Any:
    """Plain YAML-ready data from a config dataclass (the inverse of :func:`from_dict`)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read ``path`` with ``yaml.safe_load`` and build ``cls`` from it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"not valid YAML: {exc}") from None
    return from_dict(cls, data, source=str(path))
