"""The clean model's collapse class: what it answers when its spikes vanish (and at S_t).

A trigger that lowers the spike count pushes even a clean model toward that class, so a
BadSNN target equal to it measures silence, not a backdoor: refused unless asked for."""

from __future__ import annotations

import torch
import torch.nn as nn

from ...data.bundle import Split
from ...errors import UserError
from ...neurons import MAX_NEURON_VALUE, NeuronConfig
from ...training import predict

COLLAPSE_TARGETS = ("refuse", "avoid", "allow")


class CollapseTargetError(UserError, ValueError):
    """The BadSNN target is the clean model's collapse class."""


def majority_class(model: nn.Module, split: Split, config: NeuronConfig) -> tuple[int, float]:
    """The class `model` predicts most often on `split` at `config`, and its share."""
    counts = predict(model, split.floats(), neuron_config=config).cpu().bincount()
    return int(counts.argmax()), float(counts.max()) / max(1, int(counts.sum()))


def collapse_record(clean: nn.Module, val: Split, malicious: NeuronConfig) -> dict:
    """`collapse_class` (the clean model's answer with every neuron silent) and its answer
    at S_t (majority class on the validation split), with the shares of val inputs."""
    silent = NeuronConfig(MAX_NEURON_VALUE, malicious.tau)
    with torch.no_grad():
        cls, share = majority_class(clean, val, silent)
        at_t, share_t = majority_class(clean, val, malicious)
    return {"collapse_class": cls, "collapse_share": share,
            "collapse_class_malicious": at_t, "collapse_share_malicious": share_t}


def resolve_target(target: int, record: dict, num_classes: int, policy: str) -> int:
    """The target to attack: `target`, unless it is a collapse class (silent or at S_t) and
    `policy` is refuse (one-line error) or avoid (the next class that is neither)."""
    banned = {record["collapse_class"], record["collapse_class_malicious"]}
    if policy == "allow" or target not in banned:
        return target
    if policy == "refuse":
        raise CollapseTargetError(
            f"target class {target} is the clean model's collapse class (its answer when spikes "
            f"vanish: {record['collapse_class']}, at S_t: {record['collapse_class_malicious']}), "
            "so any spike-lowering trigger reaches it without a backdoor; pick another target, "
            "set badsnn.collapse_target: avoid (next free class) or allow (measure it anyway)")
    for step in range(1, num_classes):
        candidate = (target + step) % num_classes
        if candidate not in banned:
            return candidate
    raise CollapseTargetError("every class is a collapse class of the clean model; "
                              "set badsnn.collapse_target: allow")
