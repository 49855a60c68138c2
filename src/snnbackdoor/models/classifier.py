"""SpikingClassifier: any multi-step SpikingJelly body as an ordinary `model(x) -> logits`.

It owns normalisation (so triggers work in pixel space [0,1]), encoding, the time-mean
readout and the state reset, so no other code needs to know the model is spiking.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer

ENCODINGS = ("direct", "frames")

# Multi-step layers whose output at step t depends only on the input at step t (no state).
TIME_INVARIANT = (layer.Conv2d, layer.BatchNorm2d)


def static_prefix_length(body: nn.Module) -> int:
    """How many leading modules of a Sequential body are stateless and time-invariant.

    With direct encoding every step receives the same image, so these modules give the same
    output at every step: they run once on `[1, N, ...]` and their output is broadcast over
    T. (Training-mode batch norm sees the same mean and variance either way.)
    """
    if not isinstance(body, nn.Sequential):
        return 0
    count = 0
    for module in body:
        if type(module) not in TIME_INVARIANT or getattr(module, "step_mode", "m") != "m":
            break
        count += 1
    return count


def stored_channels_last(model: nn.Module) -> bool:
    """Whether the model's convolutions are stored channels-last (the fast path); read off
    the first conv with more than one input channel (with one, both layouts coincide)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels > 1:
            weight = module.weight
            return weight.is_contiguous(memory_format=torch.channels_last) and not (
                weight.is_contiguous())
    return False


class _Normalise(nn.Module):
    """Per-channel (x - mean) / std with buffers, a no-op when mean/std are None."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.enabled = mean is not None and std is not None
        if self.enabled:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self.enabled else x


class SpikingClassifier(nn.Module):
    """Normalise, encode over T steps, run the body, average the output over time.

    encoding='direct': images `[N, C, H, W]` are repeated T times into the first layer.
    encoding='frames': event frames `[N, T, P, H, W]` are fed time-major; T is the data's.
    """

    def __init__(
        self,
        body: nn.Module,
        T: int,
        mean=None,
        std=None,
        encoding: str = "direct",
    ) -> None:
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.body = body
        self.T = int(T)
        self.encoding = encoding
        self.normalise = _Normalise(mean, std)
        functional.set_step_mode(self.body, "m")
        self.static_prefix = static_prefix_length(body) if encoding == "direct" else 0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel-space input -> normalised time-major sequence `[T, N, ...]`."""
        if self.encoding == "direct":
            if x.ndim != 4:
                raise ValueError(f"expected images [N, C, H, W], got shape {tuple(x.shape)}")
            x = self.normalise(x)
            return x.unsqueeze(0).expand(self.T, *x.shape)
        if x.ndim != 5:
            raise ValueError(f"expected event frames [N, T, P, H, W], got shape {tuple(x.shape)}")
        return self.normalise(x.transpose(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self.body)
        if self.static_prefix:
            out = self._run_with_static_prefix(x)
        else:
            out = self.body(self.encode(x))
        functional.reset_net(self.body)
        return out.mean(0)

    def _run_with_static_prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The body on direct-encoded images, its time-invariant prefix computed once.

        Same outputs and gradients as `body(encode(x))` (autograd sums the broadcast over
        T), at a fraction of the first layers' cost; forward hooks on those layers see
        `[1, N, ...]` instead of `[T, N, ...]`.
        """
        modules = list(self.body)
        out = self.encode(x)[:1]  # one step: every step is the same image
        for module in modules[: self.static_prefix]:
            out = module(out)
        if out.ndim == 5 and stored_channels_last(self.body):
            # A 1-channel image has no layout of its own, so the first conv answers NCHW;
            # turn it (N samples, once) into the layout every later layer runs fastest in.
            out = out[0].contiguous(memory_format=torch.channels_last).unsqueeze(0)
        out = out.expand(self.T, *out.shape[1:])
        for module in modules[self.static_prefix :]:
            out = module(out)
        return out


class ANNClassifier(nn.Module):
    """The ReLU twin: same normalisation, one pass; event frames are averaged over time."""

    def __init__(self, body: nn.Module, mean=None, std=None, encoding: str = "direct") -> None:
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        self.body = body
        self.encoding = encoding
        self.normalise = _Normalise(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoding == "frames":
            x = x.mean(1)
        return self.body(self.normalise(x))
