"""The default executor: every task in this process, one after another, in the given order
(exactly what the package did before executors existed, random-number order included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Executor, Progress, Task, execute


class _Pending:
    """A task not run yet, then its outcome (value and seconds, or the error it raised)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.outcome: tuple[Any, float] | None = None
        self.error: Exception | None = None


class LocalExecutor(Executor):
    """Runs tasks in this process, in order; resources are not enforced."""

    name = "local"

    def _launch(self, tasks: list[Task], log_dir: Path | None) -> dict[str, Any]:
        return {task.key: _Pending(task) for task in tasks}

    def _wait(self, pending: dict[str, Any], progress: Progress) -> list[str]:
        key, handle = next(iter(pending.items()))
        progress.show(running=1)
        try:
            handle.outcome = execute(handle.task)
        except Exception as err:  # recorded by the base; KeyboardInterrupt still stops
            handle.error = err
        return [key]

    def _outcome(self, handle: _Pending) -> tuple[Any, float]:
        if handle.error is not None:
            raise handle.error
        return handle.outcome
