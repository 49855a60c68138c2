"""Detectors: input-level (scores per input) and model-level (scores per model); importing
this package registers every one of them (`registry.get("detector", name)`).

An input-level detector is `fn(model, clean_subset, clean_inputs, triggered_inputs,
options=None, seed=0) -> Scores`: scores only (higher = more suspicious), fitted on the
defender's clean subset. `detection_report(scores)` is the one place scores become
`detection_rate` (at the false-rejection rate fitted on the clean subset) and `auroc`.
"""

from .model_base import ModelScore, ScanJob, scanner
from .neuron_scan import NeuronScanOptions
from .scoring import Scores, auroc, detection_report, frr_threshold
from .spectral import (
    SpectralOptions,
    spectral_detect,
    spectral_filter,
    spectral_removal,
    spectral_scores_from_features,
    spectral_signature_scores,
)
from .spike_stats import SpikeStatsDetector, SpikeStatsOptions, spike_statistics, spike_stats_detect
from .strip import STRIPOptions, strip_detect, strip_entropy
from .tmpbd import TMPBDOptions
from .trigger_inversion import TriggerInversionOptions

__all__ = [
    "ModelScore",
    "NeuronScanOptions",
    "ScanJob",
    "TMPBDOptions",
    "TriggerInversionOptions",
    "scanner",
    "STRIPOptions",
    "Scores",
    "SpectralOptions",
    "SpikeStatsDetector",
    "SpikeStatsOptions",
    "auroc",
    "detection_report",
    "frr_threshold",
    "spectral_detect",
    "spectral_filter",
    "spectral_removal",
    "spectral_scores_from_features",
    "spectral_signature_scores",
    "spike_statistics",
    "spike_stats_detect",
    "strip_detect",
    "strip_entropy",
]
