"""One typed configuration loader for every stage, model and training run.

Settings are (nested) dataclasses; this module fills them from a YAML file plus dotted
``key=value`` command-line overrides. A file may extend another (``base: other.yaml``)
and state only what changes. Unknown keys and values of the wrong type are errors that
name the key and the file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message says where and why."""


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into ``{"a": {"b": 1}, "c": "x"}``.

    Values are parsed as YAML scalars/flow collections, so ``0.7`` is a float,
    ``true`` a bool, ``[2048,8192]`` a list and ``null`` None.
    """
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
            node = child
        node[parts[-1]] = value
    return tree


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (update wins)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# Top-level folders whose files the installed package carries: a relative `configs/...` or
# `pipeline/assets/...` path that does not exist under the working directory is read from the
# installed copy, so the defaults work from any directory and after a non-editable install.
SHIPPED_PACKAGES = ("configs", "pipeline")


def shipped_path(path: str | Path) -> Path:
    """``path`` when it exists (a user's own file always wins) or is absolute; else, for a
    relative path under one of ``SHIPPED_PACKAGES``, the installed copy when there is one;
    else ``path`` unchanged, for the caller's error to name."""
    path = Path(path)
    if path.is_absolute() or path.exists() or len(path.parts) < 2 or path.parts[0] not in SHIPPED_PACKAGES:
        return path
    try:
        root = importlib.resources.files(path.parts[0])
    except ModuleNotFoundError:
        return path
    installed = Path(str(root.joinpath("/".join(path.parts[1:]))))
    return installed if installed.exists() else path


BASE_KEY = "base"  # a config file may extend another: `base: slimpajama.yaml` + the keys that change


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping; with a ``base:`` key, the base file (relative to this one) merged
    under this file's keys, recursively. A shipped default (``configs/...``) is found from any
    directory (``shipped_path``)."""
    path = shipped_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        where = f" (the base of {_chain[-1]})" if _chain else ""
        raise ConfigError(f"config file {path} does not exist{where}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: key {BASE_KEY!r} expects a file name, got {type(base).__name__} {base!r}")
    base_path = path.parent / base
    if base_path.resolve() in {p.resolve() for p in (*_chain, path)}:
        raise ConfigError(f"{path}: {BASE_KEY} {base!r} makes a cycle")
    return merge(read_yaml(base_path, (*_chain, path)), data)


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] | dict[str, Any] = (),
) -> T:
    """Build ``cls`` from a YAML file (optional) and overrides, checking keys and types."""
    data = read_yaml(path) if path is not None else {}
    origin = str(path) if path is not None else "<defaults>"
    if overrides:
        override_tree = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        data = merge(data, override_tree)
        origin = f"{origin} (with command-line overrides)"
    return from_dict(cls, data, origin)


def from_dict(cls: type[T], data: dict[str, Any], origin: str = "<dict>", prefix: str = "") -> T:
    """Construct dataclass ``cls`` from a mapping, validating every key and value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: {prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{origin}: unknown key {prefix + unknown[0]!r} (known keys here: {known})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, origin, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{origin}: {prefix.rstrip('.') or cls.__name__}: {exc}") from None
    except ValueError as exc:  # __post_init__ validation
        raise ConfigError(f"{origin}: {prefix.rstrip('.') or cls.__name__}: {exc}") from None


def _coerce(tp: Any, value: Any, origin: str, key: str) -> Any:
    def fail() -> ConfigError:
        return ConfigError(
            f"{origin}: key {key!r} expects {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )

    if tp is Any:
        return value
    origin_tp = get_origin(tp)
    if origin_tp in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, origin, key)
            except ConfigError:
                continue
        raise fail()
    if origin_tp is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{origin}: key {key!r} must be one of {list(get_args(tp))}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if value is None:
            raise fail()
        return from_dict(tp, value, origin, prefix=f"{key}.")
    if origin_tp in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail()
        args = get_args(tp)
        if origin_tp is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise fail()
            return tuple(_coerce(a, v, origin, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, origin, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin_tp is tuple or tp is tuple) else items
    if origin_tp is dict or tp is dict:
        if not isinstance(value, dict):
            raise fail()
        args = get_args(tp)
        key_tp, val_tp = args if args else (Any, Any)
        return {
            _coerce(key_tp, k, origin, f"{key}.{k}"): _coerce(val_tp, v, origin, f"{key}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp in (int, float) and isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        value = float(value)  # PyYAML (YAML 1.1) reads 1e6 as a string, not a number
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # e.g. 1e6 in YAML
            return int(value)
        raise fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise fail()
    return value


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def to_dict(config: Any) -> dict[str, Any]:
    """The resolved configuration as plain data (for manifests and metadata), without the
    fields marked secret (``field(metadata={"secret": True})``: credentials)."""
    return _public(dataclasses.asdict(config), type(config))


def _public(data: Any, tp: Any) -> Any:
    """``data`` (asdict of a ``tp``) with every secret field of ``tp`` and its nested dataclasses dropped."""
    if not (dataclasses.is_dataclass(tp) and isinstance(data, dict)):
        return data
    hints = get_type_hints(tp)
    out = {}
    for f in dataclasses.fields(tp):
        if f.metadata.get("secret") or f.name not in data:
            continue
        out[f.name] = _public(data[f.name], _dataclass_in(hints.get(f.name)))
    return out


def _dataclass_in(tp: Any) -> Any:
    """The dataclass a field holds (also inside Optional[...]), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def to_json(config: Any) -> str:
    """Canonical JSON of a resolved configuration (sorted keys, stable across runs; no secrets)."""
    return json.dumps(to_dict(config), sort_keys=True, separators=(",", ":"))


def stage_cli(
    cls: type[T],
    description: str,
    default_config: str | None,
    argv: Sequence[str] | None = None,
    prog: str | None = None,
) -> tuple[T, argparse.Namespace]:
    """The common command line of every stage: ``--config FILE [key=value ...]``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Any config key can be overridden as key=value; nested keys use dots, "
        "e.g. minhash.threshold=0.7 or filters.default=[short].",
    )
    parser.add_argument("--config", default=default_config, help=f"YAML config (default: {default_config})")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    try:
        config = load_config(cls, args.config, args.overrides)
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: config error: {exc}\n")
    return config, args
