"""Learning rules of SNNs under data poisoning (Jin et al.): LR_B, LR_C, LR_H.

- LR_B (``bptt``): surrogate-gradient BPTT of the SNN itself (IF or LIF neurons).
- LR_C (``conversion``): train the ReLU twin, convert it with SpikingJelly's ``ann2snn``,
  run the IF network for T steps (``converted.ConvertedSNN``: ``model(x) -> logits``).
- LR_H (``hybrid``): LR_C, then a few epochs of surrogate-gradient BPTT at its T.
``detection`` holds the membrane/spike-statistics input detector; ``attack`` the poisoning
shared by all rules. The experiment kind ``rules`` (snnbackdoor.experiments.rules) runs them
side by side; ``report.rules`` renders the table of CA, ASR and migration rate against T.
"""

from . import attack, detection  # noqa: F401  (the rules' poisoning and input detector)
from .bptt import train_bptt
from .conversion import (
    convert_ann,
    load_converted,
    logits_over_time,
    measure_over_time,
    migration_rate,
    save_converted,
    train_ann,
)
from .converted import ConvertedSNN, make_trainable, surrogate_settings
from .hybrid import hybrid_finetune

__all__ = [
    "ConvertedSNN",
    "convert_ann",
    "hybrid_finetune",
    "load_converted",
    "logits_over_time",
    "make_trainable",
    "measure_over_time",
    "migration_rate",
    "save_converted",
    "surrogate_settings",
    "train_ann",
    "train_bptt",
]
