"""Run one config over a grid of overrides: one run directory per cell, one summary table.

The grid comes from the config's own `sweep:` section ({key: [values]}) and/or
`--grid key=v1,v2` arguments. Each cell is one task for an executor (local, Ray, Slurm);
a cell is finished when its run directory holds `metrics.json` for the same config, so a
re-run skips it whoever ran it, and `sweep.csv` is built from those files in grid order;
`sweep.png` draws the swept key against the metrics.
"""

from __future__ import annotations

import csv
import inspect
import io
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import ConfigError, apply_overrides, read_yaml, set_key, to_dict
from .executors import Executor, LocalExecutor, Task, TaskFailed, TaskResult
from .experiments.base import RunResult, parse_config, run_experiment
from .io import atomic_write_bytes, read_json
from .registry import get
from .report.badsnn_curves import sweep_curves
from .report.sweeps import plot_sweep_metrics
from .rundir import results_view


def parse_grid(items: tuple[str, ...] | list[str]) -> dict[str, list]:
    """`key=v1,v2` strings -> {key: [values]} (values parsed as YAML scalars)."""
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid expects key=v1,v2,..., got {item!r}")
        key, raw = item.split("=", 1)
        grid[key.strip()] = [yaml.safe_load(v) for v in raw.split(",")]
    return grid


def flatten(metrics: dict, prefix: str = "") -> dict:
    """Scalar metrics with nested keys joined by dots (lists are left out)."""
    out = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif not isinstance(value, list):
            out[name] = value
    return out


def cell_name(assignment: dict) -> str:
    return "__".join(f"{k.split('.')[-1]}={v}" for k, v in assignment.items()) or "base"


def run_cell(config: dict, out: str) -> str:
    """Task body: run one resolved config (plain data) into its own run directory."""
    return str(run_experiment(parse_config(config), out).path)


def finished(config, path: Path) -> bool:
    """Whether `path` holds the metrics of a finished run of this config (display keys such
    as `progress` aside)."""
    if not (path / "metrics.json").is_file() or not (path / "config.yaml").is_file():
        return False
    expected = yaml.safe_load(yaml.safe_dump(to_dict(config), sort_keys=False))
    return results_view(yaml.safe_load((path / "config.yaml").read_text())) == \
        results_view(expected)


def run_config(config, out: str | Path | None, executor: Executor | None = None) -> RunResult:
    """`snnbackdoor run`: an experiment that splits into tasks gets the executor; any other
    runs whole as one task of it (so `--executor slurm` puts even a single run on a node)."""
    out = Path(out or Path("runs") / config.name)
    runner = get("experiment", config.kind).obj
    if executor is None or isinstance(executor, LocalExecutor) or \
            "executor" in inspect.signature(runner).parameters:
        return run_experiment(config, out, executor)
    (result,) = executor.run([Task(config.name, run_cell, (to_dict(config), str(out)))],
                             out / "tasks", desc="run")
    if not result.ok:
        raise TaskFailed([result], out / "tasks" / "tasks.json")
    metrics = read_json(out / "metrics.json", dict, "metrics")
    print_warnings(metrics)  # the task printed them where it ran, not here
    return RunResult(out, metrics)


def print_warnings(metrics: dict, prefix: str = "") -> None:
    """A run's degenerate-model warnings on stderr, one line each."""
    for warning in metrics.get("warnings") or []:
        print(f"warning: {prefix}{warning}", file=sys.stderr)


@dataclass
class SweepResult:
    """Where `sweep.csv` is, its rows (finished cells, grid order), the failed cells and
    `sweep.png` (the swept key against the metrics)."""

    path: Path
    rows: list[dict]
    failed: list[TaskResult] = field(default_factory=list)
    figure: Path | None = None  # sweep.png (None when no cell finished)


def run_sweep(config_path: str | Path, grid_items=(), overrides=(),
              out: str | Path | None = None, executor: Executor | None = None) -> SweepResult:
    """Run every unfinished cell through `executor` (default: here, in order); write
    `sweep.csv` with one row per finished cell; failed cells are returned, not raised."""
    data = read_yaml(config_path)
    grid = data.pop("sweep", {}) or {}
    if not isinstance(grid, dict):
        raise ConfigError("the config's `sweep:` section must map keys to lists of values")
    grid.update(parse_grid(grid_items))
    if not grid:
        raise ConfigError("nothing to sweep: give --grid key=v1,v2 or a `sweep:` section")
    keys = list(grid)
    cells = [dict(zip(keys, values)) for values in itertools.product(*grid.values())]
    # Validate every cell before running any, so a typo fails before hours of work.
    configs = []
    for cell in cells:
        cell_data = apply_overrides(data, overrides)
        for key, value in cell.items():
            set_key(cell_data, key, value)
        configs.append(parse_config(cell_data))
    root = Path(out or Path("runs") / f"sweep_{configs[0].name}")
    paths = [root / cell_name(cell) for cell in cells]
    tasks = [Task(path.name, run_cell, (to_dict(config), str(path)))
             for config, path in zip(configs, paths) if not finished(config, path)]
    executor = executor or LocalExecutor()
    results = executor.run(tasks, root / "tasks", skipped=len(cells) - len(tasks), desc="sweep")
    done = [(cell, read_json(path / "metrics.json", dict, "metrics"), path)
            for cell, config, path in zip(cells, configs, paths) if finished(config, path)]
    if not isinstance(executor, LocalExecutor):  # cells elsewhere printed them there
        for _, metrics, path in done:
            print_warnings(metrics, f"{path.name}: ")
    rows = [{**cell, **flatten(metrics)} for cell, metrics, _ in done]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    path = atomic_write_bytes(root / "sweep.csv", buffer.getvalue().encode())
    figure_path = None
    if rows:
        figure_path = plot_sweep_metrics(rows, grid, root / "sweep.png", title=configs[0].name)
        sweep_curves([metrics for _, metrics, _ in done], root)  # BadSNN curves, when held
    return SweepResult(path, rows, [r for r in results if not r.ok], figure_path)
