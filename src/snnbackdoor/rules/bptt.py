"""LR_B: the SNN trained directly with surrogate-gradient BPTT (the one trainer), IF or LIF."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..data.bundle import Split
from ..models.kit import NEURONS
from ..models.registry import ModelSpec, build_model
from ..training import TrainConfig, TrainResult, Transform, seed_everything, train


def train_bptt(
    spec: ModelSpec,
    train_split: Split,
    config: TrainConfig,
    val_split: Split | None = None,
    neuron: str | None = None,
    device: str | torch.device = "cpu",
    description: str | None = None,
    augment: Transform | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Build the SNN of ``spec`` (with ``neuron`` if given: 'if', 'lif', 'plif') and train it.

    The model is seeded from ``config.seed`` before it is built, so a rule's result does not
    depend on what ran before it.
    """
    overrides: dict = {"ann": False}
    if neuron is not None:
        if neuron not in NEURONS:
            raise ValueError(f"unknown neuron {neuron!r}; choose one of {list(NEURONS)}")
        overrides["neuron"] = neuron
    seed_everything(config.seed)
    model = build_model(spec, **overrides).to(device)
    name = neuron or spec.neuron
    result = train(model, train_split, config, val_split, augment=augment,
                   description=description or f"LR_B {name}")
    return model, result
