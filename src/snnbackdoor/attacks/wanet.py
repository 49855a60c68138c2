"""WaNet (Nguyen & Tran 2021): a fixed smooth warp on poisoned samples relabelled to the
target, plus noise-mode "cross" samples (the warp with random offsets) that keep their true
labels, so the model learns the exact warp rather than any warp (docs/methods.md 2).

By default (`poison_mode: per_batch`) this follows WaNet's own training loop: every batch
warps and relabels a fresh `poison_ratio` share of its non-target samples, so the stored
split stays clean and no sample index is poisoned. `poison_mode: fixed` poisons
`poison_ratio` of the split once, like BadNet, and adds the cross samples per batch; a small
network can then memorise the few poisoned images instead of learning the warp (on the
digits it reaches far lower ASR). As in WaNet's loop, the dataset's augmentation (when the
recipe turns it on) runs on the assembled batch *after* the warp and the cross samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.augment import dataset_augmentation
from ..data.bundle import DatasetInfo
from ..registry import register
from ..training import LossFn, Transform
from ..triggers.image import WaNetTrigger
from .base import AttackOutcome, AttackSetup
from .dirty_label import Poisoning, check_image_data, options_record, train_poisoned
from .poisoning import PoisonedSplit, poison_split

POISON_MODES = ("per_batch", "fixed")


@dataclass(frozen=True)
class WaNetOptions:
    """k = 4 control points, strength s = 0.5, `seed` of the warping grid (None: the run's
    seed), cross_ratio 2 (0 turns the cross samples off), poison_mode `per_batch`."""

    k: int = 4
    s: float = 0.5
    grid_rescale: float = 1.0
    seed: int | None = None
    cross_ratio: float = 2.0
    poison_mode: str = "per_batch"

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"wanet k must be >= 2, got {self.k}")
        if not self.cross_ratio >= 0:
            raise ValueError(f"wanet cross_ratio must be >= 0, got {self.cross_ratio}")
        if self.poison_mode not in POISON_MODES:
            raise ValueError(
                f"wanet poison_mode must be one of {POISON_MODES}, got {self.poison_mode!r}"
            )

    def trigger(self, info: DatasetInfo, seed: int = 0) -> WaNetTrigger:
        """The warp these options describe; `seed` stands in for an unset grid seed."""
        return WaNetTrigger(self.k, self.s, self.grid_rescale, self.grid_seed(seed))

    def grid_seed(self, seed: int) -> int:
        return int(seed) if self.seed is None else int(self.seed)


def _with_cross_samples(x: torch.Tensor, candidates: torch.Tensor, count: int,
                        trigger: WaNetTrigger, generator: torch.Generator) -> torch.Tensor:
    """`x` with `count` of the rows in `candidates` (drawn at random) noise-warped."""
    count = min(len(candidates), count)
    if count <= 0:
        return x
    order = torch.randperm(len(candidates), generator=generator)[:count]
    chosen = candidates[order].to(x.device)
    x = x.clone()
    x[chosen] = trigger.cross(x[chosen], generator).to(x.dtype)
    return x


def wanet_cross_loss(trigger: WaNetTrigger, poisoned_index: torch.Tensor, split_size: int,
                     cross_ratio: float = 2.0, seed: int = 0,
                     augment: Transform | None = None) -> LossFn:
    """Trainer `loss_fn` for a split poisoned beforehand (`poison_mode: fixed`): adds
    WaNet's noise-mode cross samples to every batch.

    In a batch holding `p` poisoned samples, `int(cross_ratio * p)` of its clean samples
    (drawn at random) are replaced by their noise-warped versions (the trigger grid plus
    `U(-1, 1) / H` offsets, fresh each batch) and keep their **true** labels; the rest of the
    batch is used as is; `augment`, if any, then runs on the whole batch. Cross-entropy
    over the batch.
    """
    poisoned_mask = torch.zeros(split_size, dtype=torch.bool)
    poisoned_mask[poisoned_index.cpu()] = True
    generator = torch.Generator().manual_seed(int(seed) + 7919)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index) -> torch.Tensor:
        is_poisoned = poisoned_mask[index.cpu()]
        count = int(cross_ratio * int(is_poisoned.sum()))
        x = _with_cross_samples(x, torch.nonzero(~is_poisoned).flatten(), count, trigger,
                                generator)
        return F.cross_entropy(model(augment(x) if augment is not None else x), y)

    return loss


def wanet_batch_loss(trigger: WaNetTrigger, target: int, poison_ratio: float,
                     cross_ratio: float = 2.0, seed: int = 0,
                     augment: Transform | None = None) -> LossFn:
    """Trainer `loss_fn` of WaNet's own training loop (`poison_mode: per_batch`, Nguyen &
    Tran 2021, Alg. 1; also the common DNN benchmark's): in every batch of `n`, a fresh
    `poison_ratio * n` samples (stochastically rounded, non-target only) are warped and
    relabelled to `target`, and `int(cross_ratio * that)` others are noise-warped and keep
    their true labels; `augment`, if any, then runs on the whole batch (augment after
    warp). The stored training split stays clean.
    """
    generator = torch.Generator().manual_seed(int(seed) + 7919)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index) -> torch.Tensor:
        expected = poison_ratio * len(y)
        count = int(expected) + int(float(torch.rand(1, generator=generator)) <
                                    expected - int(expected))
        non_target = torch.nonzero(y.cpu() != int(target)).flatten()
        chosen = non_target[torch.randperm(len(non_target), generator=generator)[:count]]
        is_poisoned = torch.zeros(len(y), dtype=torch.bool)
        is_poisoned[chosen] = True
        if len(chosen):
            device_index = chosen.to(x.device)
            x, y = x.clone(), y.clone()
            x[device_index] = trigger(x[device_index]).to(x.dtype)
            y[device_index] = int(target)
        x = _with_cross_samples(x, torch.nonzero(~is_poisoned).flatten(),
                                int(cross_ratio * len(chosen)), trigger, generator)
        return F.cross_entropy(model(augment(x) if augment is not None else x), y)

    return loss


def wanet_poisoning(setup: AttackSetup, options: WaNetOptions,
                    trigger: WaNetTrigger) -> Poisoning:
    """The split WaNet trains on and its loss (see the module docstring for the two modes)."""
    info = {"poison_mode": options.poison_mode}
    augment = dataset_augmentation(setup.data.info, setup.train.augment)
    if options.poison_mode == "fixed":
        poisoned = poison_split(setup.data.train, trigger, setup.target, setup.poison_ratio,
                                setup.seed)
        loss_fn = wanet_cross_loss(trigger, poisoned.poisoned_index, len(setup.data.train),
                                   options.cross_ratio, setup.seed, augment)
        return Poisoning(poisoned, loss_fn, info, owns_augmentation=True)
    poisoned = PoisonedSplit(setup.data.train, torch.zeros(0, dtype=torch.long))
    loss_fn = wanet_batch_loss(trigger, setup.target, setup.poison_ratio, options.cross_ratio,
                               setup.seed, augment)
    info["poisoned_per_epoch"] = round(setup.poison_ratio * len(setup.data.train))
    return Poisoning(poisoned, loss_fn, info, owns_augmentation=True)


@register("attack", "wanet", options=WaNetOptions)
def wanet(setup: AttackSetup, options: WaNetOptions | None = None) -> AttackOutcome:
    """WaNet: a fixed smooth warp relabelled to the target, plus noise-warped cross samples.

    k = 4, s = 0.5, cross ratio 2 (cross samples keep their labels); poisoned per batch by
    default (see the module docstring).
    """
    options = options or WaNetOptions()
    check_image_data(setup, "wanet")
    trigger = options.trigger(setup.data.info, setup.seed)
    record = {**options_record(options), "seed": options.grid_seed(setup.seed)}
    return train_poisoned("wanet", setup, trigger,
                          lambda: wanet_poisoning(setup, options, trigger), record)
