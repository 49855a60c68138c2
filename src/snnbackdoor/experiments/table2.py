"""`kind: table2`: the attack x defense matrix of BadSNN Table 2 (docs/methods.md 1.6, 2, 3).

Every attack named in `attacks` is a registered attack (`registry.get("attack", name)`),
run once with its own `AttackSetup` (resumable stages in `attacks/<name>/`) and handed, as
an `AttackOutcome` (model at its deployed neuron config + trigger), to every registered
repair in `defenses` and every registered detector in `detectors`. Each (attack, defense)
and (attack, detector) cell is its own stage, so an interrupted run resumes at the first
unfinished cell and an attack whose cells are all done is not even loaded. The runner knows
no method by name; `report.table2.render_table2` writes `table.csv`, `detection.csv`,
`report.md` and `figures/table2_asr.png` from the run directory.

Nothing here picks a setting: the test split only measures. Defenses choose their own
settings on the defender's clean subset and the validation split (see each defense's
docstring); an attack that chooses (BadSNN's attack config) does so on the validation split.

The defender's clean subset is `defender_fraction` of the clean training split, drawn by
seed (stratified by class), disjoint from the samples the attack poisoned. It is taken in the
order of one seeded permutation for every attack, so the subsets of different attacks differ
only where an attack poisoned a sample another did not.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..attacks.base import AttackOutcome, AttackSetup, measure
from ..attacks.poisoning import apply_in_batches
from ..config import ConfigError, parse_dataclass, to_dict
from ..data.bundle import DatasetBundle, Split
from ..defenses.base import Repaired
from ..detectors.scoring import Scores, detection_report
from ..io import read_json
from ..models.registry import build_model
from ..registry import Component, get, names, unknown_name_message
from ..rundir import RunDir
from ..training import TrainConfig
from ..util import resolve_device
from .base import (
    ExperimentConfig,
    dataset_from_config,
    model_spec,
    model_warning,
    register_experiment,
    train_clean,
    warnings_of,
)

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
                                             "defense_options", "detector_options")
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

    def method_options(self, kind: str, name: str) -> Any:
        """The parsed options of defense or detector `name`: its options dataclass, or the
        raw mapping ({} when the config gives none) when it declares no dataclass. With
        `train.progress` off (`--quiet`), its bars are off too (a copy; the config stays)."""
        options = self._method_options.get((kind, name), {})
        if not self.train.progress and getattr(options, "progress", False) is True:
            return replace(options, progress=False)
        return options


def _check_names(what: str, given, known) -> None:
    for name in given:
        if name not in known:
            raise ValueError(unknown_name_message(what, name, known))


# --------------------------------------------------------------------------- pieces


def defender_index(
    y: torch.Tensor, fraction: float, seed: int, exclude: torch.Tensor | list | None = None
) -> torch.Tensor:
    """The defender's clean subset: `round(fraction * n_c)` (at least 1) samples of every
    class c, never an index in `exclude`, taken in the order of one seeded permutation."""
    y = torch.as_tensor(y).cpu()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(seed) + 104729))
    allowed = torch.ones(len(y), dtype=torch.bool)
    if exclude is not None and len(exclude):
        allowed[torch.as_tensor(exclude, dtype=torch.long).cpu()] = False
    chosen = []
    for label in y.unique():
        wanted = max(1, int(round(fraction * int((y == label).sum()))))
        members = order[(y[order] == label) & allowed[order]]
        chosen.append(members[:wanted])
    return torch.cat(chosen).sort().values


def _detection_inputs(data: DatasetBundle, outcome: AttackOutcome, count: int, seed: int):
    """Clean test inputs and triggered non-target test inputs (at most `count` each)."""
    test = data.test
    generator = torch.Generator().manual_seed(int(seed) + 15485863)

    def pick(index: torch.Tensor) -> torch.Tensor:
        if count and len(index) > count:
            index = index[torch.randperm(len(index), generator=generator)[:count]].sort().values
        return index.to(test.y.device)

    clean = test.floats(pick(torch.arange(len(test))))
    non_target = torch.nonzero(test.y.cpu() != outcome.target).flatten()
    triggered = apply_in_batches(outcome.trigger, test.floats(pick(non_target)))
    return clean, triggered


def _scalars(info: dict | None) -> dict:
    """The JSON-sized part of an attack's, defense's or detector's report (numbers, strings,
    flags)."""
    out = {}
    for key, value in (info or {}).items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = value
    return out


class _LazyAttack:
    """An attack run on first use (cells already done never load it)."""

    def __init__(self, name: str, plan: AttackPlan, setup: AttackSetup, run: RunDir,
                 fraction: float) -> None:
        self.name, self.plan, self.setup, self.run, self.fraction = (
            name, plan, setup, run, fraction)
        self._outcome: AttackOutcome | None = None
        self._defender: Split | None = None

    def outcome(self) -> AttackOutcome:
        if self._outcome is None:
            outcome = self.plan.component.obj(self.setup, self.plan.options)
            if not isinstance(outcome, AttackOutcome):
                raise TypeError(f"attack {self.name!r} returned {type(outcome).__name__}, "
                                "not an AttackOutcome")
            if int(outcome.target) != int(self.setup.target):
                raise ValueError(f"attack {self.name!r} attacked target {outcome.target}, but "
                                 f"the matrix's target is {self.setup.target}")
            outcome.model.eval()
            self._outcome = outcome
            data = self.setup.data
            warning = model_warning(f"{self.name} model", outcome.model, data.test,
                                    data.info.num_classes)
            self.run.stage(f"attack/{self.name}", lambda: {
                "warning": warning,
                **_scalars(outcome.info),
                "test": outcome.info.get("test"),
                "poisoned_count": len(outcome.poisoned_index),
                "deployed": outcome.deployed,
            })
        return self._outcome

    def defender(self) -> Split:
        if self._defender is None:
            train = self.setup.data.train
            index = defender_index(train.y, self.fraction, self.setup.seed,
                                   self.outcome().poisoned_index)
            self._defender = train.subset(index)
        return self._defender


def _repair_cell(lazy: _LazyAttack, defense: str, options: Any, data: DatasetBundle,
                 seed: int) -> dict:
    """One (attack, defense) cell: repair a copy (or not, for `none`), then measure."""
    outcome = lazy.outcome()
    model: nn.Module = outcome.model
    info: dict = {}
    if defense != NO_DEFENSE:
        repaired = get("defense", defense).obj(model, lazy.defender(), data.val, options, seed)
        if not isinstance(repaired, Repaired):
            raise TypeError(f"defense {defense!r} returned {type(repaired).__name__}; a "
                            "repair returns defenses.base.Repaired(model, info)")
        model, info = repaired.model, repaired.info
    result = measure(model, data.test, outcome.trigger, outcome.target)
    return {**result, "defense_info": _scalars(info)}


def _detect_cell(lazy: _LazyAttack, detector: str, options: Any, data: DatasetBundle,
                 config: Table2Experiment) -> dict:
    """One (attack, detector) cell on clean and triggered test inputs."""
    outcome = lazy.outcome()
    clean_x, triggered_x = _detection_inputs(data, outcome, config.detection_samples,
                                             config.seed)
    scores = get("detector", detector).obj(outcome.model, lazy.defender(), clean_x,
                                           triggered_x, options, config.seed)
    if not isinstance(scores, Scores):
        raise TypeError(f"detector {detector!r} returned {type(scores).__name__}; a detector "
                        "returns detectors.scoring.Scores")
    return _scalars(detection_report(scores))


def _attack_seconds(run: RunDir, attacks: list[str]) -> dict:
    """Seconds of each attack's own stages (in `attacks/<name>/stages.json`)."""
    seconds = {}
    for attack in attacks:
        path = run.path / "attacks" / attack / "stages.json"
        if path.exists():
            stages = read_json(path, dict, "attack stages file").get("_seconds", {})
            seconds[f"attack_{attack}"] = round(sum(stages.values()), 3)
    return seconds


