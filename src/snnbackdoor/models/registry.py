"""Model registry: name -> body builder, and `build_model` that wraps it for use.

A model is fully described by its `ModelSpec` (a JSON-able dict), which is what a
checkpoint stores instead of pickled code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch.nn as nn

from ..registry import get, register
from .classifier import ANNClassifier, SpikingClassifier
from .kit import LayerKit

BodyBuilder = Callable[..., nn.Module]


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
