"""Model registry: name -> body builder, and `build_model` that wraps it for use.

A model is fully described by its `ModelSpec` (a JSON-able dict), which is what a
checkpoint stores instead of pickled code.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch.nn as nn

from ..neurons import check_neuron_values
from ..registry import get, register
from .classifier import ENCODINGS, ANNClassifier, SpikingClassifier
from .kit import NEURONS, SURROGATES, LayerKit

BodyBuilder = Callable[..., nn.Module]
MAX_CLASSES = 100_000
MAX_CHANNELS = 1024
MAX_IMAGE_SIZE = 4096
MAX_T = 1024


def _int_in(low: int, high: int, optional: bool = False) -> Callable[[object], bool]:
    def test(value: object) -> bool:
        if value is None:
            return optional
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and (
            low <= value <= high)

    return test


def _finite_list(value: object) -> bool:
    return value is None or isinstance(value, (list, tuple)) and 1 <= len(value) <= (
        MAX_CHANNELS) and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                              and math.isfinite(v) for v in value)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_SPEC_CHECKS: dict[str, Callable[[object], bool]] = {
    "name": lambda v: isinstance(v, str) and v.isidentifier(),
    "num_classes": _int_in(1, MAX_CLASSES),
    "in_channels": _int_in(1, MAX_CHANNELS, optional=True),
    "image_size": _int_in(1, MAX_IMAGE_SIZE, optional=True),
    "T": _int_in(1, MAX_T),
    "neuron": lambda v: v in NEURONS,
    "v_threshold": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
    "tau": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
    "surrogate": lambda v: isinstance(v, str) and v in SURROGATES,
    "detach_reset": lambda v: isinstance(v, bool),
    "encoding": lambda v: v in ENCODINGS,
    "mean": _finite_list,
    "std": _finite_list,
    "ann": lambda v: isinstance(v, bool),
    "extra": lambda v: isinstance(v, dict),
}
_SPEC_RULES = {
    "name": "must be a registered model name",
    "num_classes": f"must be an integer in 1..{MAX_CLASSES}",
    "in_channels": f"must be null or an integer in 1..{MAX_CHANNELS}",
    "image_size": f"must be null or an integer in 1..{MAX_IMAGE_SIZE}",
    "T": f"must be an integer in 1..{MAX_T}",
    "neuron": f"unknown neuron: must be one of {list(NEURONS)}",
    "v_threshold": "must be a number > 0",
    "tau": "must be a number > 1",
    "surrogate": f"must be one of {sorted(SURROGATES)}",
    "detach_reset": "must be true or false",
    "encoding": f"must be one of {list(ENCODINGS)}",
    "mean": "must be null or a list of finite numbers",
    "std": "must be null or a list of finite numbers",
    "ann": "must be true or false",
    "extra": "must be a mapping",
}


def register_model(name: str, native_shape: tuple[int, int, int]):
    """Register a body builder `(kit, in_channels, num_classes, image_size) -> nn.Module`
    whose native input is `native_shape` (channels, height, width)."""
    return register("model", name, native_shape=tuple(native_shape))


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model: builder name and its arguments."""

    name: str
    num_classes: int = 10
    in_channels: int | None = None
    image_size: int | None = None
    T: int = 4
    neuron: str = "lif"
    v_threshold: float = 1.0
    tau: float = 2.0
    surrogate: str = "atan"
    detach_reset: bool = True
    encoding: str = "direct"
    mean: list[float] | None = None
    std: list[float] | None = None
    ann: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Types and ranges of every field, checked before any layer is built (a spec may
        come from a downloaded file: huge, negative or fractional sizes are refused)."""
        problems = [f"{key}={_short(getattr(self, key))} ({_SPEC_RULES[key]})"
                    for key, test in _SPEC_CHECKS.items() if not test(getattr(self, key))]
        if problems:
            raise ValueError(f"model spec has invalid {'; '.join(problems)}")
        check_neuron_values(self.v_threshold, self.tau)
        stats = [s for s in (self.mean, self.std) if s is not None]
        if self.in_channels is not None and any(len(s) != self.in_channels for s in stats):
            raise ValueError(f"model spec mean/std need one value per channel "
                             f"({self.in_channels})")
        if self.std is not None and not all(v > 0 for v in self.std):
            raise ValueError("model spec std values must be > 0")

    def as_dict(self) -> dict:
        return asdict(self)


def build_model(spec: ModelSpec | str, **overrides) -> nn.Module:
    """Build a SpikingClassifier (or, with ann=True, its ReLU twin) from a spec or a name."""
    if isinstance(spec, str):
        spec = ModelSpec(name=spec, **overrides)
    elif overrides:
        spec = ModelSpec(**{**spec.as_dict(), **overrides})
    entry = get("model", spec.name)
    channels, size, _ = entry.meta["native_shape"]
    spec.in_channels = spec.in_channels or channels
    spec.image_size = spec.image_size or size
    kit = LayerKit(
        spiking=not spec.ann,
        neuron=spec.neuron,
        v_threshold=spec.v_threshold,
        tau=spec.tau,
        surrogate=spec.surrogate,
        detach_reset=spec.detach_reset,
    )
    body = entry.obj(kit, spec.in_channels, spec.num_classes, spec.image_size)
    if spec.ann:
        model = ANNClassifier(body, spec.mean, spec.std, spec.encoding)
    else:
        model = SpikingClassifier(body, spec.T, spec.mean, spec.std, spec.encoding)
    model.spec = spec
    return model
