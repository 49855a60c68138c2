"""Layer discovery and feature hooks shared by the defenses.

No defense knows a model by name. Layers are found by type, and how they connect is read
from the data flow of one probe forward pass (which tensor a module receives is the very
tensor another module returned). Features are read with forward hooks; the outputs of
multi-step SpikingJelly modules (`[T, N, ...]`) are averaged over time, so an SNN's feature
is its firing rate and an ANN twin's is its activation. Works on any `SpikingClassifier`
and on the ANN twins.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from spikingjelly.activation_based import base as sj_base
from spikingjelly.activation_based import neuron as sj_neuron
from torch.overrides import TorchFunctionMode
from tqdm.auto import tqdm

from ..data.bundle import Split
from ..training import TrainConfig, model_device, predict
from ..util import eval_mode

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    sj_neuron.BaseNode,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
)
"""What counts as a layer's activation: any SpikingJelly spiking node, or a ReLU-like layer."""

_TRACED_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, *ACTIVATION_TYPES)


# --------------------------------------------------------------------------- small helpers


def sgd_config(
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    progress: bool,
    schedule: str = "cosine",
) -> TrainConfig:
    """The defenses' fine-tuning recipe as a TrainConfig (SGD, cosine by default)."""
    return TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer="sgd",
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule,
        seed=seed,
        progress=progress,
    )


def on_device(split: Split, model: nn.Module) -> Split:
    return split.to(model_device(model))


def probe_input(split: Split, model: nn.Module, count: int = 2, zeros: bool = False):
    """A few float samples of `split` on the model's device (all zeros when data-free)."""
    if len(split) == 0:
        raise ValueError("the clean subset is empty; a defense needs at least one sample")
    x = split.floats(slice(0, count)).to(model_device(model))
    return torch.zeros_like(x) if zeros else x


def exact_accuracy(model: nn.Module, split: Split) -> float:
    """Accuracy as an exact fraction (correct / total), so a bound like 0.10 compares
    exactly (a float32 mean of 6/60 is 0.10000000149 > 0.1)."""
    pred = predict(model, split.x).cpu()
    return int((pred == split.y.cpu()).sum()) / len(split)


def is_multistep(module: nn.Module) -> bool:
    """Whether a module runs SpikingJelly's multi-step mode (tensors `[T, N, ...]`)."""
    return isinstance(module, sj_base.StepModule) and getattr(module, "step_mode", "s") == "m"


