"""NDSBM, neural dendrites suppression (Li et al., arXiv 2510.06629), written from the paper's
description: clamp the dendrites that feed on neurons whose clean membrane potential is abnormal.

On the defender's clean subset, used *unlabelled*, every spiking layer's temporal membrane
potential (TMP: the pre-spike potential H[t], averaged over time and over the clean inputs)
is measured per neuron. The neurons clean data keeps abnormally far from firing (the lowest
TMP of their layer) are the ones a trigger can recruit without clean inputs noticing; the
dendrites carrying their output into the next weighted layer (Conv2d: input channels,
Linear: input features, mapped through the pooling/flatten in between) are clamped to
[-bound, bound] (0: cut). How many neurons each layer loses is chosen on a held-out part of
the subset: the shares grow along the grid, one connection at a time (the one whose next share
moves the outputs least), while the repaired model's predictions agree with the model's own
(no labels) within `max_disagreement` and its output distribution stays within `max_shift`
of the model's (mean total-variation distance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from spikingjelly.activation_based import layer as sj_layer
from spikingjelly.activation_based import neuron as sj_neuron

from ..config import check_range
from ..data.bundle import Split
from ..neurons import SPIKING_NODE_TYPES
from ..training import logits_of, model_device
from ..util import eval_mode
from .base import RepairJob, repair
from .discovery import probe_input

FRACTION_GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
# Parameter-free modules a neuron's output may pass on its way to the next layer's dendrites.
PASS_THROUGH = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout,
                nn.Identity, sj_layer.AvgPool2d, sj_layer.MaxPool2d, sj_layer.AdaptiveAvgPool2d,
                sj_layer.Flatten, sj_layer.Dropout)


@dataclass
class NDSBMOptions:
    """`fraction_grid`: shares of a layer's neurons that may be suppressed (the largest one
    keeping held-out agreement >= 1 - `max_disagreement` is used); `bound`: the clamp of
    their dendrites, as a share of the layer's median |weight| (0 cuts them)."""

    fraction_grid: tuple[float, ...] = FRACTION_GRID
    max_disagreement: float = 0.05
    max_shift: float = 0.02  # held-out mean total-variation distance from the model's outputs
    holdout: float = 0.5  # share of the subset kept out of the TMP measurement, for the choice
    bound: float = 0.0
    quantile: float = 0.9  # a neuron's clean TMP: this quantile over the clean inputs
    max_inputs: int = 512  # clean inputs the TMP is measured on, at most
    include_readout: bool = False  # the readout's dendrites carry the class evidence itself
    batch_size: int = 256
    progress: bool = True  # accepted like every defense's; NDSBM has no long loop

    def __post_init__(self) -> None:
        self.fraction_grid = tuple(self.fraction_grid)
        if not self.fraction_grid:
            raise ValueError("ndsbm.fraction_grid must list at least one fraction")
        for value in self.fraction_grid:
            check_range("ndsbm.fraction_grid", value, 0.0, 1.0, low_open=True)
        check_range("ndsbm.max_disagreement", self.max_disagreement, 0.0, 1.0)
        check_range("ndsbm.max_shift", self.max_shift, 0.0, 1.0)
        check_range("ndsbm.holdout", self.holdout, 0.0, 1.0, low_open=True)
        check_range("ndsbm.bound", self.bound, 0.0)
        check_range("ndsbm.quantile", self.quantile, 0.0, 1.0)
        check_range("ndsbm.max_inputs", self.max_inputs, 1, integer=True)
        check_range("ndsbm.batch_size", self.batch_size, 1, integer=True)


@dataclass(frozen=True)
class Dendrites:
    """A spiking layer, the weighted layer its spikes feed, and the modules in between."""

    node_name: str
    node: nn.Module
    target_name: str
    target: nn.Module
    between: tuple[nn.Module, ...]


