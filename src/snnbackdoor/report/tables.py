"""Trigger tables (clean model first, then one row per trigger) shared by the event-data
experiments (`table.csv` with attack, trigger, ca, asr, ssim, mse), and what every renderer
reads back from a run directory."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..io import FileFormatError, csv_text, read_json

TABLE_COLUMNS = ["attack", "trigger", "ca", "asr", "ssim", "mse"]


def table_rows(clean_ca: float, attacks: dict[str, dict]) -> list[dict]:
    """Rows of table.csv: the clean model first, then one per trigger."""
    rows = [{"attack": "clean", "trigger": "none", "ca": clean_ca, "asr": None, "ssim": None,
             "mse": None}]
    for label, info in attacks.items():
        rows.append({"attack": info["attack"], "trigger": label, "ca": info["ca"],
                     "asr": info["asr"], "ssim": info["ssim"], "mse": info["mse"]})
    return rows


def table_csv(rows: list[dict]) -> str:
    return csv_text(TABLE_COLUMNS, rows)


def read_run(run_dir: str | Path) -> tuple[dict, dict]:
    """(config, metrics) of a finished run: `config.yaml` and `metrics.json`, checked."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileFormatError(f"{run_dir} is not a run directory: config.yaml is missing")
    config = yaml.safe_load(config_path.read_text())
    if not isinstance(config, dict):
        raise FileFormatError(f"{config_path} does not hold a config mapping")
    return config, read_json(run_dir / "metrics.json", dict, "metrics file")


def fmt(value, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` decimals, None as '-'."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def pct(value, digits: int = 2) -> str:
    """A rate in [0, 1] as percent (no sign), None as 'n/a'."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def warnings_block(metrics: dict) -> list[str]:
    """The run's degenerate-model warnings as report lines (for the top of report.md)."""
    warnings = metrics.get("warnings") or []
    if not warnings:
        return []
    return ["> **Warning**: " + w for w in warnings] + [""]
