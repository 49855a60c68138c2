"""`kind: table2`: the attack x defense matrix of BadSNN Table 2 (docs/methods.md 1.6, 2, 3).

Every attack named in `attacks` is a registered attack (`registry.get("attack", name)`),
run once with its own `AttackSetup` (resumable stages in `attacks/<name>/`) and handed, as
an `AttackOutcome` (model at its deployed neuron config + trigger), to every registered
repair in `defenses` and every registered detector in `detectors`. Each (attack, defense)
and (attack, detector) cell is its own stage, so an interrupted run resumes at the first
unfinished cell and an attack whose cells are all done is not even loaded. The runner knows
no method by name; `report.table2.render_table2` writes `table.csv`, `detection.csv`,
`report.md` and `figures/table2_asr.png` from the run directory.

With an executor other than `local` (`snnbackdoor run --executor ray|slurm`) the same stages
run as tasks in three rounds (the clean model; one per attack; one per cell), each rebuilding
the dataset and models from the config and the run's files (`executors.map_stages`). The
tables are read from the stages in config order, so they do not depend on who ran a cell.

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
from functools import cache, partial
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from ..checkpoint import load_model, save_model
from ..config import ConfigError, parse_dataclass, to_dict
from ..data.bundle import DatasetBundle
from ..executors import (
    Executor,
    LocalExecutor,
    StageCall,
    TaskFailed,
    adopt_stage_files,
    map_stages,
    stage_file,
)
from ..executors.base import TASKS_FILE
from ..registry import Component, get, names, unknown_name_message
from ..rundir import RunDir
from ..training import TrainConfig
from ..util import resolve_device
from .base import (
    ExperimentConfig,
    dataset_from_config,
    model_warning,
    parse_config,
    register_experiment,
    train_clean,
    warnings_of,
)
from .table2_cells import (
    NO_DEFENSE,
    attack_seconds,
    defender_index,
    detect_cell,
    lazy_attack,
    repair_cell,
)

DEFAULT_DEFENSES = [NO_DEFENSE, "finetune", "clp", "anp", "nad", "tsbd", "fine_pruning"]
DEFAULT_DETECTORS = ["strip", "spectral"]
TRAIN_KEY = "train"  # in attack_options.<attack>: training keys changed for that attack only
CLEAN_FILE = "clean.safetensors"  # the clean model (stage `clean`) in the run folder


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


def _run_here(config: Table2Experiment, run: RunDir, data: DatasetBundle, device,
              defenses: list[str]) -> None:
    """Every unfinished stage in this process, cell after cell (attacks loaded once)."""
    clean, _ = run.model_stage(
        "clean", lambda: train_clean(config, data, device, "clean"), device
    )
    clean.eval()
    total = len(config.attacks) * (len(defenses) + len(config.detectors))
    bar = tqdm(total=total, desc="table2", unit="cell", disable=not config.train.progress)
    for attack in config.attacks:
        lazy = lazy_attack(config, attack, data, device, lambda: clean, run.path, run)
        for kind, methods, prefix, cell in (("defense", defenses, "cell", repair_cell),
                                            ("detector", config.detectors, "detect", detect_cell)):
            for method in methods:
                bar.set_postfix_str(f"{attack} x {method}")
                stage = f"{prefix}/{attack}/{method}"
                if not run.done(stage):
                    lazy.outcome()  # run (or load) the attack outside the cell's timing
                options = config.method_options(kind, method)
                run.stage(stage, partial(cell, lazy, method, options, data, config))
                bar.update()
    bar.close()


# Task bodies of `_run_tasks`: top-level, given plain data (the config as a dict, the run
# folder as a string), each rebuilding the dataset and models from them and the run's files.


def _task_data(spec: dict) -> tuple[Table2Experiment, Any, DatasetBundle]:
    config = parse_config(spec)
    device = resolve_device(config.device)
    return config, device, dataset_from_config(config, device)


def _task_attack(spec: dict, attack: str, run_path: str):
    """(config, data, lazy attack) in a task: the clean model is read from the run."""
    config, device, data = _task_data(spec)
    clean = cache(lambda: load_model(Path(run_path) / CLEAN_FILE, device).eval())
    return config, data, lazy_attack(config, attack, data, device, clean, Path(run_path))


def clean_task(spec: dict, run_path: str) -> dict:
    """Train the clean model into `<run>/clean.safetensors`; its stage info."""
    config, device, data = _task_data(spec)
    model, info = train_clean(config, data, device, "clean")
    save_model(model, Path(run_path) / CLEAN_FILE)
    return info


def attack_task(spec: dict, attack: str, run_path: str) -> dict:
    """Train one attack in `<run>/attacks/<name>` (a finished one is reloaded); its summary."""
    return _task_attack(spec, attack, run_path)[2].summary()


def repair_task(spec: dict, attack: str, defense: str, run_path: str) -> dict:
    """One (attack, defense) cell on the attack reloaded from its workdir."""
    config, data, lazy = _task_attack(spec, attack, run_path)
    return repair_cell(lazy, defense, config.method_options("defense", defense), data, config)


def detect_task(spec: dict, attack: str, detector: str, run_path: str) -> dict:
    """One (attack, detector) cell on the attack reloaded from its workdir."""
    config, data, lazy = _task_attack(spec, attack, run_path)
    return detect_cell(lazy, detector, config.method_options("detector", detector), data,
                        config)


def _round(executor: Executor, run: RunDir, calls: dict, desc: str, failures: list) -> set:
    """Compute `calls` as tasks; failures join `failures` and the names of the finished
    stages come back, so the next round goes on without what failed."""
    try:
        map_stages(executor, run, calls, desc)
    except TaskFailed as err:
        failures.extend(err.failed)
    return {name for name in calls if run.done(name)}


def _run_tasks(config: Table2Experiment, run: RunDir, executor: Executor,
               defenses: list[str]) -> None:
    """Every unfinished stage as tasks of `executor`, in rounds: the clean model, one task per
    attacked model, then one per attack x defense and attack x detector cell."""
    spec, path = to_dict(config), str(run.path)
    if run.done("clean") and not (run.path / CLEAN_FILE).exists():  # model gone: train again
        run.stages.pop("clean")
        stage_file(run.path, "clean").unlink(missing_ok=True)
    map_stages(executor, run, {"clean": StageCall(clean_task, (spec, path))}, "clean model")
    failures: list = []
    attacked = _round(executor, run, {f"attack/{a}": StageCall(attack_task, (spec, a, path))
                                      for a in config.attacks}, "attacks", failures)
    cells = {}
    for attack in (a for a in config.attacks if f"attack/{a}" in attacked):
        cells.update({f"cell/{attack}/{d}": StageCall(repair_task, (spec, attack, d, path))
                      for d in defenses})
        cells.update({f"detect/{attack}/{d}": StageCall(detect_task, (spec, attack, d, path))
                      for d in config.detectors})
    _round(executor, run, cells, "cells", failures)
    if failures:
        raise TaskFailed(failures, run.path / "tasks" / TASKS_FILE)


def _tables(config: Table2Experiment, run: RunDir, defenses: list[str]) -> tuple[list, list]:
    """table.csv's and detection.csv's rows, read from the run's stages in config order."""
    table = [{"attack": a, "defense": d,
              **{k: run.stages[f"cell/{a}/{d}"][k] for k in ("ca", "asr", "ra")}}
             for a in config.attacks for d in defenses]
    detection = [{"attack": a, "detector": d,
                  "detection_rate": run.stages[f"detect/{a}/{d}"].get("detection_rate"),
                  "auroc": run.stages[f"detect/{a}/{d}"].get("auroc")}
                 for a in config.attacks for d in config.detectors]
    return table, detection