def dendrite_pairs(model: nn.Module, x: torch.Tensor) -> list[Dendrites]:
    """Every (spiking layer -> Conv2d/Linear) connection, read off the data flow of one probe
    pass: the weighted layer's input *is* the node's output, possibly through pooling,
    flatten or dropout (a sum or a concatenation in between ends the chain)."""
    calls: list[tuple[str, nn.Module, int, int]] = []
    keep: list[torch.Tensor] = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
                keep.extend((inputs[0], output))
                calls.append((name, module, id(inputs[0]), id(output)))
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in model.named_modules()
               if not list(m.children()) or isinstance(m, SPIKING_NODE_TYPES)]
    try:
        with torch.no_grad(), eval_mode(model):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    by_input: dict[int, list[tuple[str, nn.Module, int, int]]] = {}
    for call in calls:
        by_input.setdefault(call[2], []).append(call)
    pairs, seen = [], set()
    for name, module, _, out_id in calls:
        if not isinstance(module, SPIKING_NODE_TYPES) or name in seen:
            continue
        seen.add(name)
        between: list[nn.Module] = []
        current = out_id
        while len(by_input.get(current, [])) == 1:
            next_name, next_module, _, next_out = by_input[current][0]
            if isinstance(next_module, (nn.Conv2d, nn.Linear)):
                pairs.append(Dendrites(name, module, next_name, next_module, tuple(between)))
                break
            if not isinstance(next_module, PASS_THROUGH):
                break
            between.append(next_module)
            current = next_out
    return pairs


