"""Neuron hyperparameter control and spike counting over SpikingJelly LIF, PLIF and IF nodes.

BadSNN lives in these hyperparameters: the same weights behave differently under another
threshold or time constant, so setting, restoring and measuring them is one small module.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from spikingjelly.activation_based import neuron as sj_neuron

from .util import eval_mode

SPIKING_NODE_TYPES = (sj_neuron.LIFNode, sj_neuron.ParametricLIFNode, sj_neuron.IFNode)

MAX_NEURON_VALUE = 1e6  # a threshold or tau beyond this silences every neuron
TAU_MESSAGE = (
    "tau must be > 1 in SpikingJelly's convention (H = V + (X - V) / tau). The BadSNN paper "
    "writes the decay factor 1/tau instead: paper tau 0.5 -> tau=2.0, paper 0.8 -> tau=1.25. "
    "A tau <= 1 makes the membrane oscillate; pass tau = 1 / paper_tau."
)


@dataclass(frozen=True)
class NeuronConfig:
    """A neuron hyperparameter setting (S_n, S_t or S_a in BadSNN). None leaves a value as is."""

    v_threshold: float | None = None
    tau: float | None = None

    def __post_init__(self) -> None:
        check_neuron_values(self.v_threshold, self.tau)

    def as_dict(self) -> dict:
        return {"v_threshold": self.v_threshold, "tau": self.tau}


def check_neuron_values(v_threshold: float | None, tau: float | None) -> None:
    """Refuse values SpikingJelly would accept silently but that make no sense: a threshold
    that is not a finite number > 0, a tau that is not a finite number > 1."""
    for name, value in (("v_threshold", v_threshold), ("tau", tau)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value) or abs(value) > MAX_NEURON_VALUE:
            raise ValueError(f"{name} must be a finite number below {MAX_NEURON_VALUE:g}, "
                             f"got {value!r}")
    if v_threshold is not None and not float(v_threshold) > 0:
        raise ValueError(f"v_threshold must be > 0, got {v_threshold}")
    if tau is not None and not float(tau) > 1.0:
        raise ValueError(f"tau={tau} refused. {TAU_MESSAGE}")


def is_lif(node: torch.nn.Module) -> bool:
    """Whether tau is a setting of this node: a LIF node (or a user's subclass of one); PLIF
    learns tau and IF has none."""
    return isinstance(node, sj_neuron.LIFNode)


def spiking_nodes(
    model: torch.nn.Module, layers: Iterable[str] | None = None
) -> list[tuple[str, torch.nn.Module]]:
    """The (name, node) pairs of the model's LIF/PLIF/IF nodes, optionally only `layers`."""
    nodes = [(n, m) for n, m in model.named_modules() if isinstance(m, SPIKING_NODE_TYPES)]
    if layers is not None:
        wanted = set(layers)
        unknown = wanted - {n for n, _ in nodes}
        if unknown:
            names = ", ".join(n for n, _ in nodes)
            raise KeyError(f"no spiking layer named {sorted(unknown)}; the model has: {names}")
        nodes = [(n, m) for n, m in nodes if n in wanted]
    return nodes


def get_neuron_params(model: torch.nn.Module) -> dict[str, dict[str, float | None]]:
    """Current v_threshold and tau of every spiking node (tau None for IF; PLIF's learned)."""
    return {name: _node_params(node) for name, node in spiking_nodes(model)}


def _node_params(node: torch.nn.Module) -> dict[str, float | None]:
    if isinstance(node, sj_neuron.ParametricLIFNode):
        tau = float(1.0 / node.w.detach().sigmoid().item())
    elif isinstance(node, sj_neuron.LIFNode):
        tau = float(node.tau)
    else:
        tau = None
    return {"v_threshold": float(node.v_threshold), "tau": tau}


def set_neuron_params(
    model: torch.nn.Module,
    v_threshold: float | None = None,
    tau: float | None = None,
    layers: Iterable[str] | None = None,
) -> None:
    """Set threshold and/or tau on the spiking nodes (all, or those named in `layers`).

    `tau` applies to LIF nodes; PLIF nodes learn tau and IF nodes have none, so a tau given
    for a model that has no LIF node is an error rather than a silent no-op.
    """
    check_neuron_values(v_threshold, tau)
    nodes = spiking_nodes(model, layers)
    if not nodes:
        raise ValueError("the model has no SpikingJelly LIF, PLIF or IF node to configure")
    if tau is not None and not any(is_lif(m) for _, m in nodes):
        raise ValueError(
            "tau was given but the selected layers have no LIFNode (PLIF learns tau, IF has "
            "none); set only v_threshold for these models"
        )
    for _, node in nodes:
        if v_threshold is not None:
            node.v_threshold = float(v_threshold)
        if tau is not None and is_lif(node):
            node.tau = float(tau)


def restore_neuron_params(
    model: torch.nn.Module, saved: dict[str, dict[str, float | None]]
) -> None:
    """Put back values read by `get_neuron_params` (PLIF's learned tau is never touched)."""
    for name, node in spiking_nodes(model):
        values = saved[name]
        node.v_threshold = values["v_threshold"]
        if is_lif(node):
            node.tau = values["tau"]


@contextlib.contextmanager
def neuron_params(
    model: torch.nn.Module,
    v_threshold: float | None = None,
    tau: float | None = None,
    layers: Iterable[str] | None = None,
) -> Iterator[torch.nn.Module]:
    """Run a block under another neuron config and restore the previous one on exit."""
    saved = get_neuron_params(model)
    set_neuron_params(model, v_threshold=v_threshold, tau=tau, layers=layers)
    try:
        yield model
    finally:
        restore_neuron_params(model, saved)


@contextlib.contextmanager
def use_config(model: torch.nn.Module, config: NeuronConfig | None) -> Iterator[torch.nn.Module]:
    """`neuron_params` for a NeuronConfig; None means the model's current config."""
    if config is None or (config.v_threshold is None and config.tau is None):
        yield model
        return
    tau = config.tau if _has_lif(model) else None
    with neuron_params(model, v_threshold=config.v_threshold, tau=tau):
        yield model


def _has_lif(model: torch.nn.Module) -> bool:
    return any(is_lif(m) for _, m in spiking_nodes(model))


@torch.no_grad()
def forward_with_spikes(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and spikes per sample in one pass: {layer name: [N], 'total': [N]}.

    Counted with forward hooks on the spiking nodes (summed over T and neurons), so any
    SpikingJelly body works; nodes run multi-step (`[T, N, ...]`) as `SpikingClassifier` has.
    """
    nodes = spiking_nodes(model)
    if not nodes:
        raise ValueError("the model has no spiking node to count")
    per_layer: dict[str, list[torch.Tensor]] = {name: [] for name, _ in nodes}

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            per_layer[name].append(out.detach().float().flatten(2).sum(dim=(0, 2)))

        return hook

    handles = [node.register_forward_hook(hook_for(name)) for name, node in nodes]
    logits = []
    try:
        with eval_mode(model):
            for start in range(0, len(x), batch_size):
                logits.append(model(x[start : start + batch_size]).float())
    finally:
        for handle in handles:
            handle.remove()
    counts = {name: torch.cat(chunks).cpu() for name, chunks in per_layer.items()}
    counts["total"] = torch.stack(list(counts.values())).sum(0)
    return torch.cat(logits), counts


def logits_and_spike_totals(
    model: torch.nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass with gradients: (logits, spikes per sample summed over every
    spiking node, T and neurons), so a loss can ask for fewer spikes (surrogate gradients)."""
    nodes = spiking_nodes(model)
    if not nodes:
        raise ValueError("the model has no spiking node to count")
    totals: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        totals.append(out.float().flatten(2).sum(dim=(0, 2)))

    handles = [node.register_forward_hook(hook) for _, node in nodes]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, torch.stack(totals).sum(0)


def count_spikes(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Spikes per sample: {layer name: [N] counts summed over T and neurons, 'total': [N]}."""
    return forward_with_spikes(model, x, batch_size)[1]
