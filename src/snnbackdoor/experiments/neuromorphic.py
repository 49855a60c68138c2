"""`kind: neuromorphic`: Sneaky Spikes and Flashy Backdoor triggers on event frames.

Stages: one clean model (the same recipe), then one backdoored model per entry of
`triggers:`, each made by a registered attack (`event_poison` for static / moving / smart /
framed / strobing / flash, `dynamic` for the learned trigger). Each stage is resumable; the
run keeps one clean test sample and its triggered versions (`frames_sample.safetensors`) so
`report.neuromorphic.render_neuromorphic` draws `table.csv`, `report.md`,
`figures/frames.png` and one `figures/frames_<label>.gif` per trigger from the run alone.
An entry's `select:` trains one candidate per value of one option (the dynamic trigger's
gamma) and keeps the value with the highest validation ASR at validation SSIM >= a floor;
the test split is measured once, on the kept candidate.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

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
from ..training import TrainConfig, seed_everything
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
class Selection:
    """Choose one trigger option on the validation split: among `values`, the one with the
    highest validation ASR whose validation SSIM is >= `ssim_floor` (none: the stealthiest)."""

    option: str = "gamma"
    values: list[float] = field(default_factory=list)
    ssim_floor: float = 0.9

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("select.values must list at least one value")
        if not 0 < self.ssim_floor <= 1:
            raise ValueError(f"select.ssim_floor must be in (0, 1], got {self.ssim_floor}")


def choose(rows: list[dict], ssim_floor: float) -> int:
    """Index of the kept candidate: highest `val_asr` among rows with `val_ssim` >= the floor
    (ties: the higher SSIM); if no row reaches the floor, the row with the highest SSIM."""
    stealthy = [i for i, row in enumerate(rows) if row["val_ssim"] >= ssim_floor]
    if not stealthy:
        return max(range(len(rows)), key=lambda i: rows[i]["val_ssim"])
    return max(stealthy, key=lambda i: (rows[i]["val_asr"], rows[i]["val_ssim"]))


@dataclass
class TriggerEntry:
    """One attacked model: a trigger kind, its options, and its name in the table."""

    kind: str = "static"
    label: str | None = None  # row name and file stem; defaults to the kind
    attack: str | None = None  # table's attack column; defaults to sneaky_spikes / flashy
    options: dict = field(default_factory=dict)
    select: Selection | None = None  # choose one option on validation (e.g. gamma)
    poison_ratio: float | None = None  # this entry's poisoning; None: attack.poison_ratio

    def __post_init__(self) -> None:
        check_trigger_options(self.kind, self.options, TRIGGER_KINDS)
        if self.poison_ratio is not None and not 0 < self.poison_ratio <= 1:
            raise ValueError(f"trigger poison_ratio must be in (0, 1], got {self.poison_ratio}")
        for value in self.select.values if self.select else ():
            check_trigger_options(self.kind, {**self.options, self.select.option: value},
                                  TRIGGER_KINDS)
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


def _setup(config: NeuromorphicExperiment, data: DatasetBundle, device,
           poison_ratio: float | None = None) -> AttackSetup:
    """The attack protocol's input; every trigger's model starts from the same weights."""

    def build_model():
        seed_everything(config.seed)  # same initial weights for every trigger, resumed or not
        return new_model(config, data.info, device)

    a = config.attack
    ratio = a.poison_ratio if poison_ratio is None else poison_ratio
    return AttackSetup(data, build_model, config.train, a.target, ratio, config.seed, device)


def _attack(entry: TriggerEntry, options: dict, clean_label: bool) -> tuple[str, dict]:
    """(registered attack, its options) that plants the entry's trigger with `options`."""
    if entry.learned:
        return entry.kind, options
    return POISONING_ATTACK, {"trigger": entry.kind, "trigger_options": options,
                              "clean_label": clean_label}


def _candidate_stage(config: NeuromorphicExperiment, entry: TriggerEntry, options: dict,
                     stem: str, data: DatasetBundle, run: RunDir, device) -> tuple:
    """Train one attacked model with `options`; its validation ASR, CA and SSIM (no test)."""
    target = config.attack.target
    name, attack_options = _attack(entry, options, config.attack.clean_label)
    outcome = lookup("attack", name)(_setup(config, data, device, entry.poison_ratio),
                                     attack_options)
    if entry.learned:
        outcome.trigger.save(run.path / f"trigger_{stem}.safetensors")
    val = measure(outcome.model, data.val, outcome.trigger, target)
    stealth = stealth_metrics(data.val, outcome.trigger, target, config.stealth_samples)
    info = {"options": options, "val_ca": val["ca"], "val_asr": val["asr"],
            "val_ssim": stealth["ssim"], "val_mse": stealth["mse"], **outcome.info}
    if dataclasses.is_dataclass(outcome.trigger) and hasattr(outcome.trigger, "gamma"):
        info["deploy_curve"] = _deploy_curve(config, outcome.model, outcome.trigger, data)
    return outcome.model, info


