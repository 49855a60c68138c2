"""Experiment kind ``rules``: one poisoned dataset, three learning rules (Jin et al.).

Stages (each resumable through RunDir): ``ann`` (the ReLU twin on the poisoned data),
``lr_b_<neuron>`` (BPTT SNNs), ``lr_c`` (SpikingJelly conversion, CA/ASR at every T),
``lr_h`` (converted SNN fine-tuned with surrogate gradients), ``robustness``, ``detection``,
``elimination``. Writes ``table.csv`` (rule, neuron, T, ca, asr, migration_rate, seconds),
``report.md`` and ``figures/migration.png``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..attacks.base import measure
from ..attacks.poisoning import triggered_non_target
from ..data.augment import dataset_augmentation
from ..data.bundle import DatasetBundle, Split
from ..metrics import accuracy
from ..models.kit import NEURONS, SURROGATES
from ..rules.attack import EVENT_TRIGGERS, IMAGE_TRIGGERS, make_trigger, poison_training
from ..rules.bptt import train_bptt
from ..rules.conversion import (
    EVENT_INPUTS,
    ConvertedSNN,
    load_converted,
    logits_over_time,
    measure_over_time,
    migration_rate,
    save_converted,
    timed_convert,
    train_ann,
    validate_mode,
)
from ..rules.detection import METHODS, evaluate_detection
from ..rules.hybrid import hybrid_finetune, make_trainable
from ..rundir import RunDir
from ..training import TrainConfig, evaluate, logits_of
from ..util import resolve_device
from .base import (
    DatasetConfig,
    ExperimentConfig,
    ModelConfig,
    dataset_from_config,
    model_spec,
    register_experiment,
)

TABLE_COLUMNS = ("rule", "neuron", "T", "ca", "asr", "migration_rate", "seconds")


# ---------------------------------------------------------------------- config


@dataclass
class AttackSection:
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
        if self.probe_T < 1 or self.chunk < 1:
            raise ValueError("conversion.probe_T and conversion.chunk must be >= 1")


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
        if self.T < 1 or self.epochs < 0:
            raise ValueError("hybrid.T must be >= 1 and hybrid.epochs >= 0")
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
    defenses' fine-tuning (REPAIRS['finetune']: SGD, momentum 0.9, cosine schedule).
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

    def options(self, progress: bool, lr: float) -> dict:
        return {"epochs": self.epochs, "lr": lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                "progress": progress}


@dataclass
class RulesExperiment(ExperimentConfig):
    """`kind: rules`: poison once, obtain the SNN by LR_B, LR_C and LR_H, compare."""

    kind: str = "rules"
    name: str = "rules"
    seed: int = 0
    device: str = "auto"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackSection = field(default_factory=AttackSection)
    lr_b: BPTTSection = field(default_factory=BPTTSection)
    conversion: ConversionSection = field(default_factory=ConversionSection)
    hybrid: HybridSection = field(default_factory=HybridSection)
    robustness: RobustnessSection = field(default_factory=RobustnessSection)
    detection: DetectionSection = field(default_factory=DetectionSection)
    elimination: EliminationSection = field(default_factory=EliminationSection)


# ---------------------------------------------------------------------- helpers


def converted_stage(run: RunDir, name: str, build, device) -> tuple[ConvertedSNN, dict]:
    """Like RunDir.model_stage for converted SNNs (files under ``converted/``)."""
    path = run.path / "converted" / f"{name}.safetensors"
    if run.done(name) and path.exists():
        run.log(stage=name, status="reused")
        return load_converted(path, device), run.stages[name]
    holder: dict = {}

    def compute() -> dict:
        model, info = build()
        save_converted(model, path)
        holder["model"] = model
        return info

    run.stages.pop(name, None)
    info = run.stage(name, compute)
    return holder["model"], info


def gaussian_noise(x: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    """Seeded Gaussian noise: images clipped to [0, 1]; frames scaled by each sample's max
    count and clipped at 0. The same noise for every model."""
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x)
    if x.ndim == 5:
        peak = x.flatten(1).amax(1).clamp(min=1e-6).view(-1, 1, 1, 1, 1)
        return (x + std * peak * noise).clamp(min=0)
    return (x + std * noise).clamp(0, 1)


def clean_subset(split: Split, fraction: float, seed: int) -> Split:
    """A seeded random share of a split (kept in the split's order)."""
    count = max(1, int(round(fraction * len(split))))
    index = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:count]
    return split.subset(index.sort().values.to(split.y.device))


