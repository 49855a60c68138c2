"""The matrix's config (`kind: table2`): which attacks, defenses and detectors, and each
one's options, parsed into its registered options dataclass when the config is parsed.
Shared by the runner (`table2.py`) and the cell pieces (`table2_cells.py`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..config import ConfigError, parse_dataclass, to_dict
from ..registry import Component, get, names, unknown_name_message
from ..training import TrainConfig
from .base import ExperimentConfig

NO_DEFENSE = "none"
DEFAULT_DEFENSES = [NO_DEFENSE, "finetune", "clp", "anp", "nad", "tsbd", "fine_pruning"]
DEFAULT_DETECTORS = ["strip", "spectral"]
TRAIN_KEY = "train"  # in attack_options.<attack>: training keys changed for that attack only


@dataclass(frozen=True)
class AttackPlan:
    """One attack as the matrix runs it: the registered component, its parsed options
    (its options dataclass, or the raw mapping when it declares none) and its recipe."""

    component: Component
    options: Any
    train: TrainConfig


def _parse_options(component: Component, raw: dict, where: str) -> Any:
    """`raw` as the component's options dataclass (key-checked), or as is when it has none."""
    if component.options is None:
        return dict(raw)
    return parse_dataclass(component.options, raw, where)


def attack_plan(name: str, train: TrainConfig, raw: dict) -> AttackPlan:
    """Parse `attack_options.<name>`: its `train` key changes the matrix's recipe for this
    attack only (e.g. more epochs for WaNet); the rest are the attack's options."""
    where = f"attack_options.{name}"
    raw = dict(raw)
    override = raw.pop(TRAIN_KEY, None)
    if override:
        if not isinstance(override, dict):
            raise ConfigError(f"{where}.train must be a mapping of training keys")
        train = parse_dataclass(TrainConfig, {**to_dict(train), **override}, f"{where}.train")
    component = get("attack", name)
    return AttackPlan(component, _parse_options(component, raw, where), train)


