"""The report layer: renders run directories (markdown, CSV, figures) for every experiment
kind. Nothing here trains or measures: a renderer reads only the run directory, so
`snnbackdoor report RUN` re-renders any finished run, and experiments call the same
renderer at the end of a run. Layer: below attacks, above experiments."""

from __future__ import annotations

from pathlib import Path

from ..config import read_yaml
from ..io import FileFormatError
from .badsnn import render_badsnn
from .neuromorphic import render_neuromorphic
from .rules import render_rules
from .scan import render_scan
from .table2 import render_table2

RENDERERS = {
    "badsnn": render_badsnn,
    "neuromorphic": render_neuromorphic,
    "rules": render_rules,
    "scan": render_scan,
    "table2": render_table2,
}
"""Experiment kind -> renderer `(run_dir) -> written paths`; `train` runs have no report."""


def render(run_dir: str | Path) -> list[Path]:
    """Re-render a finished run directory of any kind (its config.yaml names the kind)."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        raise FileFormatError(f"{run_dir} has no metrics.json: the run has not finished "
                              "(run its command again to resume it)")
    kind = read_yaml(run_dir / "config.yaml").get("kind", "train")
    renderer = RENDERERS.get(kind)
    return renderer(run_dir) if renderer else []


__all__ = ["RENDERERS", "render", "render_badsnn", "render_neuromorphic", "render_rules",
           "render_scan", "render_table2"]
