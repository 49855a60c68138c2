"""Slurm through submitit: one job-array task per task, each with its own log folder under the
run directory (`tasks/slurm/<jobid>_<index>/`), and `tasks/slurm/jobs.json` saying which job
ran which task (the latest job of each, over every round and re-run). `cluster="local"`
runs the same path as subprocesses here (for tests).

Nodes need the same venv at the same path (jobs start `<this python> -m submitit...`) and the
run directory on a shared filesystem; sbatch's own SBATCH_* variables (account, QOS) apply.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, read_json
from .base import Executor, Progress, Task, execute

QUEUED_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "RESV_DEL_HOLD"}


def time_minutes(value: str | int) -> int:
    """Slurm time limit ('90', '2:00:00', '1-12:00:00', '45:00') -> whole minutes."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise ValueError(f"--time must be minutes or [D-]HH:MM:SS, got {value!r}")
    days, first, second, third = (int(g) if g else 0 for g in match.groups())
    if match.group(4) is not None:  # H:M:S
        minutes = first * 60 + second + math.ceil(third / 60)
    elif match.group(3) is not None:  # M:S, or H:M with days
        minutes = first * 60 + second if match.group(1) else first + math.ceil(second / 60)
    else:  # minutes, or hours with days
        minutes = first * 60 if match.group(1) else first
    minutes += days * 24 * 60
    if minutes < 1:
        raise ValueError(f"--time must be at least one minute, got {value!r}")
    return minutes


class SlurmExecutor(Executor):
    """Submits tasks as Slurm job arrays (one per resource shape), at most
    `array_parallelism` running at once, and polls them until they end."""

    name = "slurm"

    def __init__(self, partition: str | None = None, time: str | int = "8:00:00",
                 array_parallelism: int = 64, cpus_per_task: float = 1,
                 gpus_per_task: float = 0, cluster: str = "slurm",
                 folder: str | Path | None = None, poll_s: float = 5.0,
                 progress: bool = True) -> None:
        super().__init__(cpus_per_task, gpus_per_task, progress)
        if array_parallelism < 1:
            raise ValueError("--array-parallelism must be >= 1")
        self.partition, self.minutes = partition, time_minutes(time)
        self.array_parallelism, self.cluster = array_parallelism, cluster
        self.folder = Path(folder) if folder is not None else None
        self.poll_s = poll_s

    def _submitit(self, folder: Path):
        try:
            import submitit
        except ImportError as err:
            raise ValueError("--executor slurm needs submitit: pip install -e '.[dist]'") from err
        try:
            return submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster)
        except RuntimeError as err:  # no srun on this machine
            raise ValueError(f"--executor slurm: {err} (use --executor local or ray here)") \
                from err

    def _launch(self, tasks: list[Task], log_dir: Path | None) -> dict[str, Any]:
        base = log_dir or self.folder
        if base is None:
            raise ValueError("SlurmExecutor needs a folder for its job files and logs")
        folder = Path(base) / "slurm"
        submitter = self._submitit(folder)
        shapes: dict[tuple[int, int], list[Task]] = {}
        for task in tasks:
            cpus, gpus = self.resources(task)
            shapes.setdefault((math.ceil(cpus), math.ceil(gpus)), []).append(task)
        handles: dict[str, Any] = {}
        for (cpus, gpus), group in shapes.items():
            submitter.update_parameters(
                name="snnbackdoor", timeout_min=self.minutes, nodes=1, tasks_per_node=1,
                cpus_per_task=cpus, gpus_per_node=gpus, slurm_partition=self.partition,
                slurm_array_parallelism=self.array_parallelism,
            )
            with submitter.batch():
                jobs = [submitter.submit(execute, task) for task in group]
            handles.update({task.key: job for task, job in zip(group, jobs)})
        record_path = folder / "jobs.json"  # merged: a run's later rounds add their jobs
        record = read_json(record_path, dict, "job record") if record_path.exists() else {}
        record.update({key: {"job_id": job.job_id, "stdout": str(job.paths.stdout),
                             "stderr": str(job.paths.stderr)} for key, job in handles.items()})
        atomic_write_json(record_path, record)
        return handles

    def _wait(self, pending: dict[str, Any], progress: Progress) -> list[str]:
        ended = [key for key, job in pending.items() if job.done()]
        if not ended:
            queued = sum(job.state in QUEUED_STATES for job in pending.values())
            progress.show(running=len(pending) - queued, queued=queued)
            time.sleep(self.poll_s)
        return ended

    def _outcome(self, handle) -> tuple[Any, float]:
        return handle.result()

    def _log(self, handle) -> str | None:
        return str(handle.paths.stdout)

    def _cancel(self, pending: dict[str, Any]) -> None:
        for job in pending.values():
            job.cancel(check=False)
