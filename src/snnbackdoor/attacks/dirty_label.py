"""Training and packaging shared by the image poisoning attacks (BadNet, Blend, WaNet,
Clean-Label): poison the training split, train a fresh model with the run's recipe, measure.

How the poisoning ratio is counted: over the **whole** training split,
`round(setup.poison_ratio * len(train))` samples, drawn once by seed (`attacks.poisoning`).
An attack whose own training loop poisons otherwise (WaNet per batch) or draws from the
target class only (Clean-Label) says so in its module. Nothing here is dataset- or
model-specific; each attack module builds its trigger from its options and the seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

from ..data.augment import dataset_augmentation
from ..training import LossFn, TrainResult, cross_entropy_loss, seed_everything, train
from .base import AttackOutcome, AttackSetup, Trigger, measure, trained_stage
from .poisoning import PoisonedSplit, poison_split


@dataclass
class Poisoning:
    """What an attack trains on: the poisoned split, the trainer's loss and what to report."""

    poisoned: PoisonedSplit
    loss_fn: LossFn = cross_entropy_loss
    info: dict = field(default_factory=dict)
    # the loss applies the dataset's augmentation itself (after its own triggering, as
    # WaNet's loop does), so the trainer must not augment before it
    owns_augmentation: bool = False


def check_image_data(setup: AttackSetup, attack: str) -> None:
    """Image attacks refuse event data with a message that says so."""
    info = setup.data.info
    if info.kind != "image":
        raise ValueError(f"{attack} is an image attack; dataset {info.name!r} holds {info.kind}")


def options_record(options) -> dict:
    """An options dataclass as JSON-able data (tuples as lists) for the attack's info."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(options).items()}


def train_recipe(setup: AttackSetup, split, loss_fn: LossFn = cross_entropy_loss,
                 description: str = "train",
                 augment: bool = True) -> tuple[nn.Module, TrainResult]:
    """A fresh model trained on `split` with `setup.train`, seeded by `setup.seed` (initial
    weights too) and with the dataset's augmentation when `train.augment` is set (and
    `augment`: False when `loss_fn` augments itself); the model comes back in eval mode."""
    recipe = dataclasses.replace(setup.train, seed=int(setup.seed))
    seed_everything(int(setup.seed))  # the initial weights too: torch's own seed is random
    model = setup.build_model()
    result = train(model, split, recipe, setup.data.val, loss_fn=loss_fn,
                   augment=dataset_augmentation(setup.data.info, recipe.augment and augment),
                   description=description)
    model.eval()
    return model, result


def dirty_label_poisoning(setup: AttackSetup, trigger: Trigger) -> Poisoning:
    """All-to-one: `poison_ratio` of the split, drawn by seed from non-target classes,
    triggered and relabelled to the target."""
    return Poisoning(poison_split(setup.data.train, trigger, setup.target, setup.poison_ratio,
                                  setup.seed))


def train_poisoned(name: str, setup: AttackSetup, trigger: Trigger,
                   poisoning: Callable[[], Poisoning], options: dict) -> AttackOutcome:
    """Poison (`poisoning()`), train a fresh model on the result and measure it, as the
    resumable stage `model` of `setup.workdir` (a finished attack is loaded, not retrained:
    `poisoning` is then not called either). `options` is recorded in the outcome's info."""

    def build() -> tuple[nn.Module, dict]:
        plan = poisoning()
        index = plan.poisoned.poisoned_index
        model, result = train_recipe(setup, plan.poisoned.split, plan.loss_fn, name,
                                     augment=not plan.owns_augmentation)
        val = measure(model, setup.data.val, trigger, setup.target)
        info = {
            "attack": name,
            "target": int(setup.target),
            "poison_ratio": float(setup.poison_ratio),
            "poison_count": len(index),
            "poisoned_index": [int(i) for i in index],
            "options": options,
            "epochs": setup.train.epochs,
            "val_ca": val["ca"],
            "val_asr": val["asr"],
            "test": measure(model, setup.data.test, trigger, setup.target),
            "train_seconds": round(result.seconds, 3),
            "history": result.history,
            **plan.info,
        }
        return model, info

    model, info = trained_stage(setup, "model", build)
    return AttackOutcome(name, model, trigger, int(setup.target), info,
                         triggers={name: trigger},
                         poisoned_index=[int(i) for i in info["poisoned_index"]])



def dirty_label_attack(name: str, setup: AttackSetup, options,
                       record: dict | None = None) -> AttackOutcome:
    """An image attack whose options build its trigger (`options.trigger(info, seed)`),
    poisoned all-to-one (`dirty_label_poisoning`) and trained by `train_poisoned`."""
    check_image_data(setup, name)
    trigger = options.trigger(setup.data.info, setup.seed)
    return train_poisoned(name, setup, trigger, lambda: dirty_label_poisoning(setup, trigger),
                          options_record(options) if record is None else record)
