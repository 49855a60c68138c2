"""Fine-tuning (FT): train a copy of the model on the defender's clean subset.

The BadSNN Table 2 baseline and the inner step of NAD (its teacher) and Fine-pruning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from ..data.bundle import Split
from ..training import train
from .base import RepairJob, repair
from .discovery import on_device, sgd_config


@dataclass
class FineTuneOptions:
    """SGD lr 0.01, momentum 0.9, weight decay 5e-4, cosine schedule (docs/methods.md section 3)."""

    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    progress: bool = True


def fine_tune_in_place(
    model: nn.Module, clean_subset: Split, opts: FineTuneOptions, seed: int, description: str
) -> float:
    """Fine-tune `model` itself on the clean subset; returns the seconds it took."""
    config = sgd_config(
        opts.epochs,
        opts.lr,
        opts.momentum,
        opts.weight_decay,
        opts.batch_size,
        seed,
        opts.progress,
    )
    return train(model, on_device(clean_subset, model), config, description=description).seconds


@repair("finetune", FineTuneOptions)
def fine_tune(job: RepairJob) -> dict:
    """Fine-tuning: a copy of the model trained on the defender's clean subset.

    The copy stays at the model's deployed neuron config.
    Every setting is fixed in advance (no selection), so neither the test split nor ASR
    plays any part; `val_split`, if given, is only measured for the report
    (`info['val_accuracy']`).
    """
    repaired, clean_subset, opts = job.copy, job.clean_subset, job.options
    seed = job.seed
    seconds = fine_tune_in_place(repaired, clean_subset, opts, seed, "fine-tune")
    return {"budget": {"fine_tune": len(clean_subset)}, "epochs": opts.epochs,
            "steps": opts.epochs * -(-len(clean_subset) // opts.batch_size), "seconds": seconds}
