"""Typed YAML configs: dataclasses checked key by key before any work starts.

A misspelt key, a wrong type or an unknown name fails with one line that names the key and
says what to do; `--set a.b=value` overrides are parsed as YAML scalars. YAML is read with a
strict safe loader: no code, no duplicate keys, bounded nesting and size, no self-reference.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

MAX_DEPTH = 32  # nesting of a config value (real configs use 3 or 4 levels)
MAX_NODES = 200_000  # values in a config once aliases are expanded
MAX_CONFIG_BYTES = 1 << 20
MAX_INT = 2**63 - 1  # a config integer must fit an int64
MAX_TEXT = 4096  # characters in one config string


class ConfigError(UserError, ValueError):
    """A config that cannot run: the message names the key and the fix."""


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys and values nested deeper than MAX_DEPTH."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ConfigError(f"a value nested deeper than {MAX_DEPTH} levels at "
                                  f"{_where(self.peek_event().start_mark)}; flatten it")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} at {_where(key_node.start_mark)} (first "
                                  f"at {_where(seen[key])}); keep only one of them")
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line from a PyYAML error: what is wrong and where."""
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    mark = getattr(err, "problem_mark", None)
    text = " ".join(str(problem).split())
    return f"{text} at {_where(mark)}" if mark is not None else text


def check_shape(data: Any, what: str) -> None:
    """Refuse a value that is too deep, too big once aliases expand, or refers to itself."""
    sizes: dict[int, int] = {}

    def size(obj: Any, depth: int, path: tuple[int, ...]) -> int:
        if not isinstance(obj, (dict, list, tuple)):
            if isinstance(obj, str) and len(obj) > MAX_TEXT:
                raise ConfigError(f"{what} holds a string of {len(obj)} characters (more than "
                                  f"{MAX_TEXT}); shorten it")
            return 1
        if id(obj) in path:
            raise ConfigError(f"{what} holds a value that contains itself (a YAML alias "
                              "loop); write the value out")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{what} is nested deeper than {MAX_DEPTH} levels; flatten it")
        if id(obj) not in sizes:
            items = list(obj.keys()) + list(obj.values()) if isinstance(obj, dict) else obj
            total = 1
            for item in items:
                total += size(item, depth + 1, (*path, id(obj)))
                if total > MAX_NODES:
                    raise ConfigError(f"{what} holds more than {MAX_NODES} values (aliases "
                                      "expanded); it is not a config")
            sizes[id(obj)] = total
        return sizes[id(obj)]

    size(data, 0, ())


def load_yaml_text(text: str, what: str) -> Any:
    """Parse YAML text with the strict loader; any problem is one ConfigError naming `what`."""
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as err:
        raise ConfigError(f"{what}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} is not valid YAML: {yaml_problem(err)}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply; flatten it") from None
    check_shape(data, what)
    return data


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _show(value: Any, limit: int = 60) -> str:
    """A value for a message, cut short (a config value may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _convert(value: Any, tp, key: str) -> Any:
    """Check/convert one value against a type hint; raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(tp):
        return parse_dataclass(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, got {_show(value)}")
        (item_type, *_) = typing.get_args(tp) or (Any,)
        items = [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {_show(value)}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r} must be an integer, got {_show(value)}")
        if abs(value) > MAX_INT:
            raise ConfigError(f"config key {key!r} is out of range ({_show(value)})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} must be a number, got {_show(value)}")
        if isinstance(value, int) and abs(value) > MAX_INT or not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be a finite number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} must be a string, got {_show(value)}")
        return value
    raise ConfigError(f"config key {key!r}: unsupported type {_type_name(tp)}")


def parse_dataclass(cls, data: Any, prefix: str = ""):
    """Build dataclass `cls` from a mapping, refusing unknown keys and wrong types."""
    where = prefix or "the config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of keys, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            full = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(
                f"unknown config key {full!r}.{hint} Valid keys here: {', '.join(fields)}."
            )
    kwargs = {
        name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except (ValueError, KeyError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        message = str(err.args[0] if err.args else err)
        named = prefix and (message.startswith(f"{prefix}.") or f" {prefix}." in message)
        raise ConfigError(message if named else f"{where}: {message}") from err


def _key_parts(key: str, what: str) -> list[str]:
    """The parts of a dotted key, each a non-empty name."""
    parts = [part.strip() for part in str(key).strip().split(".")]
    if not all(parts) or len(parts) > MAX_DEPTH:
        raise ConfigError(f"{what}: {key!r} is not a dotted config key; write e.g. train.epochs")
    return parts


def set_key(data: dict, key: str, value: Any) -> None:
    """Set a dotted key (`train.epochs`) in a nested dict, creating sections as needed."""
    node = data
    parts = _key_parts(key, "cannot set a key")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply `key.sub=value` strings (values parsed as YAML) to a nested dict copy."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of keys, got {_show(data)}")
    check_shape(data, "the config")
    data = copy.deepcopy(data)
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"--set expects key=value, got {_show(item)}")
        key, raw = item.split("=", 1)
        what = f"--set {key.strip()}"
        _key_parts(key, what)
        value = load_yaml_text(raw, f"{what} value {_show(raw)}") if raw.strip() else None
        set_key(data, key, value)
    return data


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping from a UTF-8 file; every problem is one ConfigError naming it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; see configs/ for presets")
    if not path.is_file():
        raise ConfigError(f"config {path} is not a file; name a .yaml file (see configs/)")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is {size} bytes, more than a config "
                              f"({MAX_CONFIG_BYTES} bytes at most); is it the right file?")
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {raw[err.start]:#04x} "
                          f"at offset {err.start}); save it as UTF-8") from None
    data = load_yaml_text(text, f"config file {path}")
    if data is None:
        raise ConfigError(f"config file {path} is empty; a config needs at least `kind:` "
                          "and `name:` (see configs/ for presets)")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys at the top level, "
                          f"got {type(data).__name__}")
    return data


def to_dict(config) -> dict:
    """A dataclass config as plain data (for config.yaml in a run directory)."""
    return dataclasses.asdict(config)


def check_range(key: str, value: Any, low: float | None = None, high: float | None = None,
                integer: bool = False, low_open: bool = False) -> None:
    """Refuse `value` for config key `key` unless it is a finite number (an integer when
    `integer`) in [low, high] ((low, high] with `low_open`); for the option checks of every
    component, so each says the same thing the same way."""
    kind = "an integer" if integer else "a number"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or (integer and not isinstance(value, int)) or not math.isfinite(value):
        raise ConfigError(f"config key {key!r} must be {kind}, got {_show(value)}")
    below = value <= low if low_open else value < low if low is not None else False
    if below or (high is not None and value > high):
        bounds = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, " \
                 f"{high if high is not None else 'inf'}]"
        raise ConfigError(f"config key {key!r} must be {kind} in {bounds}, got {_show(value)}")
