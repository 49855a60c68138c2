"""Neuromorphic backdoors: poisoning with event-frame triggers (Sneaky Spikes, Flashy) and the
dynamic attack (a spiking autoencoder trained jointly with the classifier).

Every attack trains the given model in place with the one trainer and returns an
`AttackOutcome`; `stealth_metrics` measures how visible a trigger is on clean frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..data.bundle import DatasetBundle, Split
from ..metrics import event_count_change, perturbation_stats
from ..training import TrainConfig, train
from ..triggers.dynamic import DynamicConfig, DynamicJointLoss, DynamicTrigger, build_generator
from ..triggers.events import (
    FlashTrigger,
    FramedTrigger,
    MovingTrigger,
    SmartTrigger,
    StaticTrigger,
    StrobingTrigger,
)
from .base import AttackOutcome, Trigger
from .poisoning import apply_in_batches, choose_poison_index, poison_split

FRAME_TRIGGERS: dict[str, type] = {
    "static": StaticTrigger,
    "moving": MovingTrigger,
    "smart": SmartTrigger,
    "framed": FramedTrigger,
    "strobing": StrobingTrigger,
    "flash": FlashTrigger,
}
"""Trigger kinds a poisoning attack accepts (``dynamic`` is its own attack)."""

TRIGGER_KINDS = (*FRAME_TRIGGERS, "dynamic")
SMART_OPTIONS = ("size", "mode", "seed", "polarity_mode", "value")
TUPLE_OPTIONS = ("position", "frames")  # YAML lists that the trigger dataclasses want as tuples


@dataclass
class PoisonConfig:
    """All-to-one poisoning: ``poison_ratio`` of the training set relabelled to ``target``.

    Poisoned samples come from non-target classes; ``clean_label`` draws them from the target
    class instead and keeps their labels.
    """

    poison_ratio: float = 0.1
    target: int = 0
    clean_label: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.poison_ratio <= 1.0:
            raise ValueError(f"poison_ratio must be in [0, 1], got {self.poison_ratio}")
        if self.target < 0:
            raise ValueError(f"target must be a class index >= 0, got {self.target}")


def trigger_option_names(kind: str) -> tuple[str, ...]:
    """The options a trigger kind accepts (its dataclass fields; SmartTrigger.fit's for smart)."""
    if kind not in TRIGGER_KINDS:
        raise ValueError(f"unknown trigger kind {kind!r}; choose one of {list(TRIGGER_KINDS)}")
    if kind == "smart":
        return SMART_OPTIONS
    cls = DynamicConfig if kind == "dynamic" else FRAME_TRIGGERS[kind]
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def check_trigger_options(kind: str, options: Mapping) -> None:
    """Fail early (before any training) on an unknown kind or option."""
    valid = trigger_option_names(kind)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"trigger kind {kind!r} has no option {unknown}; valid: {list(valid)}")


def _as_tuples(options: Mapping) -> dict:
    return {k: tuple(v) if k in TUPLE_OPTIONS and isinstance(v, list) else v
            for k, v in options.items()}


def build_frame_trigger(kind: str, options: Mapping | None = None,
                        train_frames: torch.Tensor | None = None) -> Trigger:
    """A frame trigger from its kind and options; ``smart`` is fitted on ``train_frames``."""
    options = dict(options or {})
    if kind == "dynamic":
        raise ValueError("the dynamic trigger is trained with its attack: use dynamic_attack")
    check_trigger_options(kind, options)
    options = _as_tuples(options)
    if kind == "smart":
        if train_frames is None:
            raise ValueError("the smart trigger needs the training frames to pick its cell")
        return SmartTrigger.fit(train_frames, **options)
    return FRAME_TRIGGERS[kind](**options)


def poisoning_attack(
    model: nn.Module,
    data: DatasetBundle,
    trigger: Trigger,
    train_config: TrainConfig,
    poison: PoisonConfig | None = None,
    name: str = "poisoning",
) -> AttackOutcome:
    """Train ``model`` in place on the training split poisoned with a frame trigger.

    ``info`` holds the poisoned indices' count, their labels' classes and the training history.
    """
    poison = poison or PoisonConfig()
    poisoned = poison_split(
        data.train, trigger, poison.target, poison.poison_ratio, poison.seed,
        relabel=not poison.clean_label, from_target=poison.clean_label,
    )
    result = train(model, poisoned.split, train_config, data.val, description=name)
    source = data.train.y[poisoned.poisoned_index.to(data.train.y.device)].cpu()
    return AttackOutcome(name, model, trigger, poison.target, info={
        "poisoned": int(len(poisoned.poisoned_index)),
        "poisoned_classes": sorted(set(source.tolist())),
        "train_seconds": round(result.seconds, 3),
        "history": result.history,
    })


def dynamic_attack(
    model: nn.Module,
    data: DatasetBundle,
    train_config: TrainConfig,
    poison: PoisonConfig | None = None,
    config: DynamicConfig | None = None,
    name: str = "dynamic",
) -> AttackOutcome:
    """Sneaky Spikes dynamic attack: train ``model`` and a spiking autoencoder together.

    ``poison_ratio`` of the training set (non-target samples) is the poisoned share that gets
    the backdoor term; the outcome's trigger is the trained ``DynamicTrigger``.
    """
    poison = poison or PoisonConfig()
    config = config or DynamicConfig()
    if poison.clean_label:
        raise ValueError("the dynamic attack relabels through its loss; clean_label is not "
                         "supported")
    device = next(model.parameters()).device
    torch.manual_seed(poison.seed)
    generator = build_generator(data.info.shape, config).to(device)
    index = choose_poison_index(data.train.y, poison.target, poison.poison_ratio, poison.seed)
    mask = torch.zeros(len(data.train), dtype=torch.bool)
    mask[index] = True
    loss = DynamicJointLoss(generator, mask.to(data.train.y.device), poison.target, config,
                            config.lookahead_lr or train_config.lr)
    result = train(model, data.train, train_config, data.val, loss_fn=loss, description=name)
    generator.eval()
    source = data.train.y.cpu()[index]
    losses = loss.generator_losses
    return AttackOutcome(name, model, DynamicTrigger(generator, config.gamma), poison.target,
                         info={
                             "poisoned": int(len(index)),
                             "poisoned_classes": sorted(set(source.tolist())),
                             "train_seconds": round(result.seconds, 3),
                             "history": result.history,
                             "generator_loss_first": losses[0] if losses else None,
                             "generator_loss_last": losses[-1] if losses else None,
                         })


def stealth_metrics(split: Split, trigger: Trigger, target: int | None = None,
                    max_samples: int | None = None) -> dict[str, float]:
    """SSIM, MSE (and l2, linf, psnr) between clean and triggered frames, and the relative
    change in event count, on the split's (non-target) samples; frames' range is the clean
    sample's max count."""
    keep = torch.arange(len(split)) if target is None else torch.nonzero(
        split.y.cpu() != target).flatten()
    if max_samples is not None:
        keep = keep[:max_samples]
    clean = split.floats(keep.to(split.y.device))
    triggered = apply_in_batches(trigger, clean).to(clean.device)
    stats = perturbation_stats(clean, triggered)
    stats["event_count_change"] = event_count_change(clean, triggered)
    return stats