DEPLOY_FACTORS = (0.25, 0.5, 1.0, 1.5, 2.0)
"""Multiples of the trained gamma at which a learned trigger's validation curve is drawn."""


def _deploy_curve(config: NeuromorphicExperiment, model, trigger, data: DatasetBundle) -> list:
    """Validation ASR and SSIM of one trained model and generator, its pattern scaled by
    each of `DEPLOY_FACTORS` (the trade-off without retraining; selection never uses it)."""
    rows = []
    for factor in DEPLOY_FACTORS:
        scaled = dataclasses.replace(trigger, gamma=trigger.gamma * factor)
        val = measure(model, data.val, scaled, config.attack.target)
        stealth = stealth_metrics(data.val, scaled, config.attack.target, config.stealth_samples)
        rows.append({"gamma": scaled.gamma, "val_asr": val["asr"], "val_ssim": stealth["ssim"]})
    return rows


def _test_info(config: NeuromorphicExperiment, entry: TriggerEntry, model, trigger: Trigger,
               data: DatasetBundle, clean_model, info: dict) -> dict:
    """The test-split figures of a kept model, measured once, with the clean model's ASR."""
    target = config.attack.target
    scores = measure(model, data.test, trigger, target)
    stealth = stealth_metrics(data.test, trigger, target, config.stealth_samples)
    baseline = measure(clean_model, data.test, trigger, target)
    ratio = config.attack.poison_ratio if entry.poison_ratio is None else entry.poison_ratio
    return {"attack": entry.attack, "trigger": entry.kind, "poison_ratio": ratio, **info,
            **scores, **stealth, "asr_clean_model": baseline["asr"]}


def _load_trigger(entry: TriggerEntry, options: dict, stem: str, data: DatasetBundle,
                  run: RunDir, device) -> Trigger:
    """A trigger again: the saved generator of a learned one, else rebuilt from options."""
    if entry.learned:
        return get("trigger", entry.kind).obj.load(run.path / f"trigger_{stem}.safetensors",
                                                   device)
    fitted = get("trigger", entry.kind).meta.get("fit")
    return build_frame_trigger(entry.kind, options, data.train.floats() if fitted else None)


def _entry(config: NeuromorphicExperiment, entry: TriggerEntry, data: DatasetBundle,
           clean_model, run: RunDir, device) -> tuple:
    """(model, info) of one trigger entry: its candidates (if `select:`), the kept one on test."""
    select = entry.select
    candidates = [(entry.options, entry.label)] if select is None else [
        ({**entry.options, select.option: value}, f"{entry.label}.{select.option}{value:g}")
        for value in select.values]
    rows, kept = [], None
    for index, (options, stem) in enumerate(candidates):
        model, info = run.model_stage(
            f"attack_{stem}", lambda o=options, s=stem: _candidate_stage(
                config, entry, o, s, data, run, device), device)
        rows.append({k: v for k, v in info.items() if k != "history"})
        best = 0 if select is None else choose(rows, select.ssim_floor)
        if best == index:
            kept = (model, info, options, stem)
    model, info, options, stem = kept
    trigger = _load_trigger(entry, options, stem, data, run, device)
    info = _test_info(config, entry, model, trigger, data, clean_model, info)
    if select is not None:
        info["selection"] = {"option": select.option, "ssim_floor": select.ssim_floor,
                             "kept": options[select.option],
                             "candidates": [{select.option: r["options"][select.option],
                                             **{k: r[k] for k in ("val_asr", "val_ca",
                                                                  "val_ssim", "val_mse")},
                                             "deploy_curve": r.get("deploy_curve")}
                                            for r in rows]}
    return model, info, trigger


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
    triggers: dict[str, Trigger] = {}
    for entry in tqdm(config.triggers, desc="triggers", unit="model",
                      disable=not config.train.progress):
        model, info, triggers[entry.label] = _entry(config, entry, data, clean_model, run,
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
    triggered = {label: trigger(clean)[0] for label, trigger in triggers.items()}
    save_sample(run.path / SAMPLE_FILE, clean[0], triggered, {"test_index": sample})
    run.write_metrics(metrics)
    render_neuromorphic(run.path)
    return metrics


__all__ = ["NeuromorphicExperiment", "PoisonSettings", "Selection", "TriggerEntry", "choose",
           "run_neuromorphic"]