@dataclass
class Table2Experiment(ExperimentConfig):
    """Attack x defense matrix. `attack_options`, `defense_options` and `detector_options`
    map a registered name to that method's options (checked against its options dataclass
    when the config is parsed). An attack's options may hold `train: {...}`, keys of the
    training recipe to change for that attack only."""

    # A finished matrix may be extended (more attacks, defenses, detectors, options for new
    # ones) and resumed: every cell is its own stage. Changing an existing entry is refused.
    extendable: ClassVar[tuple[str, ...]] = ("attacks", "defenses", "detectors", "attack_options",
                                             "defense_options", "detector_options",
                                             "deviation_notes")
    kind: str = "table2"
    name: str = "table2"
    attacks: list[str] = field(default_factory=list)
    defenses: list[str] = field(default_factory=lambda: list(DEFAULT_DEFENSES))
    detectors: list[str] = field(default_factory=lambda: list(DEFAULT_DETECTORS))
    target: int = 0
    poison_ratio: float = 0.05  # of the whole training split (see attacks.base.AttackSetup)
    defender_fraction: float = 0.05  # of the clean training split
    detection_samples: int = 1000  # clean and triggered test inputs per detector (0: all)
    attack_options: dict = field(default_factory=dict)
    defense_options: dict = field(default_factory=dict)
    detector_options: dict = field(default_factory=dict)
    # why a preset departs from a method's paper setting: {method name: one line}, shown in
    # the report beside the settings that differ (`deviations()` finds them)
    deviation_notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.attacks:
            raise ValueError(f"attacks must name at least one attack; registered: "
                             f"{', '.join(names('attack'))}")
        for key in ("attacks", "defenses", "detectors"):
            listed = getattr(self, key)
            if len(set(listed)) != len(listed):
                raise ValueError(f"{key} lists a name twice: {listed}")
        if self.target < 0:
            raise ValueError(f"target must be a class index >= 0, got {self.target}")
        if not 0.0 <= self.poison_ratio <= 1.0:
            raise ValueError(f"poison_ratio must be in [0, 1], got {self.poison_ratio}")
        if not 0.0 < self.defender_fraction < 1.0:
            raise ValueError(f"defender_fraction must be in (0, 1), got {self.defender_fraction}")
        if self.detection_samples < 0:
            raise ValueError("detection_samples must be >= 0 (0 = every test sample)")
        for key in ("attack_options", "defense_options", "detector_options"):
            for name, value in getattr(self, key).items():
                if not isinstance(value, dict):
                    raise ValueError(f"{key}.{name} must be a mapping of options")
        for name, note in self.deviation_notes.items():
            if not isinstance(note, str):
                raise ValueError(f"deviation_notes.{name} must be one line of text")
        _check_names("attack", self.attacks, names("attack"))
        _check_names("defense", self.defenses, [NO_DEFENSE, *names("defense")])
        _check_names("detector", self.detectors, names("detector"))
        # Options may name methods the run does not list (so `--set attacks=[badnet]` works
        # with a full preset), but every name must exist and every key must parse: a typo
        # fails here, before any training. Parsed once; the fields themselves stay as given.
        _check_names("attack in attack_options", self.attack_options, names("attack"))
        _check_names("defense_options", self.defense_options, names("defense"))
        _check_names("detector_options", self.detector_options, names("detector"))
        self._plans = {name: attack_plan(name, self.train, self.attack_options.get(name, {}))
                       for name in dict.fromkeys([*self.attacks, *self.attack_options])}
        self._method_options = {}
        for kind, listed, given in (
            ("defense", [d for d in self.defenses if d != NO_DEFENSE], self.defense_options),
            ("detector", self.detectors, self.detector_options),
        ):
            for name in dict.fromkeys([*listed, *given]):
                self._method_options[kind, name] = _parse_options(
                    get(kind, name), given.get(name, {}), f"{kind}_options.{name}")

    def attack_plan(self, name: str) -> AttackPlan:
        """The parsed plan of attack `name` (component, options, recipe)."""
        return self._plans[name]

    def deviations(self) -> dict[str, dict[str, dict]]:
        """Every setting the config gives a listed method that differs from the method's
        default (its paper's setting): {method: {key: {"value": given, "default": default}}};
        an attack's `train` keys are compared with the matrix's own recipe."""
        out: dict[str, dict[str, dict]] = {}
        given = [(name, self.attack_options.get(name, {}), self._plans[name].options)
                 for name in self.attacks]
        given += [(name, self.defense_options.get(name, {}),
                   self._method_options.get(("defense", name)))
                  for name in self.defenses if name != NO_DEFENSE]
        given += [(name, self.detector_options.get(name, {}),
                   self._method_options.get(("detector", name))) for name in self.detectors]
        for name, raw, parsed in given:
            changed = {}
            defaults = _defaults(parsed)
            for key, value in raw.items():
                if key == TRAIN_KEY and isinstance(value, dict):
                    base = to_dict(self.train)
                    changed.update({f"train.{k}": {"value": v, "default": base.get(k)}
                                    for k, v in value.items() if base.get(k) != v})
                elif key in defaults and key != "progress":
                    default = defaults[key]
                    if dataclasses.is_dataclass(default) and isinstance(value, dict):
                        base = to_dict(default)
                        changed.update({f"{key}.{k}": {"value": v, "default": base.get(k)}
                                        for k, v in value.items() if not _same(base.get(k), v)})
                    elif not _same(default, value):
                        changed[key] = {"value": value, "default": default}
            if changed:
                out[name] = changed
        return out

    def method_options(self, kind: str, name: str) -> Any:
        """The parsed options of defense or detector `name`: its options dataclass, or the
        raw mapping ({} when the config gives none) when it declares no dataclass. With
        `train.progress` off (`--quiet`), its bars are off too (a copy; the config stays)."""
        options = self._method_options.get((kind, name), {})
        if not self.train.progress and getattr(options, "progress", False) is True:
            return replace(options, progress=False)
        return options


def _defaults(options: Any) -> dict:
    """The default of every field of an options dataclass (lists for tuples, as YAML)."""
    if not dataclasses.is_dataclass(options):
        return {}
    out = {}
    for f in dataclasses.fields(options):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal, floats to 6 significant digits (a YAML 0.0313725 is the default 8/255)."""
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-5)
        except (TypeError, ValueError):
            return False
    return a == b


def _check_names(what: str, given, known) -> None:
    for name in given:
        if name not in known:
            raise ValueError(unknown_name_message(what, name, known))
