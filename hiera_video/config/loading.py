"""Config files and overrides: YAML -> typed dataclasses (named errors for unknown keys and mistyped values),
``section.key=value`` overrides, the shipped recipes, and writing the resolved config back."""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from hiera_video.fileio import atomic_write_text, did_you_mean

from .schema import Config, ConfigError

# --------------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking
# --------------------------------------------------------------------------------------------------------

_NONE_TYPE = type(None)


def _hints(cls: type) -> dict[str, Any]:
    # get_type_hints resolves the string annotations that `from __future__ import annotations` produces.
    return typing.get_type_hints(cls)


def _suggest(key: str, valid: list[str]) -> str:
    return did_you_mean(key, valid)


def _unknown_key(key: str, near: str, valid: list[str]) -> ConfigError:
    """The error for an unknown key: the key as written, close matches of ``near`` and the valid keys."""
    return ConfigError(f"unknown config key '{key}'{_suggest(near, valid)}; valid keys: {', '.join(valid)}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(inner)}"
    if origin is dict:
        return "mapping"
    if tp is _NONE_TYPE:
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to the annotated type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and _NONE_TYPE in args:
            return None
        errors = []
        for arg in args:
            if arg is _NONE_TYPE:
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, key)
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        # bool is an int subclass in Python; `epochs: true` is a typo, not 1.
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept it for floats.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover - a bug in this file


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) dict; missing fields keep their defaults."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            valid = [f"{prefix}.{n}" if prefix else n for n in names]
            raise _unknown_key(full, full, valid)
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a :class:`Config` from a nested dict (e.g. a parsed YAML file), checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    return _from_dict(Config, data)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-python dict of a config (tuples become lists so YAML stays portable)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    """Parse an override's right-hand side as YAML (``1e-3``, ``true``, ``[1,2]``, ``null``)."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text  # not YAML: keep it as a plain string


def _field_type(cfg: Any, parts: list[str], key: str) -> tuple[Any, Any]:
    """Walk ``parts[:-1]`` from ``cfg``; return (parent object, annotated type of the last part)."""
    obj = cfg
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        if isinstance(obj, dict):
            if depth == len(parts) - 1:
                return obj, Any
            obj = obj.setdefault(part, {})
            continue
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"unknown config key '{key}': '{prefix}' is not a section")
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            valid = [f"{prefix}.{n}" if prefix else n for n in names]
            full = ".".join(parts[: depth + 1])
            raise _unknown_key(key, full, valid)
        tp = _hints(type(obj))[part]
        if depth == len(parts) - 1:
            return obj, tp
        child = getattr(obj, part)
        if child is None:
            # An optional section that is off (e.g. data.synthetic): turning one field on creates it.
            inner = [a for a in typing.get_args(tp) if a is not _NONE_TYPE]
            if inner and dataclasses.is_dataclass(inner[0]):
                child = inner[0]()
                setattr(obj, part, child)
            else:
                section = ".".join(parts[: depth + 1])
                raise ConfigError(f"unknown config key '{key}': '{section}' is not a section")
        obj = child
    raise ConfigError(f"empty config key in override '{key}'")  # pragma: no cover


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied (types checked)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-3)")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: malformed key {key!r}")
        parent, tp = _field_type(cfg, parts, key)
        # String fields keep the raw text ("001" stays "001"); everything else is parsed as YAML.
        raw: Any = text if tp is str else _parse_value(text)
        if isinstance(parent, dict):
            parent[parts[-1]] = raw
        else:
            setattr(parent, parts[-1], _coerce(raw, tp, key))
    return cfg


def update_config(cfg: Config, values: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with Python values set by dotted key (``{"data.num_frames": 8}``), types checked.

    The programmatic twin of :func:`apply_overrides` (whose values are text): used where settings arrive
    as Python objects (keyword arguments, parsed command-line flags).
    """
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *sections, name = key.split(".")
        node = nested
        for part in sections:
            node = node.setdefault(part, {})
        node[name] = list(value) if isinstance(value, tuple) else value
    return config_from_dict(_deep_merge(config_to_dict(cfg), nested))


# --------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------

_PACKAGE_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def list_configs() -> list[str]:
    """Names of the configs shipped with the package (``hiera_video/configs/*.yaml``)."""
    return sorted(p.stem for p in _PACKAGE_CONFIGS.glob("*.yaml"))


def find_config(name_or_path: str | os.PathLike[str]) -> Path:
    """Resolve a config file: an existing path, else a shipped config name (with or without ``.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    shipped = _PACKAGE_CONFIGS / f"{stem}.yaml"
    if shipped.is_file():
        return shipped
    shipped_names = list_configs()
    prefixed = [n for n in shipped_names if n.startswith(stem)]
    hint = _suggest(stem, shipped_names)
    if prefixed:
        hint = f" (did you mean {' or '.join(map(repr, prefixed))}?)"
    raise ConfigError(
        f"config {str(name_or_path)!r} not found (neither a file nor a shipped config){hint}; "
        f"shipped configs: {', '.join(shipped_names)}"
    )


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, following ``base:`` (relative to the file, or a shipped name)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} includes itself through 'base:'")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = path.parent / str(base)
    base_path = base_path if base_path.is_file() else find_config(str(base))
    return _deep_merge(_read_yaml(base_path, (*seen, path)), data)


def load_config(
    name_or_path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    defaults: Config | None = None,
) -> Config:
    """Defaults, then the YAML file (if any), then overrides. Raises :class:`ConfigError` on any problem."""
    base = defaults if defaults is not None else Config()
    data = config_to_dict(base)
    if name_or_path is not None:
        data = _deep_merge(data, _read_yaml(find_config(name_or_path)))
    cfg = config_from_dict(data)
    return apply_overrides(cfg, list(overrides or []))


def save_config(cfg: Config, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML (atomically, so a crash never leaves half a file)."""
    return atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None))


