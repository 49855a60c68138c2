"""Defenses: model repair and input-level detection, for any SpikingClassifier or ANN twin.

Every repair is `fn(model, clean_subset, val_split, options, seed) -> nn.Module` and returns
a repaired *copy* (the input model is never changed) at the model's deployed neuron config,
with what it did in `model.defense_info`. Every detector is
`fn(model, clean_subset, clean_inputs, triggered_inputs, options, seed) -> dict` with at least
`detection_rate` (at a false-rejection rate fitted on the clean subset, 0.05 by default) and
`auroc`. `options` is a dict of the defense's option fields; unknown keys fail early. No
setting is ever chosen on the test split or on ASR: see each entry function's docstring.
"""

from collections.abc import Callable

from .anp import ANPOptions, anp_prune, optimise_masks, prune_by_masks
from .clp import CLPOptions, channel_lipschitz, clp_prune
from .discovery import block_outputs, conv_bn_pairs, last_conv_unit, penultimate_layer
from .fine_pruning import FinePruningOptions, fine_prune
from .finetune import FineTuneOptions, fine_tune
from .nad import NADOptions, attention_loss, attention_map, nad_repair
from .scoring import auroc, detection_report, frr_threshold
from .spectral import (
    SpectralOptions,
    spectral_detect,
    spectral_filter,
    spectral_removal,
    spectral_scores_from_features,
    spectral_signature_scores,
)
from .strip import STRIPOptions, strip_detect, strip_entropy
from .tsbd import TSBDOptions, clean_unlearning, tsbd_repair

REPAIRS: dict[str, Callable] = {
    "finetune": fine_tune,
    "clp": clp_prune,
    "anp": anp_prune,
    "nad": nad_repair,
    "tsbd": tsbd_repair,
    "fine_pruning": fine_prune,
}
"""Repair defenses by name: `fn(model, clean_subset, val_split, options, seed) -> nn.Module`."""

DETECTORS: dict[str, Callable] = {
    "strip": strip_detect,
    "spectral": spectral_detect,
}
"""Detectors by name: `fn(model, clean_subset, clean_inputs, triggered_inputs, options,
seed) -> dict` with `detection_rate` and `auroc`."""

__all__ = [
    "ANPOptions",
    "CLPOptions",
    "DETECTORS",
    "FinePruningOptions",
    "FineTuneOptions",
    "NADOptions",
    "REPAIRS",
    "STRIPOptions",
    "SpectralOptions",
    "TSBDOptions",
    "anp_prune",
    "attention_loss",
    "attention_map",
    "auroc",
    "block_outputs",
    "channel_lipschitz",
    "clean_unlearning",
    "clp_prune",
    "conv_bn_pairs",
    "detection_report",
    "fine_prune",
    "fine_tune",
    "frr_threshold",
    "last_conv_unit",
    "nad_repair",
    "optimise_masks",
    "penultimate_layer",
    "prune_by_masks",
    "spectral_detect",
    "spectral_filter",
    "spectral_removal",
    "spectral_scores_from_features",
    "spectral_signature_scores",
    "strip_detect",
    "strip_entropy",
    "tsbd_repair",
]
