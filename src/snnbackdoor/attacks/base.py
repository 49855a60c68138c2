"""What every attack hands on: the deployed model, its trigger and target.

Defenses, the attack x defense matrix and reports only see this, so BadSNN (a neuron-config
backdoor) and the poisoning baselines are measured the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..data.bundle import Split
from ..metrics import attack_success_rate, robust_accuracy
from ..training import evaluate, predict
from .poisoning import apply_in_batches

Trigger = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class AttackOutcome:
    """A backdoored model as shipped (neurons at its deployed config) and how to trigger it."""

    name: str
    model: nn.Module
    trigger: Trigger
    target: int
    info: dict = field(default_factory=dict)


def measure(model: nn.Module, split: Split, trigger: Trigger, target: int) -> dict:
    """`ca` on the clean split; `asr` and `ra` on its triggered non-target samples."""
    keep = torch.nonzero(split.y != target).flatten()
    triggered = apply_in_batches(trigger, split.floats(keep))
    pred = predict(model, triggered).cpu()
    y = split.y[keep].cpu()
    return {
        "ca": evaluate(model, split),
        "asr": attack_success_rate(pred, y, target),
        "ra": robust_accuracy(pred, y, target),
    }
