"""Fine-pruning (Liu et al., RAID 2018): prune the last conv layer's dormant channels, then
fine-tune.

Channels of the last conv layer are ranked by their mean activation on the clean subset
(firing rate for an SNN, read at the activation that consumes the layer), and pruned in
increasing order. A pruned channel's conv weights and BN weight and bias are held at zero
(also while fine-tuning), and so is the channel of everything else summed into that
activation (a residual block's shortcut: its projection BN, or through an identity shortcut
the previous block's branch and shortcut, `discovery.channel_sources`), so the pruned
neuron's input is exactly zero and it never fires.
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
from .base import RepairJob, holdout_split, repair, repair_copy
from .discovery import ConvUnit, channel_sources, collect_features, last_conv_unit, probe_input
from .finetune import FineTuneOptions, fine_tune_in_place


@dataclass
class FinePruningOptions:
    """Prune while clean hold-out accuracy stays within `max_val_drop` of the original
    (`holdout` of the defender's subset; activity is measured on the rest); then fine-tune
    on the whole subset with the FT recipe (SGD lr 0.01, momentum 0.9, wd 5e-4, cosine)."""

    max_val_drop: float = 0.05
    step: int | None = None  # channels added per pruning step; None: ceil(channels / 32)
    prune_count: int | None = None  # prune exactly this many instead of choosing
    holdout: float = 0.3  # of the clean subset, held out to choose how many to prune
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"fine_pruning holdout must be in (0, 1), got {self.holdout}")


def channel_activity(model: nn.Module, unit: ConvUnit, clean_subset: Split) -> torch.Tensor:
    """Mean activation per channel of the last conv unit over the clean subset."""
    _, features = collect_features(model, clean_subset.x, [unit.act_name])
    feature = features[unit.act_name]  # [N, C * H * W]
    channels = unit.conv.out_channels
    return feature.view(len(feature), channels, -1).mean(dim=(0, 2))


def _targets(model: nn.Module, unit: ConvUnit,
             sources: list[str] = ()) -> list[tuple[nn.Module, str]]:
    """(module, tensor name) to mask: the unit's conv and BN and every channel source."""
    modules = dict(model.named_modules())
    names = dict.fromkeys([unit.conv_name, *([unit.bn_name] if unit.bn_name else []),
                           *sources])
    targets = []
    for name in names:
        module = modules[name]
        for tensor in ("weight", "bias"):
            if getattr(module, tensor, None) is not None:
                targets.append((module, tensor))
    return targets


def channel_masks(model: nn.Module, unit: ConvUnit, channels: list[int],
                  sources: list[str] = ()) -> None:
    """Hold the given channels of the unit (and of its `sources`, see `channel_sources`) at
    zero with `torch.nn.utils.prune` masks."""
    for module, name in _targets(model, unit, sources):
        tensor = getattr(module, name)
        mask = torch.ones_like(tensor)
        mask[torch.tensor(channels, dtype=torch.long, device=tensor.device)] = 0.0
        prune.custom_from_mask(module, name, mask)


def remove_masks(model: nn.Module, unit: ConvUnit, sources: list[str] = ()) -> None:
    """Make the pruning permanent (the masked values stay zero, the masks go)."""
    for module, name in _targets(model, unit, sources):
        prune.remove(module, name)


def choose_prune_count(
    model: nn.Module, unit: ConvUnit, order: list[int], holdout: Split, opts: FinePruningOptions,
    sources: list[str] = (),
) -> tuple[int, list[dict]]:
    """Prune in increasing activity, `step` channels at a time; stop before the first count
    whose clean hold-out accuracy falls below the original's minus `max_val_drop`."""
    channels = len(order)
    step = opts.step or max(1, math.ceil(channels / 32))
    base = evaluate(model, holdout)
    sweep = [{"pruned": 0, "holdout_accuracy": base}]
    chosen = 0
    counts = range(step, channels, step)  # never prune the whole layer
    for count in tqdm(counts, desc="fine-pruning sweep", disable=not opts.progress, leave=False):
        candidate = repair_copy(model)
        channel_masks(candidate, unit, order[:count], sources)
        accuracy = evaluate(candidate, holdout)
        sweep.append({"pruned": count, "holdout_accuracy": accuracy})
        if accuracy < base - opts.max_val_drop:
            break
        chosen = count
    return chosen, sweep


@repair("fine_pruning", FinePruningOptions)
def fine_prune(job: RepairJob) -> dict:
    """Fine-pruning: prune the last conv layer's dormant channels, then fine-tune.

    Everything happens inside the defender's clean subset: with `prune_count` unset,
    `holdout` (0.3) of it is held out, activity is measured on the rest, and how many
    channels go is the most that keep hold-out accuracy within `max_val_drop` (0.05) of the
    unpruned model's (pruning in increasing activity, stopping at the first count that falls
    below); the fine-tuning then uses the whole subset. `val_split` is only measured; never
    the test split, never ASR. `info` holds the ranking, the sweep, the pruned channels, the
    silenced sources and `budget` (samples per use).
    """
    repaired, clean_subset = job.copy, job.clean_subset
    opts, seed = job.options, job.seed
    probe = probe_input(clean_subset, repaired)
    unit = last_conv_unit(repaired, probe)
    sources = channel_sources(repaired, probe, unit.act_name)
    fit, held = (clean_subset, None) if opts.prune_count is not None else holdout_split(
        clean_subset, opts.holdout, seed)
    activity = channel_activity(repaired, unit, fit)
    order = [int(i) for i in activity.argsort(stable=True)]
    sweep: list[dict] = []
    if held is None:
        count = min(int(opts.prune_count), len(order))
    else:
        count, sweep = choose_prune_count(repaired, unit, order, held, opts, sources)
    pruned = sorted(order[:count])
    if pruned:
        channel_masks(repaired, unit, pruned, sources)
    ft_opts = FineTuneOptions(opts.epochs, opts.lr, opts.momentum, opts.weight_decay,
                              opts.batch_size, opts.progress)
    fine_tune_in_place(repaired, clean_subset, ft_opts, seed, "fine-pruning fine-tune")
    if pruned:
        remove_masks(repaired, unit, sources)
    budget = {"activity": len(fit), "fine_tune": len(clean_subset)}
    if held is not None:
        budget["choose_count"] = len(held)
    return {
        "budget": budget,
        "layer": unit.conv_name,
        "activation": unit.act_name,
        "silenced_sources": sources,
        "activity": activity.tolist(),
        "order": order,
        "pruned": pruned,
        "pruned_count": len(pruned),
        "sweep": sweep,
    }
