"""Degenerate-model warnings: metrics.json, the console and the top of report.md."""

from __future__ import annotations

from pathlib import Path

import torch

from snnbackdoor.experiments.base import load_config, run_experiment
from snnbackdoor.metrics import degenerate_warning
from snnbackdoor.report.table2 import report_markdown
from snnbackdoor.report.tables import warnings_block

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits_clean.yaml"


def test_one_epoch_run_warns_in_metrics_and_on_the_console(tmp_path, capsys):
    config = load_config(CONFIG, ["train.epochs=1", "train.progress=false"])
    result = run_experiment(config, tmp_path / "run")
    warnings = result.metrics["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("clean model: degenerate model")
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("warning: ")] == [f"warning: {warnings[0]}"]


def test_degenerate_warning_names_the_model_and_spares_a_healthy_one():
    y = torch.arange(10).repeat(10)
    assert degenerate_warning("clean model", y.clone(), y, 10) is None
    constant = torch.zeros(100, dtype=torch.long)
    warning = degenerate_warning("badnet model", constant, y, 10)
    assert warning.startswith("badnet model: degenerate model: class 0 takes 100.0%")
    assert "near chance" in warning


def test_report_shows_warnings_first_and_defense_choices_in_percent():
    config = {"name": "m", "attacks": ["badnet"], "detectors": [], "seed": 0, "target": 0,
              "poison_ratio": 0.1, "defender_fraction": 0.05, "dataset": {"name": "digits"},
              "model": {"name": "digits_net", "neuron": "lif", "T": 4}}
    metrics = {"warnings": ["badnet model: degenerate model: class 0 takes 99.0%"],
               "clean_ca": 0.95, "defender": {"count": 60}, "detection": [], "attacks": {},
               "table": [{"attack": "badnet", "defense": d, "ca": 0.9, "asr": 0.5, "ra": 0.4}
                         for d in ("none", "finetune")],
               "cells": {"cell/badnet/finetune": {"defense_info": {
                   "defense": "finetune", "val_accuracy": 0.875, "epochs": 5}}}}
    lines = report_markdown(config, metrics, ["none", "finetune"]).splitlines()
    assert lines[2] == "> **Warning**: badnet model: degenerate model: class 0 takes 99.0%"
    assert "- `badnet` x `finetune`: val_accuracy 87.50%, epochs 5" in lines
    assert warnings_block({}) == []
