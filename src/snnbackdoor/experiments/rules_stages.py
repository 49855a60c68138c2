"""The stages of the `rules` experiment (Jin et al.), each resumable through `RunDir`, and
the metrics they add up to: the table of CA, ASR and migration rate per rule and T.

`ann` (the ReLU twin on the poisoned data), `lr_b_<neuron>` (BPTT SNNs), `lr_c`
(SpikingJelly conversion, CA/ASR at every T), `lr_h` (converted SNN fine-tuned with surrogate
gradients), `robustness`, `detection`, `elimination`. `experiments.rules` runs them in order.
"""

from __future__ import annotations

import copy
import time

import torch

from ..attacks.base import measure
from ..attacks.poisoning import triggered_non_target
from ..data.augment import dataset_augmentation
from ..data.bundle import Split
from ..metrics import accuracy
from ..rules.bptt import train_bptt
from ..rules.conversion import (
    load_converted,
    logits_over_time,
    measure_over_time,
    migration_rate,
    save_converted,
    timed_convert,
    train_ann,
)
from ..rules.converted import ConvertedSNN, make_trainable
from ..rules.detection import evaluate_detection
from ..rules.hybrid import hybrid_finetune
from ..rundir import RunDir
from ..training import evaluate, logits_of
from .base import model_spec

# ---------------------------------------------------------------------- helpers


def converted_stage(run: RunDir, name: str, build, device) -> tuple[ConvertedSNN, dict]:
    """RunDir.model_stage for converted SNNs (their own file format, under ``converted/``)."""
    return run.model_stage(name, build, device, files=(save_converted, load_converted),
                           folder="converted")


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


# ---------------------------------------------------------------------- stages


def stage_ann(config, run, data, poisoned, trigger, device):
    spec = model_spec(config.model, data.info)

    def build():
        cpu = time.process_time()
        ann, result = train_ann(spec, poisoned, config.train, data.val, device,
                                augment=dataset_augmentation(data.info, config.train.augment))
        info = {"train_seconds": round(result.seconds, 3),
                "cpu_seconds": round(time.process_time() - cpu, 3), "history": result.history,
                **measure(ann, data.test, trigger, config.attack.target)}
        return ann, info

    return run.model_stage("ann", build, device)


def stage_bptt(config, run, data, poisoned, trigger, device, neuron):
    spec = model_spec(config.model, data.info)

    def build():
        cpu = time.process_time()
        model, result = train_bptt(spec, poisoned, config.train, data.val, neuron, device,
                                   augment=dataset_augmentation(data.info, config.train.augment))
        info = {"neuron": neuron, "T": model.T, "train_seconds": round(result.seconds, 3),
                "cpu_seconds": round(time.process_time() - cpu, 3), "history": result.history,
                **measure(model, data.test, trigger, config.attack.target)}
        return model, info

    return run.model_stage(f"lr_b_{neuron}", build, device)


def stage_conversion(config, run, data, poisoned, trigger, ann, ann_info, device):
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


def stage_hybrid(config, run, data, poisoned, trigger, lr_c, device):
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
                **measure(model, data.test, trigger, config.attack.target)}
        return model, info

    return converted_stage(run, "lr_h", build, device)


def stage_robustness(config, run, data, trigger, models, lr_c, ann_info):
    rob = config.robustness
    target = config.attack.target

    def compute() -> dict:
        x = data.test.floats()
        noisy = gaussian_noise(x, rob.noise_std, rob.seed)
        y = data.test.y.cpu()
        result = {"noise_std": rob.noise_std, "models": {}}
        for label, model in models.items():
            noisy_ca = accuracy(logits_of(model, noisy).argmax(1).cpu(), y)
            attack = measure(model, data.test, trigger, target)
            result["models"][label] = {**attack, "noise_ca": noisy_ca}
        Ts = config.conversion.T
        noisy_T = logits_over_time(lr_c, noisy, Ts, config.conversion.batch_size)
        result["lr_c_noise_ca_by_T"] = {
            str(T): accuracy(logits.argmax(1), y) for T, logits in noisy_T.items()
        }
        result["ann_asr"] = ann_info["asr"]
        return result

    return run.stage("robustness", compute)


def stage_detection(config, run, data, trigger, snns):
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


def stage_elimination(config, run, data, trigger, snns):
    from ..defenses.finetune import fine_tune

    eli = config.elimination
    target = config.attack.target

    def compute() -> dict:
        subset = clean_subset(data.train, eli.fraction, config.seed)
        result = {"clean_samples": len(subset), "models": {}}
        for label, model in snns.items():
            before = measure(model, data.test, trigger, target)
            candidate = model
            if isinstance(model, ConvertedSNN):  # the same surrogate as LR_H
                candidate = make_trainable(copy.deepcopy(model), config.hybrid.surrogate,
                                           config.hybrid.detach_reset)
            runs = []  # (val accuracy, lr, repaired model); chosen on validation, never on ASR
            for lr in [eli.lr, *eli.lr_candidates]:
                repaired = fine_tune(candidate, subset, data.val,
                                     eli.options(config.train.progress, lr), config.seed)
                runs.append((evaluate(repaired.model, data.val), lr, repaired))
            val_ca, lr, repaired = max(runs, key=lambda r: r[0])
            after = measure(repaired.model, data.test, trigger, target)
            result["models"][label] = {"before": before, "after": after, "lr": lr,
                                       "val_ca": val_ca,
                                       "seconds": sum(r[2].info.get("seconds", 0.0)
                                                      for r in runs)}
        return result

    return run.stage("elimination", compute)


# ---------------------------------------------------------------------- metrics


def table_rows(ann_info: dict, lr_b: dict, lr_c_info: dict, lr_h_info: dict) -> list[dict]:
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
