"""Neuron-parameter repair (this project's): fine-tune across neuron configs near the deployed one.

BadSNN hides its backdoor in the neurons' hyperparameters: at the attack config S_a a
trigger's shifted spike count lands on patterns learned as the target. A defender who knows
only the deployed config fine-tunes on its clean subset with V_thr (and tau for LIF) drawn
around it at every step, next to a step at the deployed config itself, so no nearby config
keeps a path to a target; the repaired model is handed back at the deployed config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import check_range
from ..neurons import NeuronConfig, get_neuron_params, is_lif, spiking_nodes, use_config
from ..training import train
from .base import RepairJob, repair
from .discovery import on_device, sgd_config


@dataclass
class NeuronParamOptions:
    """V_thr drawn uniformly in [V(1 - r), V(1 + r)] with r = `v_threshold_range`, tau in
    [tau(1 - r), tau(1 + r)] (kept > `min_tau`) with r = `tau_range`, around each node's
    deployed value; SGD (lr 0.005, momentum 0.9, weight decay 5e-4, cosine), 20 epochs of
    batches of 16."""

    v_threshold_range: float = 0.5
    tau_range: float = 0.5
    min_tau: float = 1.05
    nominal_weight: float = 1.0  # weight of the loss at the deployed config in each step
    freeze_norm: bool = True  # BatchNorm keeps the statistics of the model's own training
    epochs: int = 20
    lr: float = 0.005  # half fine-tuning's: 80 steps on 60 samples at 0.01 cost 3-6 points of CA
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 16
    progress: bool = True

    def __post_init__(self) -> None:
        check_range("neuron_param.v_threshold_range", self.v_threshold_range, 0.0, 0.95)
        check_range("neuron_param.tau_range", self.tau_range, 0.0, 10.0)
        check_range("neuron_param.min_tau", self.min_tau, 1.0, low_open=True)
        check_range("neuron_param.nominal_weight", self.nominal_weight, 0.0)
        check_range("neuron_param.epochs", self.epochs, 0, integer=True)
        check_range("neuron_param.lr", self.lr, 0.0, 100.0, low_open=True)
        check_range("neuron_param.batch_size", self.batch_size, 1, integer=True)


def shared_config(model: nn.Module) -> tuple[float, float | None]:
    """The deployed V_thr and tau (tau None without LIF nodes), which every node must share:
    the configs drawn are scalings of one config, as BadSNN's S_a is one config."""
    params = get_neuron_params(model)
    if not params:
        raise ValueError("the neuron-parameter repair needs a model with spiking nodes")
    thresholds = {p["v_threshold"] for p in params.values()}
    lif_taus = {params[name]["tau"] for name, node in spiking_nodes(model) if is_lif(node)}
    if len(thresholds) != 1 or len(lif_taus) > 1:
        raise ValueError("the neuron-parameter repair draws one config around the deployed "
                         f"one; this model's nodes differ (V_thr {sorted(thresholds)}, tau "
                         f"{sorted(lif_taus)})")
    return thresholds.pop(), (lif_taus.pop() if lif_taus else None)


def draw_config(v_threshold: float, tau: float | None, opts: NeuronParamOptions,
                generator: torch.Generator) -> NeuronConfig:
    """One config drawn uniformly around (v_threshold, tau)."""
    u = torch.rand(2, generator=generator).tolist()
    v = v_threshold * (1 - opts.v_threshold_range + 2 * opts.v_threshold_range * u[0])
    t = None
    if tau is not None:
        t = max(opts.min_tau, tau * (1 - opts.tau_range + 2 * opts.tau_range * u[1]))
    return NeuronConfig(v, t)


def _norms_frozen(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.training) for m in norms]
    for m in norms:
        m.eval()
    return saved


def config_loss(drawn: list[NeuronConfig], v_threshold: float, tau: float | None,
                opts: NeuronParamOptions, generator: torch.Generator):
    """A trainer loss: CE at the deployed config (weight `nominal_weight`) plus CE at a
    freshly drawn config (appended to `drawn`). BatchNorm runs on its running statistics in
    both passes (`freeze_norm`) or, if not, in the deployed-config pass only; a drawn
    config never moves the statistics the model is deployed with."""

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index) -> torch.Tensor:
        saved = _norms_frozen(model) if opts.freeze_norm else []
        try:
            loss = (opts.nominal_weight * F.cross_entropy(model(x), y)
                    if opts.nominal_weight else 0.0)
            config = draw_config(v_threshold, tau, opts, generator)
            drawn.append(config)
            saved = saved or _norms_frozen(model)
            with use_config(model, config):
                loss = loss + F.cross_entropy(model(x), y)
        finally:
            for module, mode in saved:
                module.train(mode)
        return loss

    return loss_fn


@repair("neuron_param", NeuronParamOptions)
def neuron_param_repair(job: RepairJob) -> dict:
    """Fine-tune a copy on the clean subset at configs drawn around the deployed one.

    Every setting is fixed in advance (the ranges are relative to the deployed config, the
    only one a defender knows); nothing is chosen on the test split, a trigger or ASR.
    `val_split`, if given, is only measured. `info` records the range, the number of steps
    and the V_thr / tau actually drawn (min, max).
    """
    repaired, opts = job.copy, job.options
    v_threshold, tau = shared_config(repaired)
    generator = torch.Generator().manual_seed(int(job.seed) + 7919)
    drawn: list[NeuronConfig] = []
    config = sgd_config(opts.epochs, opts.lr, opts.momentum, opts.weight_decay,
                        opts.batch_size, job.seed, opts.progress)
    result = train(repaired, on_device(job.clean_subset, repaired), config,
                   loss_fn=config_loss(drawn, v_threshold, tau, opts, generator),
                   description="neuron-param repair")
    thresholds = [c.v_threshold for c in drawn]
    taus = [c.tau for c in drawn if c.tau is not None]
    return {
        "deployed_v_threshold": v_threshold,
        "deployed_tau": tau,
        "v_threshold_range": [v_threshold * (1 - opts.v_threshold_range),
                              v_threshold * (1 + opts.v_threshold_range)],
        "tau_range": ([max(opts.min_tau, tau * (1 - opts.tau_range)), tau * (1 + opts.tau_range)]
                      if tau is not None else None),
        "steps": len(drawn),
        "epochs": opts.epochs,
        "drawn_v_threshold": [min(thresholds), max(thresholds)] if thresholds else None,
        "drawn_tau": [min(taus), max(taus)] if taus else None,
        "seconds": round(result.seconds, 3),
        "steps_per_epoch": math.ceil(len(job.clean_subset) / opts.batch_size),
    }
