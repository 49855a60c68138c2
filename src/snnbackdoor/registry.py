"""One registry for every kind of component: model, dataset, trigger, attack, defense,
detector and experiment.

A component registers itself next to its code with `@register(kind, name)`. Discovery is
eager: the first lookup imports every built-in package (each imports all of its modules) and
every module named by an entry point of the group `snnbackdoor.plugins`, so every name is
known before any is resolved, and an unknown name gets a did-you-mean over all of them.
It imports only `errors` of the package: every layer may use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from .errors import UserError

KINDS: dict[str, str] = {
    "model": "network bodies, wrapped as SpikingClassifier by build_model",
    "dataset": "loaders returning a DatasetBundle (train / val / test / info)",
    "trigger": "pure trigger transforms (frozen dataclasses called on a batch)",
    "attack": "(AttackSetup, options) -> AttackOutcome",
    "defense": "repairs: (model, defender subset, options, seed, ...) -> Repaired",
    "detector": "input-level: scores per input, never verdicts chosen on attack data",
    "scanner": "model-level detectors: a score and a suspected target class per model",
    "experiment": "config kinds: `kind: <name>` in a YAML config",
}
BUILTIN_PACKAGES = (
    "snnbackdoor.models",
    "snnbackdoor.data",
    "snnbackdoor.triggers",
    "snnbackdoor.attacks",
    "snnbackdoor.defenses",
    "snnbackdoor.detectors",
    "snnbackdoor.experiments",
)
PLUGIN_GROUP = "snnbackdoor.plugins"


class UnknownComponentError(UserError, KeyError, ValueError):
    """A name that no registered component has; the message suggests the closest one."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PluginError(UserError, RuntimeError):
    """A plugin named by the `snnbackdoor.plugins` entry-point group failed to import."""


@dataclass(frozen=True)
class Component:
    """One registered thing: what it is, what it is called, and what it accepts."""

    kind: str
    name: str
    obj: Any
    description: str = ""
    options: type | None = None  # a dataclass of the component's options, when it has some
    meta: Mapping[str, Any] = field(default_factory=dict)

    def option_defaults(self) -> dict:
        """Option name -> default (None when required), for `snnbackdoor list`."""
        if self.options is None or not dataclasses.is_dataclass(self.options):
            return {}
        out = {}
        for f in dataclasses.fields(self.options):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = None
        return out


_TABLE: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
_state = {"discovered": False, "discovering": False}


def _first_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UnknownComponentError(unknown_name_message("component kind", kind, KINDS))


def register(kind: str, name: str, *, options: type | None = None,
             description: str | None = None, **meta: Any) -> Callable[[Any], Any]:
    """Decorator: register `obj` as component `name` of `kind` and return it unchanged.

    `options` is the dataclass of the component's options (checked key by key when a config
    names them); `description` defaults to the first paragraph of the docstring; `meta` holds
    kind-specific facts (a dataset's file layout, a model's native input shape).
    """
    _check_kind(kind)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a {kind} name must be a plain identifier, got {name!r}")

    def decorate(obj: Any) -> Any:
        old = _TABLE[kind].get(name)
        same = old is not None and (
            old.obj is obj or getattr(old.obj, "__qualname__", None) == getattr(
                obj, "__qualname__", 1) and getattr(old.obj, "__module__", None) == getattr(
                obj, "__module__", 2))
        if old is not None and not same:
            raise ValueError(
                f"{kind} {name!r} is registered twice ({_origin(old.obj)} and {_origin(obj)}); "
                "give one of them another name"
            )
        _TABLE[kind][name] = Component(kind, name, obj, description or _first_line(obj),
                                       options, dict(meta))
        return obj

    return decorate


def _origin(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def discover() -> None:
    """Import the built-in packages and every plugin once, so every name is registered."""
    if _state["discovered"] or _state["discovering"]:
        return
    _state["discovering"] = True
    try:
        for package in BUILTIN_PACKAGES:
            importlib.import_module(package)
        for point in entry_points(group=PLUGIN_GROUP):
            try:
                point.load()
            except Exception as err:  # a broken plugin names itself, not a traceback
                raise PluginError(
                    f"plugin {point.name!r} ({point.value}) of the {PLUGIN_GROUP} entry-point "
                    f"group failed to import: {type(err).__name__}: {err}; fix or uninstall it"
                ) from err
        _state["discovered"] = True
    finally:
        _state["discovering"] = False


def unknown_name_message(kind: str, name: str, known) -> str:
    """One line: what was unknown, the closest match, the valid names."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(map(str, known)))}."


def get(kind: str, name: str) -> Component:
    """The component `name` of `kind`; an unknown name fails with a did-you-mean."""
    _check_kind(kind)
    discover()
    table = _TABLE[kind]
    if name in table:
        return table[name]
    label = "experiment kind" if kind == "experiment" else kind
    message = unknown_name_message(label, name, table)
    elsewhere = [k for k, t in _TABLE.items() if k != kind and name in t]
    if elsewhere:
        message += f" ({name!r} is a {elsewhere[0]}, not a {kind}.)"
    raise UnknownComponentError(message)


def lookup(kind: str, name: str) -> Any:
    """The registered object (function or class) of component `name` of `kind`."""
    return get(kind, name).obj


def names(kind: str) -> list[str]:
    """Every registered name of `kind`, sorted."""
    _check_kind(kind)
    discover()
    return sorted(_TABLE[kind])


def components(kind: str | None = None) -> list[Component]:
    """Every registered component (of one kind, or of all), sorted by kind and name."""
    discover()
    kinds = [kind] if kind else list(KINDS)
    for k in kinds:
        _check_kind(k)
    return [_TABLE[k][n] for k in kinds for n in sorted(_TABLE[k])]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def describe(kind: str | None = None) -> dict:
    """{kind: {name: {description, options}}}: what `snnbackdoor list --json` prints."""
    out: dict = {k: {} for k in ([kind] if kind else KINDS)}
    for c in components(kind):
        out[c.kind][c.name] = {"description": c.description,
                               "options": _jsonable(c.option_defaults())}
    return out
