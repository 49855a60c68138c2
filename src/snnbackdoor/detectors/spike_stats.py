"""Input detection from membrane-voltage and spike-pattern statistics (Jin et al.'s defense
idea), registered as detector `spike_stats`.

Features of one input, read with forward hooks on every SpikingJelly node (any SNN here:
BPTT models and converted IF networks alike):
- per spiking layer: firing rate (spikes per neuron per step), mean and standard deviation
  of the membrane potential over neurons and time steps (``store_v_seq``);
- the spike pattern: per-channel (per-neuron for linear layers) firing rates of the last
  spiking layer.
The detector is fitted on clean inputs only: features are standardised, and the score is
the Mahalanobis distance under a shrunk covariance (``(1 - a) * S + a * I`` in standardised
units), either to the clean mean (``global``) or to the clean mean of the input's predicted
class (``class``, shared covariance). The threshold is the (1 - FRR) quantile of scores on
held-out clean inputs; no triggered input is ever used to fit or to set it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..neurons import spiking_nodes
from ..training import model_device
from .base import DetectJob, detector
from .scoring import Scores

METHODS = ("global", "class")


@torch.no_grad()
def spike_statistics(
    model: nn.Module, x: torch.Tensor, batch_size: int = 256, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, classes], features [N, D]) of pixel-space inputs; see the module doc."""
    nodes = spiking_nodes(model)
    if not nodes:
        raise ValueError("spike statistics need a model with SpikingJelly LIF, PLIF or IF nodes")
    device = model_device(model)
    acc: dict[str, dict] = {}

    def hook_for(name: str, node: nn.Module):
        def hook(_module, _inputs, output):
            spikes = (output[0] if isinstance(output, tuple) else output).detach().float()
            if spikes.ndim < 3:  # single-step node: [N, ...] -> [1, N, ...]
                spikes = spikes.unsqueeze(0)
            v = node.v_seq if node.v_seq is not None else node.v.unsqueeze(0)
            v = v.detach().float()
            flat_v = v.reshape(v.shape[0], v.shape[1], -1)  # [steps, N, neurons]
            per_step = spikes.sum(0)  # [N, C, ...]
            channel = per_step if per_step.ndim == 2 else per_step.flatten(2).mean(2)
            entry = acc.setdefault(
                name, {"steps": 0, "v_steps": 0, "channel": 0.0, "v": 0.0, "v2": 0.0}
            )
            entry["steps"] += spikes.shape[0]
            entry["v_steps"] += flat_v.shape[0]
            entry["channel"] = entry["channel"] + channel
            entry["v"] = entry["v"] + flat_v.mean(2).sum(0)
            entry["v2"] = entry["v2"] + flat_v.pow(2).mean(2).sum(0)

        return hook

    saved = {name: node.store_v_seq for name, node in nodes}
    handles = []
    for name, node in nodes:
        node.store_v_seq = True
        handles.append(node.register_forward_hook(hook_for(name, node)))
    was_training = model.training
    model.eval()
    logits, features = [], []
    try:
        starts = range(0, len(x), batch_size)
        for start in tqdm(starts, desc="spike statistics", disable=not progress, leave=False):
            acc.clear()
            batch = x[start : start + batch_size].to(device)
            if batch.dtype == torch.uint8:
                batch = batch.float() / 255.0
            logits.append(model(batch.float()).float().cpu())
            parts = []
            for index, (name, _) in enumerate(nodes):
                entry = acc[name]
                rates = entry["channel"] / entry["steps"]  # [N, C]
                v_mean = entry["v"] / entry["v_steps"]
                v_var = (entry["v2"] / entry["v_steps"] - v_mean.pow(2)).clamp(min=0)
                parts += [rates.mean(1, keepdim=True), v_mean[:, None], v_var.sqrt()[:, None]]
                if index == len(nodes) - 1:
                    parts.append(rates)
            features.append(torch.cat(parts, 1).cpu())
    finally:
        for handle in handles:
            handle.remove()
        for name, node in nodes:
            node.store_v_seq = saved[name]
        model.train(was_training)
    return torch.cat(logits), torch.cat(features)