@register_experiment("table2", Table2Experiment)
def run_table2(config: Table2Experiment, run: RunDir, executor: Executor | None = None) -> dict:
    """Run every cell of the matrix (resuming finished ones, whoever computed them): here in
    order with no executor or the local one, else as tasks of `executor`; then the report."""
    from ..report.table2 import render_table2

    defenses = [NO_DEFENSE] + [d for d in config.defenses if d != NO_DEFENSE]
    tasks = executor is not None and not isinstance(executor, LocalExecutor)
    device = resolve_device(config.device)
    data = dataset_from_config(config, torch.device("cpu") if tasks else device)
    if not config.target < data.info.num_classes:
        raise ConfigError(
            f"target {config.target} is not a class of {data.info.name} "
            f"(0..{data.info.num_classes - 1})"
        )
    cells = [f"{prefix}/{a}/{m}" for a in config.attacks for prefix, methods in
             (("cell", defenses), ("detect", config.detectors)) for m in methods]
    adopt_stage_files(run, ["clean", *(f"attack/{a}" for a in config.attacks), *cells])
    if tasks:
        _run_tasks(config, run, executor, defenses)
    else:
        _run_here(config, run, data, device, defenses)
    table, detection = _tables(config, run, defenses)
    defender_count = len(defender_index(data.train.y, config.defender_fraction, config.seed))
    seconds = {**run.stage_seconds(), **attack_seconds(run, config.attacks)}
    # attack/<name> is the whole attack task under an executor: counted in attack_<name>
    seconds["total"] = round(sum(v for k, v in seconds.items() if not k.startswith("attack/")), 3)
    clean = load_model(run.path / CLEAN_FILE, device)
    warnings = warnings_of(
        model_warning("clean model", clean, data.test.to(device), data.info.num_classes),
        *((run.stages.get(f"attack/{a}") or {}).get("warning") for a in config.attacks))
    metrics = {
        "warnings": warnings,
        "clean_ca": run.stages["clean"]["test_accuracy"],
        "table": table,
        "detection": detection,
        "attacks": {a: run.stages.get(f"attack/{a}") for a in config.attacks},
        "cells": {name: run.stages[name] for name in cells},
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