def _attack_metrics(model: nn.Module, data: DatasetBundle, trigger, target: int) -> dict:
    return measure(model, data.test, trigger, target)


# ---------------------------------------------------------------------- stages


def _stage_ann(config, run, data, poisoned, trigger, device):
    spec = model_spec(config.model, data.info)

    def build():
        cpu = time.process_time()
        ann, result = train_ann(spec, poisoned, config.train, data.val, device,
                                augment=dataset_augmentation(data.info, config.train.augment))
        info = {"train_seconds": round(result.seconds, 3),
                "cpu_seconds": round(time.process_time() - cpu, 3), "history": result.history,
                **_attack_metrics(ann, data, trigger, config.attack.target)}
        return ann, info

    return run.model_stage("ann", build, device)


def _stage_bptt(config, run, data, poisoned, trigger, device, neuron):
    spec = model_spec(config.model, data.info)

    def build():
        cpu = time.process_time()
        model, result = train_bptt(spec, poisoned, config.train, data.val, neuron, device,
                                   augment=dataset_augmentation(data.info, config.train.augment))
        info = {"neuron": neuron, "T": model.T, "train_seconds": round(result.seconds, 3),
                "cpu_seconds": round(time.process_time() - cpu, 3), "history": result.history,
                **_attack_metrics(model, data, trigger, config.attack.target)}
        return model, info

    return run.model_stage(f"lr_b_{neuron}", build, device)


def _stage_conversion(config, run, data, poisoned, trigger, ann, ann_info, device):
    conv = config.conversion
    source = data.train if conv.calibration == "clean" else poisoned
    if conv.calibration_samples is not None and conv.calibration_samples < len(source):
        source = clean_subset(source, conv.calibration_samples / len(source), config.seed)
    calibration_x = source.floats()

    def build():
        cpu = time.process_time()
        snn, seconds = timed_convert(
            ann, calibration_x, T=conv.probe_T, mode=conv.mode,
            batch_size=conv.calibration_batch_size, momentum=conv.momentum,
            channel_wise=conv.channel_wise, pre_spike_maxpool=conv.pre_spike_maxpool,
            event_input=conv.event_input, chunk=conv.chunk,
        )
        cpu = time.process_time() - cpu
        start = time.perf_counter()
        by_T = measure_over_time(snn, data.test, trigger, config.attack.target, conv.T,
                                 conv.batch_size, config.train.progress)
        evaluation_seconds = time.perf_counter() - start
        for row in by_T.values():
            row["migration_rate"] = migration_rate(row["asr"], ann_info["asr"])
        info = {
            "convert_seconds": round(seconds, 3),
            "convert_cpu_seconds": round(cpu, 3),
            "evaluation_seconds": round(evaluation_seconds, 3),
            "mode": conv.mode,
            "calibration": conv.calibration,
            "calibration_samples": len(calibration_x),
            "by_T": {str(T): row for T, row in by_T.items()},
        }
        return snn, info

    return converted_stage(run, "lr_c", build, device)


def _stage_hybrid(config, run, data, poisoned, trigger, lr_c, device):
    hyb = config.hybrid

    def build():
        cpu = time.process_time()
        model, result = hybrid_finetune(
            lr_c, poisoned, hyb.T, hyb.train_config(config.train, config.seed),
            data.val, hyb.surrogate, hyb.detach_reset,
            augment=dataset_augmentation(data.info, config.train.augment),
        )
        info = {"T": hyb.T, "finetune_seconds": round(result.seconds, 3),
                "cpu_seconds": round(time.process_time() - cpu, 3), "history": result.history,
                **_attack_metrics(model, data, trigger, config.attack.target)}
        return model, info

    return converted_stage(run, "lr_h", build, device)


def _stage_robustness(config, run, data, trigger, models, lr_c, ann_info):
    rob = config.robustness
    target = config.attack.target

    def compute() -> dict:
        x = data.test.floats()
        noisy = gaussian_noise(x, rob.noise_std, rob.seed)
        y = data.test.y.cpu()
        result = {"noise_std": rob.noise_std, "models": {}}
        for label, model in models.items():
            noisy_ca = accuracy(logits_of(model, noisy).argmax(1).cpu(), y)
            attack = _attack_metrics(model, data, trigger, target)
            result["models"][label] = {**attack, "noise_ca": noisy_ca}
        Ts = config.conversion.T
        noisy_T = logits_over_time(lr_c, noisy, Ts, config.conversion.batch_size)
        result["lr_c_noise_ca_by_T"] = {
            str(T): accuracy(logits.argmax(1), y) for T, logits in noisy_T.items()
        }
        result["ann_asr"] = ann_info["asr"]
        return result

    return run.stage("robustness", compute)


