"""`kind: neuromorphic`: Sneaky Spikes and Flashy Backdoor triggers on event frames.

Stages: one clean model (the same recipe), then one backdoored model per entry of
`triggers:`, each made by a registered attack (`event_poison` for static / moving / smart /
framed / strobing / flash, `dynamic` for the learned trigger). Each stage is resumable; the
run keeps one clean test sample and its triggered versions (`frames_sample.safetensors`) so
`report.neuromorphic.render_neuromorphic` draws `table.csv`, `report.md`,
`figures/frames.png` and one `figures/frames_<label>.gif` per trigger from the run alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..attacks.base import AttackSetup, Trigger, measure
from ..attacks.neuromorphic import (
    TRIGGER_KINDS,
    PoisonConfig,
    build_frame_trigger,
    stealth_metrics,
)
from ..data.bundle import DatasetBundle
from ..registry import get, lookup
from ..report.frames import save_sample
from ..report.neuromorphic import SAMPLE_FILE, render_neuromorphic
from ..rundir import RunDir
from ..training import TrainConfig, evaluate, seed_everything
from ..triggers.base import check_trigger_options
from ..util import resolve_device
from .base import (
    DatasetConfig,
    ExperimentConfig,
    ModelConfig,
    dataset_from_config,
    model_warning,
    new_model,
    register_experiment,
    train_clean,
    warnings_of,
)

POISONING_ATTACK = "event_poison"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class TriggerEntry:
    """One attacked model: a trigger kind, its options, and its name in the table."""

    kind: str = "static"
    label: str | None = None  # row name and file stem; defaults to the kind
    attack: str | None = None  # table's attack column; defaults to sneaky_spikes / flashy
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_trigger_options(self.kind, self.options, TRIGGER_KINDS)
        self.label = self.label or self.kind
        self.attack = self.attack or get("trigger", self.kind).meta["paper"]
        if not _LABEL.match(self.label):
            raise ValueError(f"trigger label {self.label!r} must be letters, digits, _ . - "
                             "(it names files in the run directory)")

    @property
    def learned(self) -> bool:
        """The trigger is trained by its own attack (dynamic), not built from options."""
        return bool(get("trigger", self.kind).meta.get("trained"))


@dataclass
class PoisonSettings:
    """Poisoning shared by every trigger (the run's seed picks the poisoned samples)."""

    poison_ratio: float = 0.1
    target: int = 0
    clean_label: bool = False

    def __post_init__(self) -> None:
        PoisonConfig(self.poison_ratio, self.target, self.clean_label)


@dataclass
class NeuromorphicExperiment(ExperimentConfig):
    """`kind: neuromorphic`: a clean model and one poisoned model per trigger."""

    kind: str = "neuromorphic"
    name: str = "neuromorphic"
    dataset: DatasetConfig = field(
        default_factory=lambda: DatasetConfig(name="ndigits", options={"T": 8}))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="nmnist_net"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=12))
    attack: PoisonSettings = field(default_factory=PoisonSettings)
    triggers: list[TriggerEntry] = field(
        default_factory=lambda: [TriggerEntry("static", options={"position": "top_left"})])
    stealth_samples: int | None = 1000  # test samples for SSIM/MSE (None: all non-target)
    figure_bins: int = 4  # time bins shown per sample in figures/frames.png

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.triggers:
            raise ValueError("triggers must list at least one trigger")
        labels = [t.label for t in self.triggers]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"trigger labels must be unique; repeated: {repeated} "
                             "(give each entry a `label:`)")
        learned = [t.label for t in self.triggers if t.learned]
        if self.attack.clean_label and learned:
            raise ValueError(f"attack.clean_label does not apply to {learned}: a learned trigger "
                             "relabels through its loss")
        if self.figure_bins < 1:
            raise ValueError(f"figure_bins must be >= 1, got {self.figure_bins}")
        if self.stealth_samples is not None and self.stealth_samples < 1:
            raise ValueError("stealth_samples must be >= 1 (or null for all)")


# --------------------------------------------------------------------------- stages


def _trigger_path(run: RunDir, entry: TriggerEntry) -> Path:
    return run.path / f"trigger_{entry.label}.safetensors"


def _setup(config: NeuromorphicExperiment, data: DatasetBundle, device) -> AttackSetup:
    """The attack protocol's input; every trigger's model starts from the same weights."""

    def build_model():
        seed_everything(config.seed)  # same initial weights for every trigger, resumed or not
        return new_model(config, data.info, device)

    a = config.attack
    return AttackSetup(data, build_model, config.train, a.target, a.poison_ratio, config.seed,
                       device)


