"""The learning-rules study's input detection: the spike/membrane-statistics detector
(`detectors.spike_stats`) fitted on clean inputs, thresholded on held-out clean inputs, and
screened on clean and triggered test inputs, for each scoring method."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..detectors.scoring import auroc, detection_report
from ..detectors.spike_stats import (
    METHODS,
    SpikeStatsDetector,
    feature_sets,
    scores_from_features,
    spike_statistics,
    spike_stats_detect,
)

__all__ = ["METHODS", "SpikeStatsDetector", "auroc", "evaluate_detection", "spike_statistics",
           "spike_stats_detect"]


def evaluate_detection(
    model: nn.Module,
    fit_x: torch.Tensor,
    calibration_x: torch.Tensor,
    clean_x: torch.Tensor,
    triggered_x: torch.Tensor,
    frr: float = 0.05,
    methods: tuple[str, ...] | list[str] = METHODS,
    shrinkage: float = 0.1,
    batch_size: int = 256,
    progress: bool = False,
) -> dict:
    """Fit on ``fit_x`` (clean), threshold on ``calibration_x`` (clean, held out) at ``frr``,
    then screen clean and triggered test inputs: per method ``detection_rate``,
    ``false_rejection_rate`` (clean test inputs flagged) and ``auroc``."""
    sets = feature_sets(model, {"fit": fit_x, "threshold": calibration_x, "clean": clean_x,
                                "triggered": triggered_x}, batch_size, progress)
    result: dict = {"frr_target": frr, "features": int(sets["fit"][0].shape[1])}
    for method in methods:
        scores = scores_from_features(sets, method, shrinkage, frr)
        result[method] = {k: v for k, v in detection_report(scores).items()
                          if k not in scores.info}
    return result
