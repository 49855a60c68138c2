"""`kind: train`: train one clean model and evaluate it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..rundir import RunDir
from ..util import resolve_device
from .base import (
    AnalyzeConfig,
    ExperimentConfig,
    dataset_from_config,
    model_warning,
    register_experiment,
    train_clean,
    warnings_of,
)


@dataclass
class TrainExperiment(ExperimentConfig):
    """`kind: train`: train one clean model and evaluate it."""

    kind: str = "train"
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)


@register_experiment("train", TrainExperiment)
def run_train(config: TrainExperiment, run: RunDir) -> dict:
    """Train a clean model (stage `model`) and report its accuracy."""
    device = resolve_device(config.device)
    data = dataset_from_config(config, device)
    model, info = run.model_stage("model", lambda: train_clean(config, data, device), device)
    warnings = warnings_of(model_warning("clean model", model, data.test, data.info.num_classes))
    return {
        "warnings": warnings,
        "clean_ca": info["test_accuracy"],
        "val_accuracy": info["val_accuracy"],
        "train_seconds": info["train_seconds"],
        "epochs": config.train.epochs,
    }