def membrane_sequence(node: nn.Module, x_seq: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
    """The pre-spike membrane potential H[t] of a LIF, PLIF or IF node, replayed from its
    input current `x_seq` and its own spikes `[T, N, ...]` (SpikingJelly's charge and reset)."""
    v_reset = node.v_reset
    v = torch.full_like(x_seq[0], 0.0 if v_reset is None else float(v_reset))
    rest = 0.0 if v_reset is None else float(v_reset)
    if isinstance(node, sj_neuron.ParametricLIFNode):
        decay = float(node.w.detach().sigmoid())
    elif isinstance(node, sj_neuron.LIFNode):
        decay = 1.0 / float(node.tau)
    else:
        decay = None  # IF: no leak
    decay_input = getattr(node, "decay_input", True)
    out = []
    for t in range(x_seq.shape[0]):
        x = x_seq[t]
        if decay is None:
            h = v + x
        elif decay_input:
            h = v + (x - (v - rest)) * decay
        else:
            h = v - (v - rest) * decay + x
        out.append(h)
        s = spikes[t]
        v = h - s * float(node.v_threshold) if v_reset is None else h * (1 - s) + rest * s
    return torch.stack(out)


@torch.no_grad()
def temporal_membrane_potential(model: nn.Module, x: torch.Tensor, nodes: dict[str, nn.Module],
                                quantile: float = 0.9,
                                batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per neuron of each named node: the `quantile` over the inputs `x` (unlabelled) of its
    time-averaged H[t], i.e. how high clean inputs drive it at best; `[C, H, W]` or `[F]`."""
    maps: dict[str, list[torch.Tensor]] = {name: [] for name in nodes}

    def hook_for(name: str):
        def hook(module, inputs, output):
            x_seq, spikes = inputs[0].float(), output.float()
            if x_seq.shape[0] != spikes.shape[0]:  # a static prefix fed one step, broadcast
                x_seq = x_seq.expand_as(spikes)
            maps[name].append(membrane_sequence(module, x_seq, spikes).mean(0).cpu())
        return hook

    handles = [node.register_forward_hook(hook_for(n)) for n, node in nodes.items()]
    device = model_device(model)
    try:
        with eval_mode(model):
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size].to(device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(chunks).quantile(quantile, dim=0) for name, chunks in maps.items()}


def source_potential(pair: Dendrites, tmp: torch.Tensor) -> torch.Tensor:
    """The TMP of what each dendrite of `pair.target` reads: the node's TMP map passed through
    the pooling/flatten in between, then per input channel (Conv2d) or feature (Linear)."""
    mapped = tmp.unsqueeze(0).unsqueeze(0)  # [T=1, N=1, ...] for multi-step modules
    with torch.no_grad():
        for module in pair.between:
            is_multi = getattr(module, "step_mode", "s") == "m"
            mapped = module(mapped) if is_multi else module(mapped[0]).unsqueeze(0)
    mapped = mapped[0, 0]
    if isinstance(pair.target, nn.Conv2d):
        return mapped.reshape(mapped.shape[0], -1).mean(1)
    return mapped.reshape(-1)


@torch.no_grad()
def clamp_dendrites(target: nn.Module, sources: torch.Tensor, bound: float) -> None:
    """Clamp, in place, the weights reading input channels/features `sources` into
    [-b, b], b = `bound` x the layer's median |weight|."""
    weight = target.weight
    b = float(bound) * float(weight.detach().abs().median())
    index = sources.to(weight.device)
    weight[:, index] = weight[:, index].clamp(-b, b)


def unlabelled_split(clean_subset: Split, holdout: float, seed: int):
    """(measure, held-out) inputs: a seeded random split of the subset's inputs; labels are
    never read."""
    n = len(clean_subset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = max(1, min(n - 1, round(holdout * n))) if n > 1 else 0
    x = clean_subset.floats()
    if held == 0:
        return x, x
    return x[order[held:]], x[order[:held]]


@repair("ndsbm", NDSBMOptions)
def ndsbm_repair(job: RepairJob) -> dict:
    """NDSBM: clamp the dendrites fed by the neurons with the lowest clean TMP, layer by layer.

    Works on a copy, from the clean subset's inputs only (labels unused). The shares of
    suppressed neurons grow along `fraction_grid`, each step on the connection whose next
    share moves the held-out outputs least, while the clamped model agrees with the given
    model's predictions on the held-out part of the subset within `max_disagreement` and its
    outputs move by at most `max_shift` (mean total-variation distance). No test data,
    label, trigger or ASR is read. `info['layers']` records, per connection, the share and
    what was clamped; `info['path']` the order the shares grew in.
    """
    repaired, opts = job.copy, job.options
    measure_x, held_x = unlabelled_split(job.clean_subset, opts.holdout, job.seed)
    pairs = dendrite_pairs(repaired, probe_input(job.clean_subset, repaired))
    if not opts.include_readout and pairs:
        last = list(dict.fromkeys(p.target_name for p in pairs))[-1]
        readouts = [p for p in pairs if p.target_name == last
                    and isinstance(p.target, nn.Linear)]
        pairs = [p for p in pairs if p not in readouts]
    if not pairs:
        raise ValueError("NDSBM found no spiking layer feeding a Conv2d or Linear layer")
    measure_x = measure_x[: opts.max_inputs]
    tmp = temporal_membrane_potential(repaired, measure_x, {p.node_name: p.node for p in pairs},
                                      opts.quantile, opts.batch_size)
    reference = logits_of(repaired, held_x, opts.batch_size).cpu().softmax(1)
    labels = reference.argmax(1)
    grid = sorted(opts.fraction_grid)
    orders = {}
    for pair in pairs:
        potential = source_potential(pair, tmp[pair.node_name])
        orders[pair.target_name] = (potential, potential.argsort())  # lowest TMP first
    saved = {p.target_name: p.target.weight.detach().clone() for p in pairs}

    def clamp_all(fractions: dict[str, float]) -> None:
        for pair in pairs:
            with torch.no_grad():
                pair.target.weight.copy_(saved[pair.target_name])
            order = orders[pair.target_name][1]
            clamp_dendrites(pair.target, order[: int(fractions[pair.target_name] * len(order))],
                            opts.bound)

    def judge(fractions: dict[str, float]) -> tuple[float, float]:
        clamp_all(fractions)
        probs = logits_of(repaired, held_x, opts.batch_size).cpu().softmax(1)
        return (float((probs.argmax(1) == labels).float().mean()),
                float(0.5 * (probs - reference).abs().sum(1).mean()))

    chosen = {p.target_name: 0.0 for p in pairs}
    path = []
    while True:  # grow the connection whose next share moves the clean outputs least
        steps = []
        for name, fraction in chosen.items():
            larger = [f for f in grid if f > fraction]
            if larger:
                trial = {**chosen, name: larger[0]}
                agreement, shift = judge(trial)
                if agreement >= 1.0 - opts.max_disagreement and shift <= opts.max_shift:
                    steps.append((shift, name, larger[0], agreement))
        if not steps:
            break
        shift, name, fraction, agreement = min(steps)
        chosen[name] = fraction
        path.append({"dendrites_of": name, "fraction": fraction, "agreement": agreement,
                     "shift": shift})
    clamp_all(chosen)
    layers = []
    for pair in pairs:
        potential, order = orders[pair.target_name]
        suppressed = order[: int(chosen[pair.target_name] * len(order))]
        layers.append({
            "node": pair.node_name, "dendrites_of": pair.target_name,
            "fraction": chosen[pair.target_name], "sources": len(potential),
            "suppressed": sorted(suppressed.tolist()),
            "tmp_cut": float(potential[suppressed].max()) if len(suppressed) else None,
        })
    return {
        "layers": layers,
        "path": path,
        "clamped_sources": sum(len(layer["suppressed"]) for layer in layers),
        "bound": opts.bound,
        "measured_on": len(measure_x),
        "held_out": len(held_x),
    }
