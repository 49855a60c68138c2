"""Fine-pruning (Liu et al., RAID 2018): prune the last conv layer's dormant channels, then
fine-tune.

Channels of the last conv layer are ranked by their mean activation on the clean subset
(firing rate for an SNN, read at the activation that consumes the layer), and pruned in
increasing order. A pruned channel's conv weights and BN weight and bias are held at zero
(also while fine-tuning), so its activation input is exactly zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils import prune
from tqdm.auto import tqdm

from ..data.bundle import Split
from ..training import evaluate
from .base import RepairJob, repair, repair_copy
from .discovery import ConvUnit, collect_features, last_conv_unit, probe_input
from .finetune import FineTuneOptions, fine_tune_in_place


@dataclass
class FinePruningOptions:
    """Prune while clean validation accuracy stays within `max_val_drop` of the original;
    then fine-tune with the FT recipe (SGD lr 0.01, momentum 0.9, wd 5e-4, cosine)."""

    max_val_drop: float = 0.05
    step: int | None = None  # channels added per pruning step; None: ceil(channels / 32)
    prune_count: int | None = None  # prune exactly this many instead of choosing on val
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    progress: bool = True


def channel_activity(model: nn.Module, unit: ConvUnit, clean_subset: Split) -> torch.Tensor:
    """Mean activation per channel of the last conv unit over the clean subset."""
    _, features = collect_features(model, clean_subset.x, [unit.act_name])
    feature = features[unit.act_name]  # [N, C * H * W]
    channels = unit.conv.out_channels
    return feature.view(len(feature), channels, -1).mean(dim=(0, 2))


def _targets(model: nn.Module, unit: ConvUnit) -> list[tuple[nn.Module, str]]:
    modules = dict(model.named_modules())
    conv = modules[unit.conv_name]
    targets = [(conv, "weight")] + ([(conv, "bias")] if conv.bias is not None else [])
    if unit.bn_name is not None:
        bn = modules[unit.bn_name]
        if bn.weight is not None:
            targets += [(bn, "weight"), (bn, "bias")]
    return targets


def channel_masks(model: nn.Module, unit: ConvUnit, channels: list[int]) -> None:
    """Hold the given channels of the unit at zero with `torch.nn.utils.prune` masks."""
    for module, name in _targets(model, unit):
        tensor = getattr(module, name)
        mask = torch.ones_like(tensor)
        mask[torch.tensor(channels, dtype=torch.long, device=tensor.device)] = 0.0
        prune.custom_from_mask(module, name, mask)


def remove_masks(model: nn.Module, unit: ConvUnit) -> None:
    """Make the pruning permanent (the masked values stay zero, the masks go)."""
    for module, name in _targets(model, unit):
        prune.remove(module, name)


def choose_prune_count(
    model: nn.Module, unit: ConvUnit, order: list[int], val_split: Split, opts: FinePruningOptions
) -> tuple[int, list[dict]]:
    """Prune in increasing activity, `step` channels at a time; stop before the first count
    whose clean validation accuracy falls below the original's minus `max_val_drop`."""
    channels = len(order)
    step = opts.step or max(1, math.ceil(channels / 32))
    base = evaluate(model, val_split)
    sweep = [{"pruned": 0, "val_accuracy": base}]
    chosen = 0
    counts = range(step, channels, step)  # never prune the whole layer
    for count in tqdm(counts, desc="fine-pruning sweep", disable=not opts.progress, leave=False):
        candidate = repair_copy(model)
        channel_masks(candidate, unit, order[:count])
        accuracy = evaluate(candidate, val_split)
        sweep.append({"pruned": count, "val_accuracy": accuracy})
        if accuracy < base - opts.max_val_drop:
            break
        chosen = count
    return chosen, sweep


@repair("fine_pruning", FinePruningOptions)
def fine_prune(job: RepairJob) -> dict:
    """Fine-pruning: prune the last conv layer's dormant channels, then fine-tune.

    Activity is measured on the clean subset; how many channels go is chosen on clean
    validation data (`val_split`): the most that keep accuracy within `max_val_drop` (0.05)
    of the unpruned model's, pruning in increasing activity and stopping at the first count
    that falls below. Never the test split, never ASR. Without `val_split`, `prune_count`
    must be given. `info` holds the ranking, the sweep and the pruned channels.
    """
    repaired, clean_subset, val_split = job.copy, job.clean_subset, job.val_split
    opts, seed = job.options, job.seed
    if opts.prune_count is None and val_split is None:
        raise ValueError(
            "fine_pruning chooses how much to prune on val_split: pass one, or "
            "set options['prune_count']"
        )
    unit = last_conv_unit(repaired, probe_input(clean_subset, repaired))
    activity = channel_activity(repaired, unit, clean_subset)
    order = [int(i) for i in activity.argsort(stable=True)]
    sweep: list[dict] = []
    if opts.prune_count is not None:
        count = min(int(opts.prune_count), len(order))
    else:
        count, sweep = choose_prune_count(repaired, unit, order, val_split, opts)
    pruned = sorted(order[:count])
    if pruned:
        channel_masks(repaired, unit, pruned)
    ft_opts = FineTuneOptions(opts.epochs, opts.lr, opts.momentum, opts.weight_decay,
                              opts.batch_size, opts.progress)
    fine_tune_in_place(repaired, clean_subset, ft_opts, seed, "fine-pruning fine-tune")
    if pruned:
        remove_masks(repaired, unit)
    return {
        "layer": unit.conv_name,
        "activation": unit.act_name,
        "activity": activity.tolist(),
        "order": order,
        "pruned": pruned,
        "pruned_count": len(pruned),
        "sweep": sweep,
    }