def rate(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """A module's tensor as a per-sample feature: time mean for multi-step modules."""
    return tensor.mean(0) if is_multistep(module) else tensor


# --------------------------------------------------------------------------- the probe pass


@dataclass
class Call:
    """One module's first call in the probe pass: who it is and which tensors it saw."""

    index: int
    name: str
    module: nn.Module
    input_id: int | None
    output_id: int | None
    feature_shape: tuple[int, ...]  # the output's per-sample shape after the time mean, [N, ...]


class _SumRecorder(TorchFunctionMode):
    """Records every out-of-place tensor sum of a forward pass: output id -> operand ids
    (how a residual block joins its branch and its shortcut)."""

    ADDS = (torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__)

    def __init__(self, sums: dict[int, list[int]], keep_alive: list) -> None:
        super().__init__()
        self.sums, self.keep_alive = sums, keep_alive

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.ADDS and isinstance(out, torch.Tensor):
            operands = [a for a in args if isinstance(a, torch.Tensor)]
            self.keep_alive.extend([out, *operands])
            self.sums[id(out)] = [id(a) for a in operands]
        return out


def trace(model: nn.Module, x: torch.Tensor,
          sums: dict[int, list[int]] | None = None) -> list[Call]:
    """Convs, BNs, linears and activations in the order they run on `x` (first call each).

    The input and output tensors' identities are kept, so data flow (which module feeds
    which) can be checked exactly rather than guessed from the order of definition. With
    `sums` (a dict), every tensor sum of the pass is recorded there too (`_SumRecorder`).
    """
    calls: dict[str, Call] = {}
    keep_alive: list[torch.Tensor] = []  # ids stay unique while the tensors live
    handles = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            if name in calls:
                return
            first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            out = output if isinstance(output, torch.Tensor) else None
            keep_alive.extend(t for t in (first, out) if t is not None)
            shape = tuple(rate(module, out).shape) if out is not None else ()
            calls[name] = Call(
                len(calls),
                name,
                module,
                id(first) if first is not None else None,
                id(out) if out is not None else None,
                shape,
            )

        return hook

    for name, module in model.named_modules():
        if isinstance(module, _TRACED_TYPES):
            handles.append(module.register_forward_hook(hook_for(name)))
    recorder = _SumRecorder(sums, keep_alive) if sums is not None else contextlib.nullcontext()
    try:
        with torch.no_grad(), eval_mode(model), recorder:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return sorted(calls.values(), key=lambda call: call.index)


def channel_sources(model: nn.Module, x: torch.Tensor, act_name: str) -> list[str]:
    """The convs / BNs whose output channel c must be zero for channel c of activation
    `act_name` to receive nothing: the BN (or conv) feeding it, and through a residual sum
    every operand, an operand that is another activation's output followed back the same
    way (an identity shortcut carries the previous block's channel c)."""
    sums: dict[int, list[int]] = {}
    calls = trace(model, x, sums)
    by_output = {c.output_id: c for c in calls if c.output_id is not None}
    by_name = {c.name: c for c in calls}
    if act_name not in by_name:
        raise ValueError(f"activation {act_name!r} did not run in the probe pass")

    def sources(tensor_id: int | None, depth: int = 0) -> list[str]:
        if depth > len(calls) or tensor_id is None:
            raise ValueError(f"cannot follow the input of {act_name!r} back to a conv or BN")
        call = by_output.get(tensor_id)
        if call is not None and isinstance(call.module, (nn.Conv2d, nn.BatchNorm2d)):
            return [call.name]
        if call is not None and isinstance(call.module, ACTIVATION_TYPES):
            return sources(call.input_id, depth + 1)
        if tensor_id in sums:
            return [n for operand in sums[tensor_id] for n in sources(operand, depth + 1)]
        raise ValueError(f"cannot follow the input of {act_name!r} back to a conv or BN "
                         "(neither a module's output nor a sum)")

    return list(dict.fromkeys(sources(by_name[act_name].input_id)))


@dataclass(frozen=True)
class ConvBN:
    """A convolution and the batch norm that directly normalises its output."""

    conv_name: str
    conv: nn.Conv2d
    bn_name: str
    bn: nn.BatchNorm2d


def conv_bn_pairs(model: nn.Module, x: torch.Tensor) -> list[ConvBN]:
    """(conv, BN) pairs where the BN's input *is* the conv's output tensor (checked in a
    probe forward pass) and the channel counts agree. A BN after anything else (an
    activation, a sum, a pool) is not paired with the nearest conv."""
    calls = trace(model, x)
    conv_by_output = {
        c.output_id: c for c in calls if isinstance(c.module, nn.Conv2d) and c.output_id is not None
    }
    pairs = []
    for call in calls:
        if not isinstance(call.module, nn.BatchNorm2d):
            continue
        conv_call = conv_by_output.get(call.input_id)
        if conv_call is None or conv_call.module.out_channels != call.module.num_features:
            continue
        pairs.append(ConvBN(conv_call.name, conv_call.module, call.name, call.module))
    return pairs


def conv_layers(model: nn.Module, x: torch.Tensor,
                skip_shortcuts: bool = False) -> list[tuple[str, nn.Conv2d]]:
    """All Conv2d layers in the order they run; with `skip_shortcuts`, without the
    projection shortcuts (`shortcut_convs`)."""
    calls = trace(model, x)
    skip = set(_shortcut_names(calls)) if skip_shortcuts else set()
    return [(c.name, c.module) for c in calls
            if isinstance(c.module, nn.Conv2d) and c.name not in skip]


def _shortcut_names(calls: list[Call]) -> list[str]:
    convs = [c for c in calls if isinstance(c.module, nn.Conv2d) and c.input_id is not None]
    return [c.name for c in convs
            if tuple(c.module.kernel_size) == (1, 1)
            and any(o is not c and o.input_id == c.input_id for o in convs)]


def shortcut_convs(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the projection shortcuts of residual blocks: 1x1 convs that read the very
    tensor another conv reads (the block's input, checked in a probe pass)."""
    return _shortcut_names(trace(model, x))


@dataclass(frozen=True)
class ConvUnit:
    """A conv layer with its BN (if one directly follows) and the activation that reads it."""

    conv_name: str
    conv: nn.Conv2d
    bn_name: str | None
    bn: nn.BatchNorm2d | None
    act_name: str
    act: nn.Module


def last_conv_unit(model: nn.Module, x: torch.Tensor) -> ConvUnit:
    """The last conv layer to run, its BN and its activation.

    The activation is the one whose input is the BN's (or conv's) output tensor; where a sum
    sits in between (a residual block), it is the first activation after the conv whose
    output has the conv's channel count.
    """
    calls = trace(model, x)
    convs = [c for c in calls if isinstance(c.module, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no Conv2d layer to prune")
    conv = convs[-1]
    bn = next(
        (
            c
            for c in calls
            if isinstance(c.module, nn.BatchNorm2d)
            and conv.output_id is not None
            and c.input_id == conv.output_id
        ),
        None,
    )
    feeder = bn or conv
    acts = [c for c in calls if isinstance(c.module, ACTIVATION_TYPES) and c.index > conv.index]
    act = next((c for c in acts if c.input_id == feeder.output_id), None)
    if act is None:
        channels = conv.module.out_channels
        act = next(
            (c for c in acts if len(c.feature_shape) >= 2 and c.feature_shape[1] == channels),
            None,
        )
    if act is None:
        raise ValueError(f"found no activation reading the last conv layer {conv.name!r}")
    return ConvUnit(
        conv.name,
        conv.module,
        bn.name if bn else None,
        bn.module if bn else None,
        act.name,
        act.module,
    )


def block_outputs(model: nn.Module, x: torch.Tensor, count: int = 3) -> list[str]:
    """Names of up to `count` 'block outputs': the last spatial activation of each spatial
    resolution, the last `count` resolutions. On a ResNet these are the stage outputs
    (NAD's group outputs); a net with fewer resolutions gives fewer."""
    stages: dict[tuple[int, ...], str] = {}
    for call in trace(model, x):
        if isinstance(call.module, ACTIVATION_TYPES) and len(call.feature_shape) == 4:
            size = call.feature_shape[2:]
            stages.pop(size, None)  # re-insert: dict order follows the last activation seen
            stages[size] = call.name
    names = list(stages.values())
    if not names:
        raise ValueError("the model has no activation with a spatial feature map [N, C, H, W]")
    return names[-count:]


def penultimate_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the last Linear layer to run; its input is the penultimate feature."""
    linears = [c for c in trace(model, x) if isinstance(c.module, nn.Linear)]
    if not linears:
        raise ValueError("the model has no Linear layer; name the feature layer explicitly")
    return linears[-1].name


# --------------------------------------------------------------------------- feature hooks


class FeatureRecorder:
    """Forward hooks keeping the per-sample feature (time mean for SNNs) of named modules.

    `where='output'` records what a module returns, `'input'` what it receives. With
    `detach=False` the features keep their graph (for losses on them, as in NAD).
    """

    def __init__(
        self, model: nn.Module, names: Sequence[str], where: str = "output", detach: bool = True
    ) -> None:
        if where not in ("output", "input"):
            raise ValueError(f"where must be 'output' or 'input', got {where!r}")
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise KeyError(f"no module named {missing} in the model")
        self.names = list(names)
        self.where = where
        self.detach = detach
        self.features: dict[str, torch.Tensor] = {}
        self._modules = [modules[n] for n in self.names]
        self._handles: list = []

    def _hook_for(self, name: str):
        def hook(module, inputs, output):
            tensor = inputs[0] if self.where == "input" else output
            feature = rate(module, tensor)
            self.features[name] = feature.detach() if self.detach else feature

        return hook

    def __enter__(self) -> FeatureRecorder:
        self._handles = [
            m.register_forward_hook(self._hook_for(n)) for n, m in zip(self.names, self._modules)
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def ordered(self) -> list[torch.Tensor]:
        return [self.features[n] for n in self.names]


@torch.no_grad()
def collect_features(
    model: nn.Module,
    x: torch.Tensor,
    names: Sequence[str],
    where: str = "output",
    batch_size: int = 256,
    progress: bool = False,
    desc: str = "features",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and per-sample features (flattened, float, CPU) of named modules over `x`."""
    device = model_device(model)
    logits, parts = [], {n: [] for n in names}
    starts = range(0, len(x), batch_size)
    with eval_mode(model), FeatureRecorder(model, names, where) as recorder:
        for start in tqdm(starts, desc=desc, unit="batch", leave=False, disable=not progress):
            batch = x[start : start + batch_size].to(device)
            if batch.dtype == torch.uint8:
                batch = batch.float() / 255.0
            logits.append(model(batch).float().cpu())
            for n in names:
                parts[n].append(recorder.features[n].float().flatten(1).cpu())
    return torch.cat(logits), {n: torch.cat(p) for n, p in parts.items()}