@register_experiment("table2", Table2Experiment)
def run_table2(config: Table2Experiment, run: RunDir) -> dict:
    """Run every cell of the matrix (resuming finished ones), then render the report."""
    from ..report.table2 import render_table2

    device = resolve_device(config.device)
    defenses = [NO_DEFENSE] + [d for d in config.defenses if d != NO_DEFENSE]
    data = dataset_from_config(config, device)
    if not config.target < data.info.num_classes:
        raise ConfigError(
            f"target {config.target} is not a class of {data.info.name} "
            f"(0..{data.info.num_classes - 1})"
        )
    clean, clean_info = run.model_stage(
        "clean", lambda: train_clean(config, data, device, "clean"), device
    )
    clean.eval()
    spec = model_spec(config.model, data.info)
    total = len(config.attacks) * (len(defenses) + len(config.detectors))
    bar = tqdm(total=total, desc="table2", unit="cell", disable=not config.train.progress)
    table: list[dict] = []
    detection: list[dict] = []
    for attack in config.attacks:
        plan = config.attack_plan(attack)
        setup = AttackSetup(
            data=data, build_model=lambda: build_model(spec).to(device), train=plan.train,
            target=config.target, poison_ratio=config.poison_ratio, seed=config.seed,
            device=device, clean_model=lambda: clean, workdir=run.path / "attacks" / attack,
        )
        lazy = _LazyAttack(attack, plan, setup, run, config.defender_fraction)
        for defense in defenses:
            bar.set_postfix_str(f"{attack} x {defense}")
            stage = f"cell/{attack}/{defense}"
            if not run.done(stage):
                lazy.outcome()  # run (or load) the attack outside the cell's timing
            options = config.method_options("defense", defense)
            result = run.stage(stage, partial(_repair_cell, lazy, defense, options, data,
                                              config.seed))
            table.append({"attack": attack, "defense": defense,
                          **{k: result[k] for k in ("ca", "asr", "ra")}})
            bar.update()
        for detector in config.detectors:
            bar.set_postfix_str(f"{attack} x {detector}")
            stage = f"detect/{attack}/{detector}"
            if not run.done(stage):
                lazy.outcome()
            options = config.method_options("detector", detector)
            result = run.stage(stage, partial(_detect_cell, lazy, detector, options, data,
                                              config))
            detection.append({"attack": attack, "detector": detector,
                              "detection_rate": result.get("detection_rate"),
                              "auroc": result.get("auroc")})
            bar.update()
    bar.close()

    defender_count = len(defender_index(data.train.y, config.defender_fraction, config.seed))
    seconds = {**run.stage_seconds(), **_attack_seconds(run, config.attacks)}
    seconds["total"] = round(sum(seconds.values()), 3)
    attack_warnings = [(run.stages.get(f"attack/{a}") or {}).get("warning")
                       for a in config.attacks]
    metrics = {
        "warnings": warnings_of(
            model_warning("clean model", clean, data.test, data.info.num_classes),
            *attack_warnings),
        "clean_ca": clean_info["test_accuracy"],
        "table": table,
        "detection": detection,
        "attacks": {a: run.stages.get(f"attack/{a}") for a in config.attacks},
        "cells": {k: v for k, v in run.stages.items() if k.startswith(("cell/", "detect/"))},
        "defender": {"fraction": config.defender_fraction, "count": defender_count},
        "seconds": seconds,
    }
    run.write_metrics(metrics)
    render_table2(run.path)
    metrics["report"] = str(run.path / "report.md")
    return metrics


__all__ = [
    "NO_DEFENSE",
    "AttackPlan",
    "Table2Experiment",
    "attack_plan",
    "defender_index",
    "run_table2",
]
