"""Repair defenses, for any SpikingClassifier or ANN twin; importing this package registers
every one of them (`registry.get("defense", name)`).

Every repair is `fn(model, clean_subset, val_split=None, options=None, seed=0) -> Repaired`
(`defenses.base`): a repaired *copy* (the input model is never changed) at the model's
deployed neuron config, and what the repair did in `Repaired.info`. `options` is the
defense's options dataclass or a dict of its fields; unknown keys fail early. No setting is
ever chosen on the test split or on ASR: see each entry function's docstring. Input
detectors live in `snnbackdoor.detectors`.
"""

from .anp import ANPOptions, anp_prune, optimise_masks, prune_by_masks
from .base import Repaired, parse_options, run_repair
from .clp import CLPOptions, channel_lipschitz, clp_prune
from .discovery import block_outputs, conv_bn_pairs, last_conv_unit, penultimate_layer
from .fine_pruning import FinePruningOptions, fine_prune
from .finetune import FineTuneOptions, fine_tune
from .nad import NADOptions, attention_loss, attention_map, nad_repair
from .ndsbm import NDSBMOptions, ndsbm_repair
from .neuron_param import NeuronParamOptions, neuron_param_repair
from .tsbd import TSBDOptions, clean_unlearning, tsbd_repair

__all__ = [
    "ANPOptions",
    "CLPOptions",
    "FinePruningOptions",
    "FineTuneOptions",
    "NADOptions",
    "NDSBMOptions",
    "NeuronParamOptions",
    "Repaired",
    "TSBDOptions",
    "anp_prune",
    "attention_loss",
    "attention_map",
    "block_outputs",
    "channel_lipschitz",
    "clean_unlearning",
    "clp_prune",
    "conv_bn_pairs",
    "fine_prune",
    "fine_tune",
    "last_conv_unit",
    "nad_repair",
    "ndsbm_repair",
    "neuron_param_repair",
    "optimise_masks",
    "parse_options",
    "penultimate_layer",
    "prune_by_masks",
    "run_repair",
    "tsbd_repair",
]
