"""LR_H: LR_C, then a few epochs of surrogate-gradient BPTT on the converted SNN at its T.

How the converted IF network is made trainable (``make_trainable``):
- its neurons stay SpikingJelly's converter output, ``IFNode(v_threshold=1, v_reset=None)``
  (soft reset: the threshold is subtracted, the residue is kept), between the two fixed
  ``VoltageScaler``s that carry the threshold-balancing scale of each layer;
- the Heaviside's gradient is replaced by a surrogate (ATan by default, as in LR_B) and the
  reset is detached from the graph (``detach_reset=True``), as in the BPTT models;
- the weights and biases (convs with BN already fused, linears) are trained, the balancing
  scales are buffers and stay fixed; there is no BN left, so train and eval modes agree;
- the forward runs multi-step in time chunks without detaching the membrane between
  chunks, so BPTT sees all T steps; training uses the same loop as every other model.
"""

from __future__ import annotations

import copy

import torch
from spikingjelly.activation_based import neuron

from ..data.bundle import Split
from ..models.kit import SURROGATES
from ..training import TrainConfig, TrainResult, Transform, seed_everything, train
from .conversion import ConvertedSNN


def make_trainable(
    model: ConvertedSNN, surrogate: str = "atan", detach_reset: bool = True
) -> ConvertedSNN:
    """Give the converter's IF nodes a surrogate gradient and make the weights trainable."""
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)}")
    nodes = [m for m in model.modules() if isinstance(m, neuron.BaseNode)]
    if not nodes:
        raise ValueError("the model has no spiking node to train")
    for node in nodes:
        node.surrogate_function = SURROGATES[surrogate]()
        node.detach_reset = bool(detach_reset)
    for param in model.parameters():
        param.requires_grad_(True)
    model.trainable = {"surrogate": surrogate, "detach_reset": bool(detach_reset)}
    return model


def hybrid_finetune(
    converted: ConvertedSNN,
    train_split: Split,
    T: int,
    config: TrainConfig,
    val_split: Split | None = None,
    surrogate: str = "atan",
    detach_reset: bool = True,
    description: str = "LR_H fine-tune",
    augment: Transform | None = None,
) -> tuple[ConvertedSNN, TrainResult]:
    """A trained copy of ``converted`` (T steps, surrogate-gradient BPTT); the input is kept."""
    seed_everything(config.seed)
    model = copy.deepcopy(converted)
    model.T = int(T)
    make_trainable(model, surrogate, detach_reset)
    result = train(model, train_split, config, val_split, augment=augment,
                   description=description)
    model.eval()
    return model, result


def trainable_parameters(model: torch.nn.Module) -> int:
    """How many weights a fine-tune updates (the balancing scales are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
