"""neuron_scan (ours): probe the neurons' threshold, time constant and input power on the
defender's clean subset, and look for one class that survives the loss of spikes.

BadSNN's dual-spike training teaches the target class under a malicious neuron config
where a clean model is lost, so when V_thr or tau rises (or the input power q lowers the
input) the target's own inputs keep a margin while every other class loses its own. A clean
model also ends on one class when its neurons fall silent (its collapse class, docs/methods.md 7),
but it wins there by a constant bias, not by its inputs: the statistic scores a class by
the mean margin of its own clean inputs (in units of the deployed model's mean margin) minus
the best other class's, at every probed config; the score is its largest value. No
reference clean model is needed; the flagging level is a fixed number set on clean models.
A target that is also the model's collapse class is not separated by this (measured).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import check_range
from ..neurons import get_neuron_params, is_lif, restore_neuron_params, spiking_nodes
from ..training import logits_of
from .model_base import ModelScore, ScanJob, scanner


@dataclass(frozen=True)
class NeuronScanOptions:
    """The probed configs (factors on the deployed V_thr and tau, input powers q) and the
    flagging level (set on clean models only)."""

    v_threshold_factors: list[float] = field(
        default_factory=lambda: [round(1.05 + 0.05 * i, 2) for i in range(20)])
    tau_factors: list[float] = field(default_factory=lambda: [1.25, 1.5, 1.75, 2.0, 2.5, 3.0])
    powers: list[float] = field(default_factory=lambda: [1.5, 2.0, 3.0, 4.0, 6.0, 8.0])
    level: float = 0.15  # set on clean models only (README: the scan benchmark)

    def __post_init__(self) -> None:
        for key in ("v_threshold_factors", "tau_factors", "powers"):
            for value in getattr(self, key):
                check_range(f"neuron_scan.{key}", value, 0.01, 1000.0)
        check_range("neuron_scan.level", self.level, 0.0, 2.0)


def _scaled(model, saved: dict, v_factor: float = 1.0, tau_factor: float = 1.0) -> None:
    """Every node's deployed V_thr times v_factor and (LIF) tau times tau_factor."""
    for name, node in spiking_nodes(model):
        node.v_threshold = float(saved[name]["v_threshold"]) * v_factor
        if is_lif(node) and tau_factor != 1.0:
            node.tau = max(1.0 + 1e-3, float(saved[name]["tau"]) * tau_factor)


def probe(model, x: torch.Tensor, y: torch.Tensor, num_classes: int,
          opts: NeuronScanOptions) -> list[dict]:
    """Per probed config (the deployed one first, silence last): axis, value, accuracy,
    per-class mean own margin and share of other classes' inputs taken."""
    saved = get_neuron_params(model)
    has_lif = any(is_lif(node) for _, node in spiking_nodes(model))
    configs = [("deployed", 1.0, {})]
    configs += [("v_threshold", f, {"v_factor": f}) for f in opts.v_threshold_factors]
    if has_lif:
        configs += [("tau", f, {"tau_factor": f}) for f in opts.tau_factors]
    configs += [("power", q, {}) for q in opts.powers]
    configs.append(("silence", 1e3, {"v_factor": 1e3}))
    rows = []
    try:
        for axis, value, scale in configs:
            _scaled(model, saved, **scale)
            inputs = x.clamp(0, 1).pow(value) if axis == "power" else x
            logits = logits_of(model, inputs).cpu()
            rows.append({"axis": axis, "value": value,
                         **class_rates(logits, y.cpu(), num_classes)})
    finally:
        restore_neuron_params(model, saved)
    return rows


def class_rates(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    """Accuracy; per class, the mean margin of its own inputs (own logit minus the best
    other) and the share of other classes' inputs it takes."""
    pred = logits.argmax(1)
    own = logits.gather(1, y[:, None]).squeeze(1)
    margin = own - logits.scatter(1, y[:, None], float("-inf")).max(1).values
    margins, taken = [], []
    for k in range(num_classes):
        mine, other = y == k, y != k
        margins.append(float(margin[mine].mean()) if mine.any() else 0.0)
        taken.append(float((pred[other] == k).float().mean()) if other.any() else 0.0)
    return {"accuracy": float((pred == y).float().mean()), "margin": margins, "taken": taken,
            "mean_margin": float(margin.mean())}


def class_evidence(rows: list[dict], num_classes: int) -> tuple[list[float], list[dict]]:
    """Per class, its largest lead in own margin (in units of the deployed model's mean
    margin) over the best other class across the probed configs, and where it was."""
    scale = max(abs(rows[0]["mean_margin"]), 1e-6)
    best = [0.0] * num_classes
    where: list[dict] = [{} for _ in range(num_classes)]
    for row in rows[1:]:
        m = [v / scale for v in row["margin"]]
        for k in range(num_classes):
            lead = m[k] - max(m[i] for i in range(num_classes) if i != k)
            if lead > best[k]:
                best[k] = lead
                where[k] = {"axis": row["axis"], "value": row["value"],
                            "accuracy": round(row["accuracy"], 4)}
    return best, where


@scanner("neuron_scan", NeuronScanOptions)
def neuron_scan(job: ScanJob) -> ModelScore:
    """Sweep V_thr, tau and input power on clean data; score the class that survives."""
    opts: NeuronScanOptions = job.options
    x = job.clean_inputs()
    rows = probe(job.model, x, job.clean_subset.y, job.num_classes, opts)
    evidence, where = class_evidence(rows, job.num_classes)
    k = max(range(job.num_classes), key=evidence.__getitem__)
    silence = rows[-1]
    collapse = max(range(job.num_classes), key=lambda c: silence["taken"][c])
    return ModelScore(score=evidence[k], target=k, threshold=opts.level,
                      info={"evidence": [round(e, 4) for e in evidence], "where": where[k],
                            "collapse_class": collapse, "sweep": rows})
