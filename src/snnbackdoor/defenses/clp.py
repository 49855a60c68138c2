"""CLP, channel Lipschitzness-based pruning (Zheng et al., ECCV 2022): data-free.

For each conv -> BN pair, the upper bound of channel k's Lipschitz constant is the largest
singular value of `W_k * |gamma_k / sigma_k|` (`W_k` as a [in, kh*kw] matrix). Channels
scoring above `mean + u * std` of their layer are pruned by zeroing the BN's weight and bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .base import RepairJob, repair
from .discovery import conv_bn_pairs, probe_input


@dataclass
class CLPOptions:
    """u = 3 (the paper's and BadSNN's fixed threshold)."""

    u: float = 3.0
    progress: bool = True  # accepted like every defense's; CLP has no long loop


@torch.no_grad()
def channel_lipschitz(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """Per output channel: spectral norm of `W_k * |gamma_k / sqrt(var_k + eps)|`."""
    weight = conv.weight.detach().float()
    gamma = bn.weight.detach().float()
    scale = (gamma / (bn.running_var.float() + bn.eps).sqrt()).abs()
    matrices = weight.reshape(weight.shape[0], weight.shape[1], -1) * scale.view(-1, 1, 1)
    return torch.linalg.matrix_norm(matrices.cpu(), ord=2)


@repair("clp", CLPOptions)
def clp_prune(job: RepairJob) -> dict:
    """CLP: prune channels with outlying Lipschitz upper bounds (data-free).

    The BN weight and bias of each pruned channel are zeroed in a copy of the model.
    Data-free: the only setting, u, is fixed (3); the clean subset lends only the input
    shape for the probe pass that checks which BN directly follows which conv. `val_split`
    is only measured for the report. `info['pruned']` maps BN names to channels.
    """
    repaired, clean_subset, opts = job.copy, job.clean_subset, job.options
    pairs = conv_bn_pairs(repaired, probe_input(clean_subset, repaired, zeros=True))
    pruned: dict[str, list[int]] = {}
    for pair in pairs:
        if pair.bn.weight is None or pair.bn.running_var is None:
            continue  # a BN without affine parameters or running statistics: nothing to prune
        scores = channel_lipschitz(pair.conv, pair.bn)
        if len(scores) < 2:
            continue
        index = torch.nonzero(scores > scores.mean() + opts.u * scores.std()).flatten()
        if len(index) == 0:
            continue
        with torch.no_grad():
            device_index = index.to(pair.bn.running_var.device)
            pair.bn.weight[device_index] = 0.0
            pair.bn.bias[device_index] = 0.0
        pruned[pair.bn_name] = index.tolist()
    return {
        "u": opts.u,
        "pairs": [(p.conv_name, p.bn_name) for p in pairs],
        "pruned": pruned,
        "pruned_count": sum(len(v) for v in pruned.values()),
    }
