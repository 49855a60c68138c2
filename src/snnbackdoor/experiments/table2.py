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

Nothing here picks a setting: the test split only measures. Every repair and detector gets
the defender's clean subset and nothing else (no validation split): a defense that chooses a
setting holds part of the subset out for it (see each defense's docstring), and each reports
its `budget` (samples per use), gathered in `metrics.json` as `defender_budget`. An attack
that chooses (BadSNN's attack config) does so on the validation split, which is the
attacker's. Settings a preset changes from a method's default (its paper's) are listed as
`deviations`, with the preset's `deviation_notes`, beside the table in the report.

The defender's clean subset is `defender_fraction` of the clean training split, drawn by
seed (stratified by class), disjoint from the samples the attack poisoned. It is taken in the
order of one seeded permutation for every attack, so the subsets of different attacks differ
only where an attack poisoned a sample another did not.
"""

from __future__ import annotations

from functools import cache, partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..checkpoint import load_model, save_model
from ..config import ConfigError, to_dict
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
from ..rundir import RunDir
from ..util import resolve_device
from .base import (
    dataset_from_config,
    model_warning,
    parse_config,
    register_experiment,
    train_clean,
    warnings_of,
)
from .table2_cells import (
    attack_seconds,
    defender_index,
    detect_cell,
    lazy_attack,
    repair_cell,
)
from .table2_config import (
    NO_DEFENSE,
    AttackPlan,
    Table2Experiment,
    attack_plan,
)

CLEAN_FILE = "clean.safetensors"  # the clean model (stage `clean`) in the run folder


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


def defender_budget(config: Table2Experiment, run: RunDir, cells: list[str]) -> dict:
    """What the defender's data went to: the subset's size per attack and, per repair and
    detector, its samples per use (`budget`) in each attack's cell."""
    subset, uses = {}, {}
    for name in cells:
        result = run.stages[name]
        prefix, attack, method = name.split("/", 2)
        if "defender_count" in result:
            subset[attack] = result["defender_count"]
        if result.get("budget"):
            kind = "defense" if prefix == "cell" else "detector"
            uses.setdefault(f"{kind}/{method}", {})[attack] = result["budget"]
    return {"fraction": config.defender_fraction, "subset": subset, "uses": uses}


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
        "defender_budget": defender_budget(config, run, cells),
        "deviations": config.deviations(),
        "deviation_notes": dict(config.deviation_notes),
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
