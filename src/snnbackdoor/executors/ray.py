"""Ray: tasks on an existing Ray cluster (`--ray-address` or `RAY_ADDRESS`) or on a local
one started here; each task asks for its CPUs and GPUs, so Ray places one per free slot.

Every node needs the same environment (this package importable in the same venv) and the
run directory on a shared filesystem at the same path; tasks pass only paths and plain data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import Executor, Progress, Task, execute


class RayExecutor(Executor):
    """Runs each task as a Ray task with `num_cpus`/`num_gpus`; a worker that dies (node lost,
    out of memory) is retried `max_retries` times, an exception in the task is not."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 cpus_per_task: float = 1, gpus_per_task: float = 0, max_retries: int = 1,
                 poll_s: float = 0.5, progress: bool = True) -> None:
        super().__init__(cpus_per_task, gpus_per_task, progress)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus, self.max_retries, self.poll_s = num_cpus, max_retries, poll_s
        self._started = False
        self._slots = 1

    def _ray(self):
        """The `ray` module, connected: to an initialised session, the address, or a new
        local cluster (no dashboard) that `close()` shuts down again."""
        try:
            import ray
        except ImportError as err:
            raise ValueError("--executor ray needs Ray: pip install -e '.[dist]'") from err
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False)
                self._started = True
        return ray

    def _launch(self, tasks: list[Task], log_dir: Path | None) -> dict[str, Any]:
        ray = self._ray()
        remote = ray.remote(execute)
        total = ray.cluster_resources()
        self._slots = max(1, int(min(
            total.get("CPU", 1) // max(self.resources(t)[0], 1e-9) for t in tasks)))
        handles = {}
        for task in tasks:
            cpus, gpus = self.resources(task)
            handles[task.key] = remote.options(
                num_cpus=cpus, num_gpus=gpus, max_retries=self.max_retries,
                name=f"snnbackdoor:{task.key}",
            ).remote(task)
        return handles

    def _wait(self, pending: dict[str, Any], progress: Progress) -> list[str]:
        ray = self._ray()
        running = min(len(pending), self._slots)  # what fits on the cluster's CPUs now
        progress.show(running=running, queued=len(pending) - running)
        ready, _ = ray.wait(list(pending.values()), num_returns=1, timeout=self.poll_s)
        ready = set(ready)
        return [key for key, ref in pending.items() if ref in ready]

    def _outcome(self, handle) -> tuple[Any, float]:
        return self._ray().get(handle)

    def _cancel(self, pending: dict[str, Any]) -> None:
        if pending:
            ray = self._ray()
            for ref in pending.values():
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
