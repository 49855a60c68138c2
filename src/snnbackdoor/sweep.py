"""Run one config over a grid of overrides: one run directory per cell, one summary table.

The grid comes from the config's own `sweep:` section ({key: [values]}) and/or
`--grid key=v1,v2` arguments; cells are resumable runs like any other.
"""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import yaml

from .config import ConfigError, apply_overrides, read_yaml, set_key
from .experiments.base import parse_config, run_experiment
from .io import atomic_write_bytes


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


def run_sweep(config_path: str | Path, grid_items=(), overrides=(), out: str | Path | None = None):
    """Run every cell of the grid; write `sweep.csv` (one row per cell) and return its path."""
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
    rows = []
    from tqdm.auto import tqdm

    for cell, config in tqdm(list(zip(cells, configs)), desc="sweep", unit="cell"):
        result = run_experiment(config, root / cell_name(cell))
        rows.append({**cell, **flatten(result.metrics)})
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    path = root / "sweep.csv"
    atomic_write_bytes(path, buffer.getvalue().encode())
    return path, rows