def _attack(entry: TriggerEntry, clean_label: bool) -> tuple[str, dict]:
    """(registered attack, its options) that plants the entry's trigger."""
    if entry.learned:
        return entry.kind, entry.options
    return POISONING_ATTACK, {"trigger": entry.kind, "trigger_options": entry.options,
                              "clean_label": clean_label}


def _attack_stage(config: NeuromorphicExperiment, entry: TriggerEntry, data: DatasetBundle,
                  clean_model, run: RunDir, device) -> tuple:
    target = config.attack.target
    name, options = _attack(entry, config.attack.clean_label)
    outcome = lookup("attack", name)(_setup(config, data, device), options)
    if entry.learned:
        outcome.trigger.save(_trigger_path(run, entry))
    model = outcome.model
    scores = measure(model, data.test, outcome.trigger, target)
    stealth = stealth_metrics(data.test, outcome.trigger, target, config.stealth_samples)
    baseline = measure(clean_model, data.test, outcome.trigger, target)
    info = {
        "attack": entry.attack, "trigger": entry.kind, "options": entry.options,
        **scores, **stealth,
        "val_ca": evaluate(model, data.val),
        "asr_clean_model": baseline["asr"],
        **outcome.info,
    }
    return model, info


def _load_trigger(entry: TriggerEntry, data: DatasetBundle, run: RunDir, device) -> Trigger:
    """The entry's trigger again: the saved generator of a learned one, else rebuilt."""
    if entry.learned:
        return get("trigger", entry.kind).obj.load(_trigger_path(run, entry), device)
    fitted = get("trigger", entry.kind).meta.get("fit")
    return build_frame_trigger(entry.kind, entry.options, data.train.floats() if fitted else None)


# --------------------------------------------------------------------------- runner


@register_experiment("neuromorphic", NeuromorphicExperiment)
def run_neuromorphic(config: NeuromorphicExperiment, run: RunDir) -> dict:
    device = resolve_device(config.device)
    data = dataset_from_config(config, device)
    if data.info.kind != "events":
        raise ValueError(f"kind: neuromorphic needs an event dataset (ndigits, nmnist, "
                         f"dvsgesture, cifar10dvs), got {data.info.name!r}")
    if not 0 <= config.attack.target < data.info.num_classes:
        raise ValueError(f"attack.target {config.attack.target} is not a class of "
                         f"{data.info.name} (0..{data.info.num_classes - 1})")
    clean_model, clean_info = run.model_stage(
        "clean", lambda: train_clean(config, data, device, description="clean"), device)
    attacks: dict[str, dict] = {}
    classes = data.info.num_classes
    models = {"clean model": clean_model}  # warnings after every stage: no RNG shift
    for entry in tqdm(config.triggers, desc="triggers", unit="model",
                      disable=not config.train.progress):
        model, info = run.model_stage(
            f"attack_{entry.label}",
            lambda entry=entry: _attack_stage(config, entry, data, clean_model, run, device),
            device)
        attacks[entry.label] = {**info, "ca_drop": clean_info["test_accuracy"] - info["ca"]}
        models[f"{entry.label} model"] = model
    metrics = {
        "warnings": warnings_of(*(model_warning(name, m, data.test, classes)
                                  for name, m in models.items())),
        "clean_ca": clean_info["test_accuracy"],
        "clean_val_ca": clean_info["val_accuracy"],
        "dataset": data.info.name,
        "frames": list(data.info.shape),
        "splits": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "target": config.attack.target,
        "poison_ratio": config.attack.poison_ratio,
        "attacks": {label: {k: v for k, v in info.items() if k != "history"}
                    for label, info in attacks.items()},
        "seconds": run.stage_seconds(),
    }
    sample = int(torch.nonzero(data.test.y.cpu() != config.attack.target).flatten()[0])
    clean = data.test.floats(torch.tensor([sample], device=data.test.y.device))
    triggered = {entry.label: _load_trigger(entry, data, run, device)(clean)[0]
                 for entry in config.triggers}
    save_sample(run.path / SAMPLE_FILE, clean[0], triggered, {"test_index": sample})
    run.write_metrics(metrics)
    render_neuromorphic(run.path)
    return metrics


__all__ = ["NeuromorphicExperiment", "PoisonSettings", "TriggerEntry", "run_neuromorphic"]
