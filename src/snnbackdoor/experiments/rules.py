"""Experiment kind ``rules``: one poisoned dataset, three learning rules (Jin et al.).

Orchestration only: parse the config, poison the training split once, run the stages of
`experiments.rules_stages` in order (``ann``, ``lr_b_<neuron>``, ``lr_c``, ``lr_h``,
``robustness``, ``detection``, ``elimination``; each resumable through RunDir), gather the
metrics, and let ``report.rules.render_rules`` write ``table.csv``, ``report.md`` and
``figures/migration.png`` from the run directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch.nn as nn

from ..config import check_range
from ..models.kit import NEURONS, SURROGATES
from ..report.rules import render_rules
from ..rules.attack import EVENT_TRIGGERS, IMAGE_TRIGGERS, make_trigger, poison_training
from ..rules.conversion import validate_mode
from ..rules.converted import EVENT_INPUTS
from ..rules.detection import METHODS
from ..rundir import RunDir
from ..training import TrainConfig
from ..util import resolve_device
from .base import (
    ExperimentConfig,
    dataset_from_config,
    model_warning,
    register_experiment,
    warnings_of,
)
from .rules_stages import (
    rule_cpu_seconds,
    rule_seconds,
    stage_ann,
    stage_bptt,
    stage_conversion,
    stage_detection,
    stage_elimination,
    stage_hybrid,
    stage_robustness,
    summarise,
    table_rows,
)

# ---------------------------------------------------------------------- config


@dataclass
class PoisonSection:
    """The poisoning shared by every rule (all-to-one)."""

    trigger: str = "badnet"
    options: dict = field(default_factory=dict)
    target: int = 0
    poison_ratio: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 < self.poison_ratio <= 1.0:
            raise ValueError(f"attack.poison_ratio must be in (0, 1], got {self.poison_ratio}")
        known = (*IMAGE_TRIGGERS, *EVENT_TRIGGERS)
        if self.trigger not in known:
            raise ValueError(f"attack.trigger {self.trigger!r} is unknown; choose one of "
                             f"{list(known)}")


@dataclass
class BPTTSection:
    """LR_B: which neurons to train directly (IF vs LIF), at model.T."""

    neurons: list[str] = field(default_factory=lambda: ["if", "lif"])

    def __post_init__(self) -> None:
        bad = [n for n in self.neurons if n not in NEURONS]
        if bad or not self.neurons:
            raise ValueError(f"lr_b.neurons must be a non-empty list of {list(NEURONS)}, got "
                             f"{self.neurons}")


@dataclass
class ConversionSection:
    """LR_C: SpikingJelly RateCodingRecipe settings and the T values to run."""

    T: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    mode: str | float = "max"  # 'max', a percentile like '99.9%', or a fraction of the max
    calibration: str = "clean"  # clean | poisoned training data for threshold balancing
    calibration_samples: int | None = None  # None: the whole training split
    calibration_batch_size: int = 128
    momentum: float = 0.1
    channel_wise: bool = False
    pre_spike_maxpool: bool = False  # with channel_wise: max pool before the IF node (VGG)
    event_input: str = "cycle"  # cycle | resample | mean (event frames only)
    chunk: int = 16  # time steps per multi-step call (memory)
    probe_T: int = 32  # T of the converted SNN used by robustness, detection, elimination
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not self.T or any(t < 1 for t in self.T):
            raise ValueError(f"conversion.T must be a non-empty list of T >= 1, got {self.T}")
        self.T = sorted(set(self.T))
        self.mode = validate_mode(self.mode)
        if self.calibration not in ("clean", "poisoned"):
            raise ValueError("conversion.calibration must be 'clean' or 'poisoned'")
        if self.event_input not in EVENT_INPUTS:
            raise ValueError(f"conversion.event_input must be one of {EVENT_INPUTS}")
        check_range("conversion.probe_T", self.probe_T, 1, 4096, integer=True)
        check_range("conversion.chunk", self.chunk, 1, 4096, integer=True)
        check_range("conversion.calibration_batch_size", self.calibration_batch_size, 1,
                    1_000_000, integer=True)
        check_range("conversion.batch_size", self.batch_size, 1, 1_000_000, integer=True)


@dataclass
class HybridSection:
    """LR_H: surrogate-gradient fine-tuning of the converted SNN at T (on the poisoned data)."""

    T: int = 16
    epochs: int = 3
    lr: float = 1e-4
    optimizer: str = "adam"
    batch_size: int = 64
    surrogate: str = "atan"
    detach_reset: bool = True

    def __post_init__(self) -> None:
        check_range("hybrid.T", self.T, 1, 4096, integer=True)
        check_range("hybrid.epochs", self.epochs, 0, 10_000, integer=True)
        check_range("hybrid.lr", self.lr, 0, 10, low_open=True)
        check_range("hybrid.batch_size", self.batch_size, 1, 1_000_000, integer=True)
        if self.surrogate not in SURROGATES:
            raise ValueError(f"hybrid.surrogate must be one of {sorted(SURROGATES)}")

    def train_config(self, recipe: TrainConfig, seed: int) -> TrainConfig:
        """The run's recipe with the hybrid's epochs, optimiser, lr and batch size."""
        return dataclasses.replace(recipe, epochs=self.epochs, batch_size=self.batch_size,
                                   optimizer=self.optimizer, lr=self.lr, weight_decay=0.0,
                                   seed=seed, compile=False)


@dataclass
class RobustnessSection:
    """ANN vs SNN robustness: accuracy under Gaussian input noise, and RA under the trigger."""

    noise_std: float = 0.1  # images: pixel units; frames: times each sample's max count
    seed: int = 0

    def __post_init__(self) -> None:
        if self.noise_std < 0:
            raise ValueError("robustness.noise_std must be >= 0")


@dataclass
class DetectionSection:
    """Membrane/spike-statistics input detector, fitted on clean data only."""

    enabled: bool = True
    frr: float = 0.05
    methods: list[str] = field(default_factory=lambda: ["global", "class"])
    shrinkage: float = 0.1
    fit_samples: int | None = 1000  # clean training inputs to fit on (None: all)

    def __post_init__(self) -> None:
        if not 0 < self.frr < 1:
            raise ValueError("detection.frr must be in (0, 1)")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"detection.methods must be among {list(METHODS)}, got {bad}")


@dataclass
class EliminationSection:
    """Elimination by fine-tuning each backdoored SNN on a small clean subset, with the
    defenses' fine-tuning (the `finetune` defense: SGD, momentum 0.9, cosine schedule).
    Each model is fine-tuned at `lr` and at every `lr_candidates`; the run with the best
    validation accuracy is kept (a converted SNN carries ANN-scale logits and diverges at a
    learning rate that suits a BPTT-trained one)."""

    enabled: bool = True
    fraction: float = 0.05  # of the clean training split (the defender's data)
    epochs: int = 10
    lr: float = 0.01
    lr_candidates: list[float] = field(default_factory=lambda: [0.001, 0.0001])
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError("elimination.fraction must be in (0, 1]")
        check_range("elimination.epochs", self.epochs, 0, 10_000, integer=True)
        check_range("elimination.batch_size", self.batch_size, 1, 1_000_000, integer=True)
        for lr in (self.lr, *self.lr_candidates):
            check_range("elimination.lr", lr, 0, 10, low_open=True)

    def options(self, progress: bool, lr: float) -> dict:
        return {"epochs": self.epochs, "lr": lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                "progress": progress}


@dataclass
class RulesExperiment(ExperimentConfig):
    """`kind: rules`: poison once, obtain the SNN by LR_B, LR_C and LR_H, compare."""

    kind: str = "rules"
    name: str = "rules"
    attack: PoisonSection = field(default_factory=PoisonSection)
    lr_b: BPTTSection = field(default_factory=BPTTSection)
    conversion: ConversionSection = field(default_factory=ConversionSection)
    hybrid: HybridSection = field(default_factory=HybridSection)
    robustness: RobustnessSection = field(default_factory=RobustnessSection)
    detection: DetectionSection = field(default_factory=DetectionSection)
    elimination: EliminationSection = field(default_factory=EliminationSection)


# ---------------------------------------------------------------------- runner


def strip(info: dict) -> dict:
    """A stage's info without its training history (kept in stages.json, not in metrics)."""
    return {k: v for k, v in info.items() if k != "history"}


