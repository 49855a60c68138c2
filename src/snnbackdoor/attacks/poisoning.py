"""Data poisoning shared by every poisoning attack: pick samples by seed, trigger, relabel.

All-to-one: poisoned samples get label `target`; by default they are drawn from non-target
classes (a clean-label attack draws from the target class and keeps labels instead).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..data.bundle import Split

Trigger = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PoisonedSplit:
    """The poisoned training split and which of its samples were poisoned."""

    split: Split
    poisoned_index: torch.Tensor  # indices into `split` (== indices into the clean split)


def choose_poison_index(
    y: torch.Tensor, target: int, ratio: float, seed: int, from_target: bool = False
) -> torch.Tensor:
    """`ratio` of the whole split, drawn by seed from non-target (or only target) samples."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"poison ratio must be in [0, 1], got {ratio}")
    y = y.cpu()
    pool = torch.nonzero((y == target) if from_target else (y != target)).flatten()
    count = min(len(pool), int(round(ratio * len(y))))
    if ratio > 0 and count == 0:
        raise ValueError(f"poison ratio {ratio} selects no sample out of {len(y)}")
    generator = torch.Generator().manual_seed(seed)
    chosen = pool[torch.randperm(len(pool), generator=generator)[:count]]
    return chosen.sort().values


def apply_in_batches(trigger: Trigger, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Trigger float samples in batches (keeps memory flat on large splits)."""
    return torch.cat([trigger(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def poison_split(
    split: Split,
    trigger: Trigger,
    target: int,
    ratio: float,
    seed: int,
    relabel: bool = True,
    from_target: bool = False,
    index: torch.Tensor | None = None,
) -> PoisonedSplit:
    """A float copy of `split` whose chosen samples carry the trigger (and label `target`)."""
    if index is None:
        index = choose_poison_index(split.y, target, ratio, seed, from_target)
    x = split.floats().clone()
    y = split.y.clone()
    if len(index):
        device_index = index.to(x.device)
        x[device_index] = apply_in_batches(trigger, x[device_index]).to(x.dtype)
        if relabel:
            y[device_index] = target
    return PoisonedSplit(Split(x, y), index)


def triggered_non_target(split: Split, trigger: Trigger, target: int) -> Split:
    """The non-target samples of a split with the trigger applied, true labels kept (for ASR)."""
    keep = torch.nonzero(split.y != target).flatten()
    if len(keep) == 0:
        raise ValueError("the split has no non-target sample to measure the attack on")
    x = apply_in_batches(trigger, split.floats(keep))
    return Split(x, split.y[keep])
