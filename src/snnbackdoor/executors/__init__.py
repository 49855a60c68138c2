"""Where tasks run: `local` (this process, in order), `ray` (a Ray cluster) and `slurm`
(job arrays through submitit). The run directory is the truth, so any executor can resume
work another started.

There are exactly three executors and adding one means writing a new backend, not a plugin,
so they sit in a plain name -> class dict here instead of the component registry.
"""

from __future__ import annotations

import difflib

from .base import Executor, Progress, Task, TaskFailed, TaskResult, execute, record_results
from .local import LocalExecutor
from .ray import RayExecutor
from .slurm import SlurmExecutor, time_minutes
from .stages import StageCall, adopt_stage_files, map_stages, run_stage, stage_file

EXECUTORS: dict[str, type[Executor]] = {
    "local": LocalExecutor,
    "ray": RayExecutor,
    "slurm": SlurmExecutor,
}

# Which command-line options each executor takes (the others are refused, not ignored).
_OPTIONS = {
    "local": set(),
    "ray": {"address", "cpus_per_task", "gpus_per_task"},
    "slurm": {"partition", "time", "array_parallelism", "cpus_per_task", "gpus_per_task"},
}
_FLAGS = {"address": "--ray-address", "cpus_per_task": "--cpus-per-task",
          "gpus_per_task": "--gpus-per-task", "partition": "--partition", "time": "--time",
          "array_parallelism": "--array-parallelism"}


def make_executor(name: str = "local", progress: bool = True, **options) -> Executor:
    """An executor by name; options left None take its defaults, and an option meant for
    another executor (say --partition with ray) is an error rather than silently ignored."""
    if name not in EXECUTORS:
        close = difflib.get_close_matches(name, EXECUTORS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown executor {name!r}{hint} (choose from {list(EXECUTORS)})")
    given = {k: v for k, v in options.items() if v is not None}
    unknown = set(given) - set(_FLAGS)
    if unknown:
        raise TypeError(f"make_executor got unknown options {sorted(unknown)}")
    wrong = sorted(_FLAGS[k] for k in set(given) - _OPTIONS[name])
    if wrong:
        own = ", ".join(sorted(_FLAGS[k] for k in _OPTIONS[name])) or "none"
        raise ValueError(f"{', '.join(wrong)}: not an option of --executor {name} "
                         f"(its options: {own})")
    return EXECUTORS[name](progress=progress, **given)


__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "Progress",
    "RayExecutor",
    "SlurmExecutor",
    "StageCall",
    "Task",
    "TaskFailed",
    "TaskResult",
    "adopt_stage_files",
    "execute",
    "make_executor",
    "map_stages",
    "record_results",
    "run_stage",
    "stage_file",
    "time_minutes",
]