@register_experiment("rules", RulesExperiment)
def run_rules(config: RulesExperiment, run: RunDir) -> dict:
    device = resolve_device(config.device)
    data = dataset_from_config(config, device)
    trigger = make_trigger(config.attack.trigger, config.attack.options, data, config.seed)
    target = config.attack.target
    poisoned = poison_training(data, trigger, target, config.attack.poison_ratio, config.seed)
    run.stage("poison", lambda: {"poisoned": len(poisoned.poisoned_index),
                                 "train_samples": len(data.train),
                                 "index_head": poisoned.poisoned_index[:20].tolist()})
    split = poisoned.split

    ann, ann_info = stage_ann(config, run, data, split, trigger, device)
    lr_b_models, lr_b = {}, {}
    for neuron in config.lr_b.neurons:
        lr_b_models[neuron], lr_b[neuron] = stage_bptt(
            config, run, data, split, trigger, device, neuron)
    lr_c, lr_c_info = stage_conversion(config, run, data, split, trigger, ann, ann_info, device)
    lr_h, lr_h_info = stage_hybrid(config, run, data, split, trigger, lr_c, device)

    probe = f"LR_C (T={lr_c.T})"
    snns: dict[str, nn.Module] = {f"LR_B {n}": m for n, m in lr_b_models.items()}
    snns[probe] = lr_c
    snns[f"LR_H (T={lr_h.T})"] = lr_h
    robustness = stage_robustness(config, run, data, trigger, {"ANN": ann, **snns}, lr_c,
                                   ann_info)
    detection = stage_detection(config, run, data, trigger, snns) \
        if config.detection.enabled else None
    elimination = stage_elimination(config, run, data, trigger, snns) \
        if config.elimination.enabled else None

    rows = table_rows(ann_info, lr_b, lr_c_info, lr_h_info)
    classes = data.info.num_classes
    warnings = warnings_of(*(model_warning(name, model, data.test, classes)
                             for name, model in {"ANN": ann, **snns}.items()))
    metrics = {
        "warnings": warnings,
        "ann_ca": ann_info["ca"],
        "ann_asr": ann_info["asr"],
        "ann": strip(ann_info),
        "lr_b": {n: strip(i) for n, i in lr_b.items()},
        "lr_c": lr_c_info,
        "lr_h": strip(lr_h_info),
        "robustness": robustness,
        "detection": detection,
        "elimination": elimination,
        "table": rows,
        "seconds": rule_seconds(rows),
        "cpu_seconds": rule_cpu_seconds(ann_info, lr_b, lr_c_info, lr_h_info),
        "stage_seconds": run.stage_seconds(),
    }
    metrics["summary"] = summarise(ann_info, lr_c_info)
    metrics["first_T_migrating"] = metrics["summary"]["first_T_migrating"]
    metrics["max_migration_rate"] = metrics["summary"]["max_migration_rate"]
    run.write_metrics(metrics)
    render_rules(run.path)
    return metrics
