"""The attack protocol: what every attack is given (`AttackSetup`) and hands on (`AttackOutcome`).

An attack is a function `attack(setup, options) -> AttackOutcome`, registered with
`@register("attack", name, options=OptionsDataclass)`. Defenses, detectors, the attack x
defense matrix and reports only see the outcome, so BadSNN (a neuron-config backdoor) and the
poisoning baselines are measured the same way, and the matrix knows no attack by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..data.bundle import DatasetBundle, Split
from ..metrics import attack_success_rate, robust_accuracy
from ..training import TrainConfig, evaluate, predict
from .poisoning import apply_in_batches

Trigger = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttackSetup:
    """Everything an attack may use; nothing here is specific to one attack.

    `build_model()` returns a fresh, untrained model on `device` (a registered model or a
    user's own SpikingClassifier). `poison_ratio` is the share of the *whole* training split
    an attack poisons (an attack that counts otherwise says so in its options).
    `clean_model()` returns the clean model trained with the same recipe (a surrogate or a
    control), trained on first call. `workdir`, when set, is a folder where the attack keeps
    resumable stages (models, triggers); without it the attack runs in memory.
    """

    data: DatasetBundle
    build_model: Callable[[], nn.Module]
    train: TrainConfig
    target: int = 0
    poison_ratio: float = 0.05
    seed: int = 0
    device: torch.device = torch.device("cpu")
    clean_model: Callable[[], nn.Module] | None = None
    workdir: Path | None = None

    def __post_init__(self) -> None:
        classes = self.data.info.num_classes
        if not 0 <= int(self.target) < classes:
            raise ValueError(
                f"target class {self.target} is not a class of {self.data.info.name} "
                f"(0..{classes - 1}); pick another target"
            )


@dataclass
class AttackOutcome:
    """A backdoored model as shipped (neurons at its deployed config) and how to trigger it.

    `trigger` is the test-time trigger the attack is measured with; `triggers` holds every
    trigger the attack defines by name (e.g. BadSNN's T_p and T_o). `deployed` is the neuron
    config the model is shipped at (None: the model's own). `poisoned_index` lists the
    training samples the attack changed (the defender's clean subset never holds them).
    `info` is JSON-able: what the attack measured and chose (validation figures, options).
    """

    name: str
    model: nn.Module
    trigger: Trigger
    target: int
    info: dict = field(default_factory=dict)
    triggers: dict[str, Trigger] = field(default_factory=dict)
    deployed: dict | None = None
    poisoned_index: list[int] = field(default_factory=list)


def measure(model: nn.Module, split: Split, trigger: Trigger, target: int) -> dict:
    """`ca` on the clean split; `asr` and `ra` on its triggered non-target samples."""
    keep = torch.nonzero(split.y != target).flatten()
    triggered = apply_in_batches(trigger, split.floats(keep))
    pred = predict(model, triggered).cpu()
    y = split.y[keep].cpu()
    return {
        "ca": evaluate(model, split),
        "asr": attack_success_rate(pred, y, target),
        "ra": robust_accuracy(pred, y, target),
    }


def trained_stage(setup: AttackSetup, name: str,
                  build: Callable[[], tuple[nn.Module, dict]]) -> tuple[nn.Module, dict]:
    """`build()` -> (model, info), or with `setup.workdir` the finished result of an earlier
    run (model file `<workdir>/<name>.safetensors` and its stage info), so a resumed matrix
    never retrains an attack. Without a workdir the attack runs in memory."""
    if setup.workdir is None:
        return build()
    from ..rundir import RunDir

    model, info = RunDir(setup.workdir).model_stage(name, build, setup.device,
                                                    rebuild=setup.build_model)
    return model.eval(), info