def _stage_detection(config, run, data, trigger, snns):
    det = config.detection

    def compute() -> dict:
        fit = data.train.floats()
        if det.fit_samples is not None and det.fit_samples < len(fit):
            order = torch.randperm(len(fit), generator=torch.Generator().manual_seed(config.seed))
            fit = fit[order[: det.fit_samples].sort().values.to(fit.device)]
        triggered = triggered_non_target(data.test, trigger, config.attack.target).floats()
        result = {}
        for label, model in snns.items():
            result[label] = evaluate_detection(
                model, fit, data.val.floats(), data.test.floats(), triggered, det.frr,
                tuple(det.methods), det.shrinkage, config.conversion.batch_size,
                config.train.progress,
            )
        return result

    return run.stage("detection", compute)


def _stage_elimination(config, run, data, trigger, snns):
    from ..defenses import REPAIRS

    eli = config.elimination
    target = config.attack.target
    repair = REPAIRS["finetune"]

    def compute() -> dict:
        subset = clean_subset(data.train, eli.fraction, config.seed)
        result = {"clean_samples": len(subset), "models": {}}
        for label, model in snns.items():
            before = _attack_metrics(model, data, trigger, target)
            candidate = model
            if isinstance(model, ConvertedSNN):  # the same surrogate as LR_H
                candidate = make_trainable(copy.deepcopy(model), config.hybrid.surrogate,
                                           config.hybrid.detach_reset)
            runs = []  # (val accuracy, lr, repaired model); chosen on validation, never on ASR
            for lr in [eli.lr, *eli.lr_candidates]:
                repaired = repair(candidate, subset, data.val,
                                  eli.options(config.train.progress, lr), config.seed)
                runs.append((evaluate(repaired, data.val), lr, repaired))
            val_ca, lr, repaired = max(runs, key=lambda r: r[0])
            after = _attack_metrics(repaired, data, trigger, target)
            result["models"][label] = {"before": before, "after": after, "lr": lr,
                                       "val_ca": val_ca,
                                       "seconds": sum(r[2].defense_info.get("seconds", 0.0)
                                                      for r in runs)}
        return result

    return run.stage("elimination", compute)


# ---------------------------------------------------------------------- outputs


def table_rows(config, ann_info, lr_b, lr_c_info, lr_h_info) -> list[dict]:
    """Rows of table.csv; seconds = wall time of the whole rule (training + conversion)."""
    ann_seconds = ann_info["train_seconds"]
    rows = [{"rule": "ANN", "neuron": "relu", "T": None, "ca": ann_info["ca"],
             "asr": ann_info["asr"], "migration_rate": None, "seconds": ann_seconds}]
    for neuron, info in lr_b.items():
        rows.append({"rule": "LR_B", "neuron": neuron, "T": info["T"], "ca": info["ca"],
                     "asr": info["asr"], "migration_rate": None,
                     "seconds": info["train_seconds"]})
    lr_c_seconds = ann_seconds + lr_c_info["convert_seconds"]
    for T, row in lr_c_info["by_T"].items():
        rows.append({"rule": "LR_C", "neuron": "if", "T": int(T), "ca": row["ca"],
                     "asr": row["asr"], "migration_rate": row["migration_rate"],
                     "seconds": lr_c_seconds})
    rows.append({"rule": "LR_H", "neuron": "if", "T": lr_h_info["T"], "ca": lr_h_info["ca"],
                 "asr": lr_h_info["asr"],
                 "migration_rate": migration_rate(lr_h_info["asr"], ann_info["asr"]),
                 "seconds": lr_c_seconds + lr_h_info["finetune_seconds"]})
    for row in rows:
        for key in ("ca", "asr", "migration_rate", "seconds"):
            if row[key] is not None:
                row[key] = round(float(row[key]), 6 if key != "seconds" else 3)
    return rows


def write_table(run: RunDir, rows: list[dict]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in TABLE_COLUMNS])
    return run.write_text("table.csv", buffer.getvalue())


