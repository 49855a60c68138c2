"""Learning rules of SNNs under data poisoning (Jin et al.): LR_B, LR_C, LR_H.

- LR_B (``bptt``): surrogate-gradient BPTT of the SNN itself (IF or LIF neurons).
- LR_C (``conversion``): train the ReLU twin, convert it with SpikingJelly's ``ann2snn``,
  run the IF network for T steps (``ConvertedSNN``: ``model(x) -> logits``).
- LR_H (``hybrid``): LR_C, then a few epochs of surrogate-gradient BPTT at its T.
``detection`` holds the membrane/spike-statistics input detector; ``attack`` the poisoning
shared by all rules. The experiment kind ``rules`` (snnbackdoor.experiments.rules) runs them
side by side and writes the table of CA, ASR and migration rate against T.
"""

from .attack import EVENT_TRIGGERS, IMAGE_TRIGGERS, make_trigger, poison_training
from .bptt import train_bptt
from .conversion import (
    ConvertedSNN,
    convert_ann,
    load_converted,
    logits_over_time,
    measure_over_time,
    migration_rate,
    save_converted,
    train_ann,
)
from .detection import (
    SpikeStatsDetector,
    auroc,
    evaluate_detection,
    spike_statistics,
    spike_stats_detect,
)
from .hybrid import hybrid_finetune, make_trainable

RULES = ("LR_B", "LR_C", "LR_H")

__all__ = [
    "EVENT_TRIGGERS",
    "IMAGE_TRIGGERS",
    "RULES",
    "ConvertedSNN",
    "SpikeStatsDetector",
    "auroc",
    "convert_ann",
    "evaluate_detection",
    "hybrid_finetune",
    "load_converted",
    "logits_over_time",
    "make_trainable",
    "make_trigger",
    "measure_over_time",
    "migration_rate",
    "poison_training",
    "save_converted",
    "spike_statistics",
    "spike_stats_detect",
    "train_ann",
    "train_bptt",
]
