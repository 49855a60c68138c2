"""Neuromorphic backdoors: poisoning with event-frame triggers (Sneaky Spikes, Flashy) and the
dynamic attack (a spiking autoencoder trained jointly with the classifier).

Two layers: `poisoning_attack` and `dynamic_attack` train a given model object in place (a
user's own SpikingJelly network works); the registered attacks `event_poison` and `dynamic`
follow the attack protocol (`(AttackSetup, options) -> AttackOutcome`), so the attack x
defense matrix runs them on any event dataset. `stealth_metrics` measures how visible a
trigger is on clean frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..data.bundle import DatasetBundle, Split
from ..metrics import event_count_change, perturbation_stats
from ..registry import get, register
from ..training import TrainConfig, train
from ..triggers.base import build_trigger, check_trigger_options
from ..triggers.dynamic import DynamicConfig, DynamicJointLoss, DynamicTrigger, build_generator
from .base import AttackOutcome, AttackSetup, Trigger, trained_stage
from .poisoning import apply_in_batches, choose_poison_index, poison_split

FRAME_TRIGGERS = ("static", "moving", "smart", "framed", "strobing", "flash")
"""Trigger kinds the event poisoning attack accepts (Sneaky Spikes and Flashy squares)."""

TRIGGER_KINDS = (*FRAME_TRIGGERS, "dynamic")
"""Every neuromorphic trigger kind: the frame triggers and the learned dynamic one."""


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

    def index(self, y: torch.Tensor) -> torch.Tensor:
        """The training samples this poisoning changes (seeded; sorted)."""
        return choose_poison_index(y, self.target, self.poison_ratio, self.seed,
                                   from_target=self.clean_label)


def build_frame_trigger(kind: str, options: Mapping | None = None,
                        train_frames: torch.Tensor | None = None) -> Trigger:
    """A frame trigger from its kind and options; ``smart`` is fitted on ``train_frames``."""
    check_trigger_options(kind, options, TRIGGER_KINDS)
    return build_trigger(kind, options, train_frames)


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
    return AttackOutcome(name, model, trigger, poison.target,
                         info=_info(data, poisoned.poisoned_index, result),
                         poisoned_index=poisoned.poisoned_index.tolist())


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
    index = poison.index(data.train.y)
    mask = torch.zeros(len(data.train), dtype=torch.bool)
    mask[index] = True
    loss = DynamicJointLoss(generator, mask.to(data.train.y.device), poison.target, config,
                            config.lookahead_lr or train_config.lr)
    result = train(model, data.train, train_config, data.val, loss_fn=loss, description=name)
    generator.eval()
    losses = loss.generator_losses
    info = {**_info(data, index, result),
            "generator_loss_first": losses[0] if losses else None,
            "generator_loss_last": losses[-1] if losses else None}
    return AttackOutcome(name, model, DynamicTrigger(generator, config.gamma), poison.target,
                         info=info, poisoned_index=index.tolist())


def _info(data: DatasetBundle, index: torch.Tensor, result) -> dict:
    """What every neuromorphic attack records: the poisoned count and classes, training."""
    source = data.train.y.cpu()[index.cpu()]
    return {
        "poisoned": int(len(index)),
        "poisoned_classes": sorted(set(source.tolist())),
        "train_seconds": round(result.seconds, 3),
        "history": result.history,
    }


# --------------------------------------------------------------------------- the protocol


@dataclass(frozen=True)
class EventPoisonOptions:
    """Options of `event_poison`: the frame trigger, its options, clean-label poisoning."""

    trigger: str = "static"
    trigger_options: dict = field(default_factory=dict)
    clean_label: bool = False

    def __post_init__(self) -> None:
        check_trigger_options(self.trigger, self.trigger_options, FRAME_TRIGGERS)


def _options(cls: type, options) -> object:
    """The options dataclass from an instance, a mapping (a config section) or None."""
    if isinstance(options, cls):
        return options
    return cls(**dict(options or {}))


def _check_events(setup: AttackSetup, attack: str) -> None:
    if setup.data.info.kind != "events":
        raise ValueError(f"the {attack} attack needs event frames; dataset "
                         f"{setup.data.info.name!r} holds {setup.data.info.kind}")


@register("attack", "event_poison", options=EventPoisonOptions, paper="sneaky_spikes/flashy")
def event_poison(setup: AttackSetup, options: EventPoisonOptions | Mapping | None = None
                 ) -> AttackOutcome:
    """Sneaky Spikes / Flashy poisoning: a frame trigger on `poison_ratio` of the training set.

    Non-target samples are stamped and relabelled to the target (clean-label: target samples
    are stamped and keep their labels)."""
    options = _options(EventPoisonOptions, options)
    _check_events(setup, "event_poison")
    poison = PoisonConfig(setup.poison_ratio, setup.target, options.clean_label, setup.seed)
    name = f"{get('trigger', options.trigger).meta.get('paper', 'events')}/{options.trigger}"
    held: dict = {}

    def make_trigger() -> Trigger:  # deterministic: rebuilt, not stored, on a resumed run
        fitted = get("trigger", options.trigger).meta.get("fit")  # smart: fitted on the data
        return build_frame_trigger(options.trigger, options.trigger_options,
                                   setup.data.train.floats() if fitted else None)

    def build() -> tuple[nn.Module, dict]:
        model = setup.build_model()
        held["trigger"] = make_trigger()
        outcome = poisoning_attack(model, setup.data, held["trigger"], setup.train, poison,
                                   name=name)
        return outcome.model, outcome.info

    model, info = trained_stage(setup, f"event_poison_{options.trigger}", build)
    trigger = held["trigger"] if "trigger" in held else make_trigger()
    return AttackOutcome(name, model, trigger, setup.target, info=info,
                         triggers={options.trigger: trigger},
                         poisoned_index=poison.index(setup.data.train.y).tolist())


@register("attack", "dynamic", options=DynamicConfig, paper="sneaky_spikes")
def dynamic(setup: AttackSetup, options: DynamicConfig | Mapping | None = None) -> AttackOutcome:
    """Sneaky Spikes dynamic attack: a spiking autoencoder learns an input-specific trigger.

    It is trained with the classifier; `poison_ratio` of the training split (non-target
    samples) gets the backdoor term."""
    config = _options(DynamicConfig, options)
    _check_events(setup, "dynamic")
    poison = PoisonConfig(setup.poison_ratio, setup.target, False, setup.seed)
    path = None if setup.workdir is None else setup.workdir / "dynamic_trigger.safetensors"
    held: dict = {}

    def build() -> tuple[nn.Module, dict]:
        outcome = dynamic_attack(setup.build_model(), setup.data, setup.train, poison, config,
                                 name="sneaky_spikes/dynamic")
        held["trigger"] = outcome.trigger
        if path is not None:
            outcome.trigger.save(path)
        return outcome.model, outcome.info

    model, info = trained_stage(setup, "dynamic", build)
    trigger = held["trigger"] if "trigger" in held else DynamicTrigger.load(path, setup.device)
    return AttackOutcome("sneaky_spikes/dynamic", model, trigger, setup.target, info=info,
                         triggers={"dynamic": trigger},
                         poisoned_index=poison.index(setup.data.train.y).tolist())


# --------------------------------------------------------------------------- stealth


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