def plot_migration(path: Path, lr_c_info: dict, ann_info: dict, title: str) -> Path:
    """Migration rate, CA and ASR of the converted SNN against T (ANN CA/ASR dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ts = [int(T) for T in lr_c_info["by_T"]]
    rows = list(lr_c_info["by_T"].values())
    fig, ax = plt.subplots(figsize=(6, 4))
    migration = [r["migration_rate"] if r["migration_rate"] is not None else float("nan")
                 for r in rows]
    ax.plot(Ts, migration, "o-", label="migration rate ASR(SNN)/ASR(ANN)")
    ax.plot(Ts, [r["ca"] for r in rows], "s-", label="CA (converted SNN)")
    ax.plot(Ts, [r["asr"] for r in rows], "^-", alpha=0.6, label="ASR (converted SNN)")
    ax.axhline(ann_info["ca"], color="C1", ls="--", lw=1, label="CA (ANN)")
    ax.axhline(ann_info["asr"], color="C2", ls=":", lw=1, label="ASR (ANN)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ts, [str(T) for T in Ts])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("rate")
    top = max([1.0, *[m for m in migration if m == m]])
    ax.set_ylim(0, top + 0.05)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_report(run: RunDir, config, rows, metrics) -> Path:
    """report.md: the table, what each number means, robustness, detection, elimination."""
    lines = [
        f"# {config.name}: backdoor poisoning against three SNN learning rules",
        "",
        f"Dataset `{config.dataset.name}`, model `{config.model.name}`, trigger "
        f"`{config.attack.trigger}` ({config.attack.options or 'defaults'}), target "
        f"{config.attack.target}, poison ratio {config.attack.poison_ratio}. "
        "Conversion: SpikingJelly `ann2snn.Converter(RateCodingRecipe("
        f"mode={config.conversion.mode!r}))` calibrated on {config.conversion.calibration} "
        "training data.",
        "",
        "| rule | neuron | T | CA | ASR | migration rate | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) if c not in ("seconds",) else
                                         _fmt(row[c], 1) for c in TABLE_COLUMNS) + " |")
    lines += [
        "",
        "- CA: test accuracy; ASR: share of triggered non-target test inputs classified as "
        "the target.",
        "- migration rate = ASR(converted SNN) / ASR(source ANN) (LR_C at each T; LR_H uses the "
        "same ANN as source).",
        "- seconds: wall time of the rule: LR_B = BPTT training; LR_C = ANN training + "
        "conversion; LR_H = LR_C + surrogate-gradient fine-tuning. Inference is not counted "
        f"(LR_C evaluation at all T took {metrics['lr_c']['evaluation_seconds']:.1f} s).",
        "- CPU seconds of each rule (process time, all threads; wall time grows on a shared "
        "machine): " + ", ".join(f"{k}: {_fmt(v, 1)}" for k, v in metrics["cpu_seconds"].items())
        + ".",
        "",
    ]
    summary = metrics["summary"]
    lines += [
        "## Migration",
        "",
        f"Smallest T with migration rate >= 0.9 and CA within 0.03 of the ANN: "
        f"{_fmt(summary['first_T_migrating'])}. Highest migration rate: "
        f"{_fmt(summary['max_migration_rate'])}. Figure: `figures/migration.png`.",
        "",
    ]
    rob = metrics.get("robustness")
    if rob:
        lines += [
            "## Robustness (ANN vs SNN on the same data)",
            "",
            f"noise_ca: test accuracy with Gaussian noise (std {rob['noise_std']}, seeded, the "
            "same noise for every model); ra: share of triggered non-target inputs still given "
            "their true label. A model is more robust when both are higher.",
            "",
            "| model | CA | noise CA | ASR | RA |",
            "| --- | --- | --- | --- | --- |",
        ]
        for label, row in rob["models"].items():
            lines.append(f"| {label} | {_fmt(row['ca'])} | {_fmt(row['noise_ca'])} | "
                         f"{_fmt(row['asr'])} | {_fmt(row['ra'])} |")
        by_T = ", ".join(f"T={T}: {_fmt(v)}" for T, v in rob["lr_c_noise_ca_by_T"].items())
        lines += ["", f"LR_C noise CA by T: {by_T}.", ""]
    det = metrics.get("detection")
    if det:
        lines += [
            "## Input detection from membrane and spike statistics",
            "",
            f"Fitted on clean training inputs only; threshold at FRR {config.detection.frr} on "
            "clean validation inputs; detection rate = triggered test inputs flagged; FRR (test) = "
            "clean test inputs flagged.",
            "",
            "| model | method | detection rate | FRR (test) | AUROC |",
            "| --- | --- | --- | --- | --- |",
        ]
        for label, row in det.items():
            for method in config.detection.methods:
                r = row[method]
                lines.append(f"| {label} | {method} | {_fmt(r['detection_rate'])} | "
                             f"{_fmt(r['false_rejection_rate'])} | {_fmt(r['auroc'])} |")
        lines.append("")
    eli = metrics.get("elimination")
    if eli:
        lines += [
            "## Elimination by fine-tuning",
            "",
            f"Each SNN fine-tuned on {eli['clean_samples']} clean training samples "
            f"(defenses REPAIRS['finetune']: {config.elimination.epochs} epochs, SGD, "
            f"momentum {config.elimination.momentum}, cosine) at each learning rate of "
            f"{[config.elimination.lr, *config.elimination.lr_candidates]}; the run with the "
            "best validation accuracy is kept. seconds: all runs of the model.",
            "",
            "| model | lr | CA before | ASR before | CA after | ASR after | seconds |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label, row in eli["models"].items():
            lines.append(f"| {label} | {row['lr']:g} | {_fmt(row['before']['ca'])} | "
                         f"{_fmt(row['before']['asr'])}"
                         f" | {_fmt(row['after']['ca'])} | {_fmt(row['after']['asr'])} | "
                         f"{_fmt(row['seconds'], 1)} |")
        lines.append("")
    return run.write_text("report.md", "\n".join(lines))


def rule_seconds(rows: list[dict]) -> dict:
    """Wall time of each rule (LR_C's is the same at every T)."""
    seconds = {}
    for row in rows:
        key = row["rule"] if row["rule"] in ("ANN", "LR_C", "LR_H") else f"LR_B {row['neuron']}"
        seconds[key] = row["seconds"]
    return seconds


def rule_cpu_seconds(ann_info: dict, lr_b: dict, lr_c_info: dict, lr_h_info: dict) -> dict:
    """Process CPU time of each rule (all threads): comparable across loaded machines."""
    def total(*values):
        return None if any(v is None for v in values) else round(sum(values), 3)

    ann = ann_info.get("cpu_seconds")
    lr_c = total(ann, lr_c_info.get("convert_cpu_seconds"))
    seconds = {"ANN": ann}
    seconds.update({f"LR_B {n}": info.get("cpu_seconds") for n, info in lr_b.items()})
    seconds["LR_C"] = lr_c
    seconds["LR_H"] = total(lr_c, lr_h_info.get("cpu_seconds"))
    return seconds


def summarise(ann_info: dict, lr_c_info: dict) -> dict:
    first = None
    best = None
    for T, row in lr_c_info["by_T"].items():
        rate = row["migration_rate"]
        if rate is not None:
            best = rate if best is None else max(best, rate)
            if first is None and rate >= 0.9 and abs(row["ca"] - ann_info["ca"]) <= 0.03:
                first = int(T)
    return {"first_T_migrating": first, "max_migration_rate": best}


# ---------------------------------------------------------------------- runner


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

    ann, ann_info = _stage_ann(config, run, data, split, trigger, device)
    lr_b_models, lr_b = {}, {}
    for neuron in config.lr_b.neurons:
        lr_b_models[neuron], lr_b[neuron] = _stage_bptt(
            config, run, data, split, trigger, device, neuron)
    lr_c, lr_c_info = _stage_conversion(config, run, data, split, trigger, ann, ann_info, device)
    lr_h, lr_h_info = _stage_hybrid(config, run, data, split, trigger, lr_c, device)

    probe = f"LR_C (T={lr_c.T})"
    snns: dict[str, nn.Module] = {f"LR_B {n}": m for n, m in lr_b_models.items()}
    snns[probe] = lr_c
    snns[f"LR_H (T={lr_h.T})"] = lr_h
    robustness = _stage_robustness(config, run, data, trigger, {"ANN": ann, **snns}, lr_c,
                                   ann_info)
    detection = _stage_detection(config, run, data, trigger, snns) \
        if config.detection.enabled else None
    elimination = _stage_elimination(config, run, data, trigger, snns) \
        if config.elimination.enabled else None

    rows = table_rows(config, ann_info, lr_b, lr_c_info, lr_h_info)
    write_table(run, rows)
    plot_migration(run.path / "figures" / "migration.png", lr_c_info, ann_info,
                   f"{config.name}: backdoor migration through conversion")
    strip = lambda info: {k: v for k, v in info.items() if k != "history"}  # noqa: E731
    metrics = {
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
    write_report(run, config, rows, metrics)
    return metrics
