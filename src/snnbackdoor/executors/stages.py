"""`map_stages`: the helper an experiment uses to compute the independent stages of one run
directory as tasks of any executor, and to resume them from files.

How an experiment splits its work (the attack x defense matrix, `experiments/table2.py`,
does exactly this)::

    from snnbackdoor.executors import StageCall, map_stages

    def run_matrix(config, run, executor=None):           # runner keyword: `executor`
        spec, path = to_dict(config), str(run.path)        # plain data crosses processes
        map_stages(executor, run, {"clean": StageCall(clean_task, (spec, path))})
        map_stages(executor, run, {                        # one task per attacked model
            f"attack/{a}": StageCall(attack_task, (spec, a, path)) for a in config.attacks})
        map_stages(executor, run, {                        # then one per attack x defense
            f"cell/{a}/{d}": StageCall(repair_task, (spec, a, d, path))
            for a in config.attacks for d in defenses})

The task functions are top-level; they rebuild what they need from `spec` and files (the
dataset, the models saved by earlier rounds) and return a JSON mapping. A task that saves a
model saves it under its own name or folder (`clean.safetensors`, `attacks/<name>/`), never
into the parent's `stages.json`, which only this process writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..io import atomic_write_json, json_safe, read_json
from .base import TASKS_FILE, Executor, Task, TaskFailed
from .local import LocalExecutor


@dataclass(frozen=True)
class StageCall:
    """How to compute one stage: a top-level function returning a JSON mapping, its
    picklable arguments and, optionally, its resources (e.g. `num_gpus=1` to train)."""

    fn: Callable
    args: tuple = ()
    kwargs: Mapping = field(default_factory=dict)
    num_cpus: float | None = None
    num_gpus: float | None = None


def stage_file(run_path: str | Path, name: str) -> Path:
    """Where a task writes the result of stage `name` (its `/` become folders)."""
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"stage name {name!r} must be `/`-separated plain names")
    return Path(run_path, "stages", *parts[:-1], f"{parts[-1]}.json")


def run_stage(path: str, fn: Callable, args: tuple, kwargs: Mapping) -> dict:
    """Task body of `map_stages`: compute one stage, write its result file atomically."""
    result = json_safe(fn(*args, **dict(kwargs)))
    if not isinstance(result, dict):
        raise TypeError(f"a stage function must return a mapping, {fn.__name__} returned "
                        f"{type(result).__name__}")
    atomic_write_json(path, result)
    return result


def _record_stage(run, name: str, result: dict, seconds: float | None) -> dict:
    """Store a stage computed by a task in the run's `stages.json` and log, as `run.stage`
    would have (this process is the only writer of both)."""
    run.stages[name] = result
    if seconds is not None:
        run.stages.setdefault("_seconds", {})[name] = seconds
    atomic_write_json(run.stages_path, run.stages)
    run.log(stage=name, status="done", seconds=seconds)
    return result


def adopt_stage_files(run, names: Iterable[str]) -> list[str]:
    """Record in `run` the stages among `names` whose task wrote its result file but whose
    parent stopped before recording it (so any executor, or none, resumes after any other);
    their names."""
    adopted = []
    for name in names:
        path = stage_file(run.path, name)
        if not run.done(name) and path.exists():
            _record_stage(run, name, read_json(path, dict, "stage file"), None)
            adopted.append(name)
    return adopted


def map_stages(executor: Executor | None, run, calls: Mapping[str, StageCall],
               desc: str = "stages", raise_on_failure: bool = True) -> dict[str, dict]:
    """Compute the stages of `run` (a RunDir) not finished yet, one task each, through
    `executor` (None: in this process, in order); {name: result} in the order of `calls`.

    A stage is finished when the run has it, or when its task's result file exists (the
    parent stopped before recording it). Failures raise `TaskFailed` after every other
    stage is recorded; with `raise_on_failure=False` they are left out of the result."""
    executor = executor or LocalExecutor(progress=False)
    adopt_stage_files(run, calls)
    results: dict[str, dict] = {}
    tasks = []
    for name, call in calls.items():
        if run.done(name):
            results[name] = run.stages[name]
        else:
            path = str(stage_file(run.path, name))
            tasks.append(Task(name, run_stage, (path, call.fn, call.args, call.kwargs),
                              num_cpus=call.num_cpus, num_gpus=call.num_gpus))
    log_dir = run.path / "tasks"
    outcomes = executor.run(tasks, log_dir, skipped=len(calls) - len(tasks), desc=desc)
    for outcome in outcomes:
        if outcome.ok:
            results[outcome.key] = _record_stage(run, outcome.key, outcome.value, outcome.seconds)
    failed = [o for o in outcomes if not o.ok]
    if failed and raise_on_failure:
        raise TaskFailed(failed, log_dir / TASKS_FILE)
    return {name: results[name] for name in calls if name in results}
