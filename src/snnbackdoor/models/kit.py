"""One topology, two twins: a layer kit that builds either the SNN or its ReLU ANN twin.

Each body is written once against this kit, so the ANN used by ANN-to-SNN conversion has
exactly the SNN's topology (same layer names, same parameter shapes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
from spikingjelly.activation_based import layer, neuron, surrogate

from ..backend import NEURON_BACKENDS, set_neuron_backend
from ..neurons import check_neuron_values

NEURONS = ("lif", "plif", "if")
SURROGATES = {
    "atan": surrogate.ATan,
    "sigmoid": surrogate.Sigmoid,
    "piecewise_quadratic": surrogate.PiecewiseQuadratic,
}


@dataclass(frozen=True)
class LayerKit:
    """Factory of layers: multi-step SpikingJelly layers and nodes, or torch layers and ReLU."""

    spiking: bool = True
    neuron: str = "lif"
    v_threshold: float = 1.0
    tau: float = 2.0
    surrogate: str = "atan"
    detach_reset: bool = True
    neuron_backend: str = "auto"  # see backend.py: fused CPU LIF/IF, SpikingJelly's choice on CUDA

    def __post_init__(self) -> None:
        if self.neuron not in NEURONS:
            raise ValueError(f"unknown neuron {self.neuron!r}; choose one of {list(NEURONS)}")
        if self.surrogate not in SURROGATES:
            raise ValueError(
                f"unknown surrogate {self.surrogate!r}; choose one of {sorted(SURROGATES)}"
            )
        check_neuron_values(self.v_threshold, self.tau)
        if self.neuron_backend not in NEURON_BACKENDS:
            raise ValueError(
                f"unknown neuron backend {self.neuron_backend!r}; choose one of "
                f"{list(NEURON_BACKENDS)}"
            )

    def conv(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, bias: bool = False):
        if self.spiking:
            return layer.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias, step_mode="m")
        return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias)

    def bn(self, channels: int):
        if self.spiking:
            return layer.BatchNorm2d(channels, step_mode="m")
        return nn.BatchNorm2d(channels)

    def linear(self, fin: int, fout: int, bias: bool = True):
        return layer.Linear(fin, fout, bias=bias, step_mode="m") if self.spiking else nn.Linear(
            fin, fout, bias=bias
        )

    def pool(self, kind: str, size: int = 2):
        if kind not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {kind!r}")
        if self.spiking:
            cls = layer.AvgPool2d if kind == "avg" else layer.MaxPool2d
            return cls(size, size, step_mode="m")
        return nn.AvgPool2d(size, size) if kind == "avg" else nn.MaxPool2d(size, size)

    def global_pool(self):
        if self.spiking:
            return layer.AdaptiveAvgPool2d((1, 1), step_mode="m")
        return nn.AdaptiveAvgPool2d((1, 1))

    def flatten(self):
        return layer.Flatten(step_mode="m") if self.spiking else nn.Flatten()

    def act(self):
        """The spiking node (or ReLU in the ANN twin)."""
        if not self.spiking:
            return nn.ReLU()
        common = dict(
            v_threshold=float(self.v_threshold),
            surrogate_function=SURROGATES[self.surrogate](),
            detach_reset=self.detach_reset,
            step_mode="m",
        )
        if self.neuron == "lif":
            node = neuron.LIFNode(tau=float(self.tau), **common)
        elif self.neuron == "plif":
            node = neuron.ParametricLIFNode(init_tau=float(self.tau), **common)
        else:
            node = neuron.IFNode(**common)
        set_neuron_backend(node, self.neuron_backend)
        return node
