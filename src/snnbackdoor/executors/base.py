"""Where tasks run: the task and its result, and the executor base that owns the common path
(launch, wait, collect, record, show progress).

The run directory is the single source of truth. A task is a top-level (picklable) function
with picklable arguments that writes only its own files, atomically; the parent process is the
only writer of shared files (a run's `stages.json`, `tasks/tasks.json`, a sweep's `sweep.csv`).
A failed task is recorded with its error and the others go on; re-running skips finished work
whatever executor did it, because "finished" is read from files, never from the executor.

How an experiment (the attack x defense matrix) splits its own work into tasks, one per
attacked model and then one per cell, and resumes them: `map_stages` in `stages.py`.
"""

from __future__ import annotations

import abc
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, read_json

TASKS_FILE = "tasks.json"


@dataclass(frozen=True)
class Task:
    """One unit of work: `fn(*args, **kwargs)` with a unique key; resources None take the
    executor's per-task defaults (`--cpus-per-task`, `--gpus-per-task`)."""

    key: str
    fn: Callable
    args: tuple = ()
    kwargs: Mapping = field(default_factory=dict)
    num_cpus: float | None = None
    num_gpus: float | None = None


@dataclass
class TaskResult:
    """How one task ended: `done` with its return value, or `failed` with the error text."""

    key: str
    status: str
    value: Any = None
    error: str | None = None
    seconds: float | None = None
    log: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "done"


class TaskFailed(RuntimeError):
    """Some tasks failed; the finished ones are saved, so running again retries only these."""

    def __init__(self, failed: Sequence[TaskResult], where: Path | None = None) -> None:
        self.failed = list(failed)
        first = self.failed[0].error.strip().splitlines()[-1] if self.failed[0].error else "?"
        record = f"; errors in {where}" if where else ""
        super().__init__(
            f"{len(self.failed)} task(s) failed ({', '.join(r.key for r in self.failed[:5])}"
            f"{' ...' if len(self.failed) > 5 else ''}): {first}{record}; "
            "run the same command again to retry them (finished work is kept)"
        )


def execute(task: Task) -> tuple[Any, float]:
    """Run a task where it lands (this process, a Ray worker, a Slurm job): (value, seconds)."""
    start = time.perf_counter()
    value = task.fn(*task.args, **dict(task.kwargs))
    return value, round(time.perf_counter() - start, 3)


def error_text(err: BaseException) -> str:
    return "".join(traceback.format_exception(type(err), err, err.__traceback__))


class Progress:
    """Tasks done, running, queued and failed, with tqdm's estimate of time left."""

    def __init__(self, total: int, skipped: int, desc: str, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.done, self.failed, self.running, self.queued = skipped, 0, 0, 0
        self.bar = tqdm(total=total, initial=skipped, desc=desc, unit="task",
                        disable=not enabled, dynamic_ncols=True)
        self.show()

    def show(self, running: int | None = None, queued: int | None = None,
             refresh: bool = True) -> None:
        self.running = self.running if running is None else running
        self.queued = self.queued if queued is None else queued
        parts = [f"done={self.done}", f"running={self.running}", f"failed={self.failed}"]
        if self.queued:
            parts.insert(2, f"queued={self.queued}")
        self.bar.set_postfix_str(" ".join(parts), refresh=False)
        if refresh:
            self.bar.refresh()

    def finished(self, result: TaskResult) -> None:
        if result.ok:
            self.done += 1
        else:
            self.failed += 1
        self.show(running=max(self.running - 1, 0), refresh=False)
        self.bar.update()

    def close(self) -> None:
        self.bar.close()


class Executor(abc.ABC):
    """Runs tasks somewhere; the base owns the loop (launch, wait, collect, record, progress)
    and a subclass supplies only where and how a task starts and how its end is seen."""

    name = "executor"

    def __init__(self, cpus_per_task: float = 1, gpus_per_task: float = 0,
                 progress: bool = True) -> None:
        if cpus_per_task <= 0 or gpus_per_task < 0:
            raise ValueError("--cpus-per-task must be > 0 and --gpus-per-task >= 0")
        self.cpus_per_task, self.gpus_per_task = cpus_per_task, gpus_per_task
        self.progress = progress

    def resources(self, task: Task) -> tuple[float, float]:
        """(cpus, gpus) a task asks for: its own declaration, else the executor's default."""
        cpus = self.cpus_per_task if task.num_cpus is None else task.num_cpus
        return cpus, (self.gpus_per_task if task.num_gpus is None else task.num_gpus)

    def run(self, tasks: Sequence[Task], log_dir: str | Path | None = None, skipped: int = 0,
            desc: str = "tasks") -> list[TaskResult]:
        """Run every task; results in task order. `skipped` (work found finished) counts as
        done in the progress bar; with `log_dir`, each task's end goes to `tasks.json`."""
        tasks = list(tasks)
        keys = [t.key for t in tasks]
        if len(set(keys)) != len(keys):
            raise ValueError(f"task keys must be unique, got {keys}")
        log_dir = Path(log_dir) if log_dir is not None else None
        results: dict[str, TaskResult] = {}
        progress = Progress(len(tasks) + skipped, skipped, desc, self.progress)
        pending: dict[str, Any] = {}
        try:
            pending = dict(self._launch(tasks, log_dir)) if tasks else {}
            while pending:
                for key in self._wait(pending, progress):
                    results[key] = self._collect(key, pending.pop(key))
                    progress.finished(results[key])
                    if log_dir is not None:
                        record_results(log_dir, [results[key]], self.name)
        except BaseException:
            self._cancel(pending)
            raise
        finally:
            progress.close()
        return [results[key] for key in keys]

    def _collect(self, key: str, handle) -> TaskResult:
        try:
            value, seconds = self._outcome(handle)
        except Exception as err:  # a task's failure is a result, not the end of the run
            return TaskResult(key, "failed", error=error_text(err), log=self._log(handle))
        return TaskResult(key, "done", value=value, seconds=seconds, log=self._log(handle))

    @abc.abstractmethod
    def _launch(self, tasks: list[Task], log_dir: Path | None) -> dict[str, Any]:
        """Start (or queue) every task; {key: handle}."""

    @abc.abstractmethod
    def _wait(self, pending: dict[str, Any], progress: Progress) -> list[str]:
        """Block until some pending tasks end (or a poll interval passes); their keys."""

    @abc.abstractmethod
    def _outcome(self, handle) -> tuple[Any, float]:
        """(value, seconds) of an ended task, or raise its error."""

    def _log(self, handle) -> str | None:
        return None

    def _cancel(self, pending: dict[str, Any]) -> None:
        """Stop tasks still queued or running when the parent is interrupted."""
        return None

    def close(self) -> None:
        """Release what the executor started (a local Ray cluster)."""
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def record_results(log_dir: Path, results, executor: str) -> Path:
    """Merge how tasks ended into `<log_dir>/tasks.json` (one entry per key, latest wins)."""
    path = Path(log_dir) / TASKS_FILE
    record = read_json(path, dict, "task record") if path.exists() else {}
    for result in results:
        record[result.key] = {
            "status": result.status, "executor": executor, "seconds": result.seconds,
            "time": round(time.time(), 3), "log": result.log, "error": result.error,
        }
    return atomic_write_json(path, record)
