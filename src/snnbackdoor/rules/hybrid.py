"""LR_H: LR_C, then a few epochs of surrogate-gradient BPTT on the converted SNN at its T.

How the converted IF network is trained (``converted.make_trainable``):
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

from ..data.bundle import Split
from ..training import TrainConfig, TrainResult, Transform, seed_everything, train
from .converted import ConvertedSNN, make_trainable


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


__all__ = ["hybrid_finetune", "make_trainable"]