@dataclass
class SpikeStatsDetector:
    """Mahalanobis outlier score on spike/membrane features, fitted on clean inputs only."""

    method: str = "global"
    shrinkage: float = 0.1
    center: torch.Tensor | None = field(default=None, repr=False)
    scale: torch.Tensor | None = field(default=None, repr=False)
    means: torch.Tensor | None = field(default=None, repr=False)  # [classes or 1, D]
    precision: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"detector method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {self.shrinkage}")

    def fit(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> SpikeStatsDetector:
        """Fit on clean features [N, D] (and, for ``class``, their predicted labels)."""
        z = features.double()
        if len(z) < 2:
            raise ValueError("the detector needs at least two clean samples to fit")
        self.center = z.mean(0)
        self.scale = z.std(0).clamp(min=1e-6)
        z = (z - self.center) / self.scale
        if self.method == "class":
            if labels is None:
                raise ValueError("the class-conditional detector needs predicted labels")
            labels = labels.long().cpu()
            classes = int(labels.max()) + 1
            means = torch.zeros(classes, z.shape[1], dtype=z.dtype)
            for c in range(classes):
                members = z[labels == c]
                means[c] = members.mean(0) if len(members) else z.mean(0)
            residual = z - means[labels]
        else:
            means = z.mean(0, keepdim=True)
            residual = z - means
        cov = residual.T @ residual / max(1, len(z) - 1)
        eye = torch.eye(cov.shape[0], dtype=cov.dtype)
        self.means = means
        self.precision = torch.linalg.inv((1 - self.shrinkage) * cov + self.shrinkage * eye)
        return self

    def score(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Outlier score per input (higher = more likely triggered)."""
        if self.precision is None:
            raise ValueError("fit the detector on clean features first")
        z = (features.double() - self.center) / self.scale
        if self.method == "class":
            if labels is None:
                raise ValueError("the class-conditional detector needs predicted labels")
            index = labels.long().cpu().clamp(max=len(self.means) - 1)
            diff = z - self.means[index]
        else:
            diff = z - self.means[0]
        return ((diff @ self.precision) * diff).sum(1).clamp(min=0).sqrt().float()


@dataclass
class SpikeStatsOptions:
    """Class-conditional Mahalanobis score, shrinkage 0.1, FRR 0.05; half of the clean
    subset fits the detector, the other half sets the threshold."""

    method: str = "class"
    shrinkage: float = 0.1
    frr: float = 0.05
    fit_fraction: float = 0.5  # of the clean subset to fit on; the rest sets the threshold
    batch_size: int = 256
    progress: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"spike_stats method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.fit_fraction < 1.0:
            raise ValueError(f"spike_stats fit_fraction must be in (0, 1), got "
                             f"{self.fit_fraction}")


def feature_sets(model: nn.Module, inputs: dict[str, torch.Tensor], batch_size: int = 256,
                 progress: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (features, predicted class)} of each named batch of inputs."""
    sets = {}
    for name, x in inputs.items():
        logits, features = spike_statistics(model, x, batch_size, progress)
        sets[name] = (features, logits.argmax(1))
    return sets


def scores_from_features(sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
                         method: str = "class", shrinkage: float = 0.1,
                         frr: float = 0.05) -> Scores:
    """Fit the detector on the `fit` set (clean); score the `threshold` set (clean, held
    out: it sets the threshold), the `clean` and the `triggered` sets."""
    detector = SpikeStatsDetector(method, shrinkage).fit(*sets["fit"])
    score = {name: detector.score(*sets[name]) for name in ("threshold", "clean", "triggered")}
    return Scores(score["threshold"], score["clean"], score["triggered"], frr,
                  {"detector": "spike_stats", "method": method,
                   "features": int(sets["fit"][0].shape[1])})


@detector("spike_stats", SpikeStatsOptions)
def spike_stats_detect(job: DetectJob) -> Scores:
    """Spike statistics: Mahalanobis distance of firing rates and membrane potentials.

    Works on any SNN with LIF, PLIF or IF nodes.

    The defender's clean subset is split (seeded) into a part to fit the detector on and a
    part whose scores set the threshold at ``frr``; the screened inputs never choose
    anything.
    """
    model, clean_subset, opts, seed = job.model, job.clean_subset, job.options, job.seed
    clean_inputs, triggered_inputs = job.clean_inputs, job.triggered_inputs
    if len(clean_subset) < 4:
        raise ValueError("the spike-statistics detector needs at least 4 clean samples")
    order = torch.randperm(len(clean_subset), generator=torch.Generator().manual_seed(seed))
    cut = min(len(order) - 2, max(2, int(round(opts.fit_fraction * len(order)))))
    x = clean_subset.floats()
    fit_x, threshold_x = x[order[:cut].to(x.device)], x[order[cut:].to(x.device)]
    sets = feature_sets(model, {"fit": fit_x, "threshold": threshold_x, "clean": clean_inputs,
                                "triggered": triggered_inputs}, opts.batch_size, opts.progress)
    scores = scores_from_features(sets, opts.method, opts.shrinkage, opts.frr)
    scores.info["budget"] = {"fit": len(fit_x), "threshold": len(threshold_x)}
    return scores
