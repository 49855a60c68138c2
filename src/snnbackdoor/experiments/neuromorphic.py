"""`kind: neuromorphic`: Sneaky Spikes and Flashy Backdoor triggers on event frames.

Stages: one clean model (the same recipe), then one backdoored model per entry of
`triggers:` (poisoning for static / moving / smart / framed / strobing / flash, joint
training for dynamic). Each stage is resumable; the run writes `table.csv`
(`attack, trigger, ca, asr, ssim, mse`), `metrics.json`, `report.md` and
`figures/frames.png` (clean and triggered frames over time, per trigger).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..attacks.base import Trigger, measure
from ..attacks.neuromorphic import (
    FRAME_TRIGGERS,
    PoisonConfig,
    build_frame_trigger,
    check_trigger_options,
    dynamic_attack,
    poisoning_attack,
    stealth_metrics,
)
from ..data.bundle import DatasetBundle
from ..report.frames import plot_frames
from ..report.tables import table_csv, table_rows
from ..rundir import RunDir
from ..training import TrainConfig, evaluate, seed_everything
from ..triggers.dynamic import DynamicConfig, DynamicTrigger
from ..util import resolve_device
from .base import (
    DatasetConfig,
    ExperimentConfig,
    ModelConfig,
    dataset_from_config,
    new_model,
    register_experiment,
    train_clean,
)

FAMILIES = {"static": "sneaky_spikes", "moving": "sneaky_spikes", "smart": "sneaky_spikes",
            "dynamic": "sneaky_spikes", "framed": "flashy", "strobing": "flashy",
            "flash": "flashy"}
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class TriggerEntry:
    """One attacked model: a trigger kind, its options, and its name in the table."""

    kind: str = "static"
    label: str | None = None  # row name and file stem; defaults to the kind
    attack: str | None = None  # table's attack column; defaults to sneaky_spikes / flashy
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_trigger_options(self.kind, self.options)
        self.label = self.label or self.kind
        self.attack = self.attack or FAMILIES[self.kind]
        if not _LABEL.match(self.label):
            raise ValueError(f"trigger label {self.label!r} must be letters, digits, _ . - "
                             "(it names files in the run directory)")
        if self.kind == "dynamic":
            DynamicConfig(**self.options)


@dataclass
class AttackSettings:
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
    seed: int = 0
    device: str = "auto"
    dataset: DatasetConfig = field(
        default_factory=lambda: DatasetConfig(name="ndigits", options={"T": 8}))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="nmnist_net"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=12))
    attack: AttackSettings = field(default_factory=AttackSettings)
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
        if self.figure_bins < 1:
            raise ValueError(f"figure_bins must be >= 1, got {self.figure_bins}")
        if self.stealth_samples is not None and self.stealth_samples < 1:
            raise ValueError("stealth_samples must be >= 1 (or null for all)")


# --------------------------------------------------------------------------- stages


def _poison_config(config: NeuromorphicExperiment) -> PoisonConfig:
    a = config.attack
    return PoisonConfig(a.poison_ratio, a.target, a.clean_label, seed=config.seed)


def _trigger_path(run: RunDir, entry: TriggerEntry) -> Path:
    return run.path / f"trigger_{entry.label}.safetensors"


def _frame_trigger(entry: TriggerEntry, data: DatasetBundle) -> Trigger:
    train_frames = data.train.x if entry.kind == "smart" else None
    return build_frame_trigger(entry.kind, entry.options, train_frames)


def _attack_stage(config: NeuromorphicExperiment, entry: TriggerEntry, data: DatasetBundle,
                  clean_model, run: RunDir, device) -> tuple:
    poison = _poison_config(config)
    seed_everything(config.seed)  # same initial weights for every trigger, resumed or not
    model = new_model(config, data.info, device)
    name = f"{entry.attack}/{entry.label}"
    if entry.kind == "dynamic":
        outcome = dynamic_attack(model, data, config.train, poison,
                                 DynamicConfig(**entry.options), name=name)
        outcome.trigger.save(_trigger_path(run, entry))
    else:
        outcome = poisoning_attack(model, data, _frame_trigger(entry, data), config.train,
                                   poison, name=name)
    scores = measure(model, data.test, outcome.trigger, poison.target)
    stealth = stealth_metrics(data.test, outcome.trigger, poison.target, config.stealth_samples)
    baseline = measure(clean_model, data.test, outcome.trigger, poison.target)
    info = {
        "attack": entry.attack, "trigger": entry.kind, "options": entry.options,
        **scores, **stealth,
        "val_ca": evaluate(model, data.val),
        "asr_clean_model": baseline["asr"],
        **outcome.info,
    }
    return model, info


def _load_trigger(entry: TriggerEntry, data: DatasetBundle, run: RunDir, device) -> Trigger:
    if entry.kind == "dynamic":
        return DynamicTrigger.load(_trigger_path(run, entry), device)
    return _frame_trigger(entry, data)


# --------------------------------------------------------------------------- outputs


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def report_markdown(config: NeuromorphicExperiment, data: DatasetBundle, metrics: dict) -> str:
    a = config.attack
    lines = [
        f"# Neuromorphic backdoors: {config.name}",
        "",
        f"Dataset `{data.info.name}` (frames {list(data.info.shape)}, train {len(data.train)}, "
        f"val {len(data.val)}, test {len(data.test)}), model `{config.model.name}`, "
        f"{config.train.epochs} epochs. Poisoning: ratio {a.poison_ratio}, target {a.target}"
        f"{', clean-label' if a.clean_label else ''}, seed {config.seed}.",
        "",
        f"Clean model: test accuracy `clean_ca` = {metrics['clean_ca']:.4f}.",
        "",
        "| attack | trigger | ca | asr | ssim | mse | ca drop | event count change "
        "| asr of the clean model | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, info in metrics["attacks"].items():
        lines.append(
            f"| {info['attack']} | {label} | {_fmt(info['ca'])} | {_fmt(info['asr'])} | "
            f"{_fmt(info['ssim'])} | {_fmt(info['mse'], 5)} | {_fmt(info['ca_drop'])} | "
            f"{_fmt(info['event_count_change'])} | {_fmt(info['asr_clean_model'])} | "
            f"{_fmt(info.get('train_seconds'), 1)} |")
    lines += [
        "",
        "`ca`: clean test accuracy of the backdoored model; `asr`: share of triggered "
        "non-target test samples classified as the target; `ssim`/`mse`: clean vs triggered "
        "frames (range: the clean sample's max count); event count change: relative change "
        "of the total count per sample.",
        "",
        "![clean and triggered frames](figures/frames.png)",
        "",
    ]
    return "\n".join(lines)


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
    for entry in tqdm(config.triggers, desc="triggers", unit="model"):
        _, info = run.model_stage(
            f"attack_{entry.label}",
            lambda entry=entry: _attack_stage(config, entry, data, clean_model, run, device),
            device)
        info["ca_drop"] = clean_info["test_accuracy"] - info["ca"]
        attacks[entry.label] = info
    metrics = {
        "clean_ca": clean_info["test_accuracy"],
        "clean_val_ca": clean_info["val_accuracy"],
        "dataset": data.info.name,
        "frames": list(data.info.shape),
        "target": config.attack.target,
        "poison_ratio": config.attack.poison_ratio,
        "attacks": {label: {k: v for k, v in info.items() if k != "history"}
                    for label, info in attacks.items()},
        "seconds": run.stage_seconds(),
    }
    rows = table_rows(metrics["clean_ca"], attacks)
    run.write_text("table.csv", table_csv(rows))
    sample = int(torch.nonzero(data.test.y.cpu() != config.attack.target).flatten()[0])
    clean = data.test.floats(torch.tensor([sample], device=data.test.y.device))
    triggered = {entry.label: _load_trigger(entry, data, run, device)(clean)[0]
                 for entry in config.triggers}
    plot_frames(clean[0], triggered, run.path / "figures" / "frames.png", config.figure_bins)
    run.write_text("report.md", report_markdown(config, data, metrics))
    return metrics


__all__ = ["FRAME_TRIGGERS", "NeuromorphicExperiment", "TriggerEntry", "plot_frames",
           "run_neuromorphic", "table_rows"]
