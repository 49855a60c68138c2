"""Trigger tables (clean model first, then one row per trigger) shared by the event-data
experiments: `table.csv` with attack, trigger, ca, asr, ssim, mse."""

from __future__ import annotations

from ..io import csv_text

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
