"""The BadSNN Fig. 2 study: accuracy and spikes per sample as V_thr, tau and power q move.

It measures, it assumes no direction: on small digit models q > 1 lowers the spike count,
while the paper reports the opposite on CIFAR-10 ResNet-19 (docs/methods.md 1.2). Its table and
figure are drawn by `report.sweeps`.
"""

from __future__ import annotations

import torch.nn as nn

from .data.bundle import Split
from .neurons import NeuronConfig, forward_with_spikes, get_neuron_params, use_config
from .training import model_device


def _point(model: nn.Module, split: Split, config: NeuronConfig | None, transform=None) -> dict:
    x = split.floats().to(model_device(model))
    if transform is not None:
        x = transform(x)
    with use_config(model, config):
        logits, spikes = forward_with_spikes(model, x)
    accuracy = (logits.argmax(1).cpu() == split.y.cpu()).float().mean().item()
    return {"accuracy": accuracy, "spikes_per_sample": spikes["total"].mean().item()}


def neuron_sweep(
    model: nn.Module,
    split: Split,
    v_thresholds: list[float] = (),
    taus: list[float] = (),
    powers: list[float] = (),
) -> dict:
    """Rows of {value, accuracy, spikes_per_sample} for each swept quantity.

    The V_thr sweep keeps tau as trained, the tau sweep keeps V_thr as trained, and the
    power sweep (x -> x**q in pixel space) runs at the trained config.
    """
    has_lif = any(p["tau"] is not None for p in get_neuron_params(model).values())
    result: dict = {"v_threshold": [], "tau": [], "power": []}
    for v in v_thresholds:
        row = _point(model, split, NeuronConfig(v_threshold=v))
        result["v_threshold"].append({"value": v, **row})
    if has_lif:
        for tau in taus:
            row = _point(model, split, NeuronConfig(tau=tau))
            result["tau"].append({"value": tau, **row})
    for q in powers:
        row = _point(model, split, None, transform=lambda x, q=q: x.clamp(0, 1) ** q)
        result["power"].append({"value": q, **row})
    return result
