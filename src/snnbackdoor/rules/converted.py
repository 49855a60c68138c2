"""The converted SNN as a model: ``ConvertedSNN`` (``model(x) -> logits`` on pixel-space
inputs, any T from one presentation) and how its IF nodes are made trainable for LR_H.

SpikingJelly's converter output keeps ``IFNode(v_threshold=1, v_reset=None)`` (soft reset)
between two fixed ``VoltageScaler``s. ``make_trainable`` gives those nodes a surrogate
gradient (ATan by default, as in LR_B) and a detached reset; ``surrogate_settings`` reads
that state back from the nodes (it is saved with the model, never attached to it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, neuron

from ..models.classifier import SpikingClassifier
from ..models.kit import SURROGATES

EVENT_INPUTS = ("cycle", "resample", "mean")


def resample_weights(total: int, frames: int) -> torch.Tensor:
    """[total, frames] area weights: step t averages the recording over [t, t+1) * frames/total.

    Rows sum to 1 and every column sums to total/frames, so the time-mean of the resampled
    sequence is exactly the mean frame (the ANN twin's input) for any T.
    """
    t = torch.arange(total, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(frames, dtype=torch.float64).unsqueeze(0)
    lo, hi = t * frames / total, (t + 1) * frames / total
    overlap = (torch.minimum(hi, j + 1) - torch.maximum(lo, j)).clamp(min=0)
    return (overlap / (hi - lo)).float()


class ConvertedSNN(SpikingClassifier):
    """A converted IF network as ``model(x) -> logits`` on pixel-space inputs.

    Normalises with the ANN twin's mean/std, presents the input for ``T`` steps (images:
    the analog image at every step, i.e. direct/rate input into the first layer), and reads
    out the time-mean of the last layer (argmax equals that of the accumulated output). The
    body runs multi-step in chunks of ``chunk`` steps without resetting in between, so memory
    does not grow with T.

    Event frames ``[N, T_data, P, H, W]`` (the ANN twin was trained on their time-mean):
    ``event_input='cycle'`` (default) plays the recording frame by frame in a loop (step t
    sees frame t mod T_data; when T is a multiple of T_data the time-mean of the input is
    exactly the ANN's mean frame, and the order of events is kept); ``'resample'`` spreads
    one playback over the T steps (area resampling, each frame held T/T_data steps);
    ``'mean'`` feeds the ANN's mean frame at every step (the textbook conversion setting).
    Long holds of one frame let IF neurons overshoot before later negative input arrives, so
    ``resample`` converges worse than ``cycle`` (docs/methods.md section 6).
    """

    def __init__(
        self,
        body: nn.Module,
        T: int,
        mean=None,
        std=None,
        encoding: str = "direct",
        event_input: str = "cycle",
        chunk: int = 16,
        conversion: dict | None = None,
    ) -> None:
        super().__init__(body, T, mean, std, encoding)
        if event_input not in EVENT_INPUTS:
            raise ValueError(f"event_input must be one of {EVENT_INPUTS}, got {event_input!r}")
        if int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.event_input = event_input
        self.chunk = int(chunk)
        self.conversion: dict = dict(conversion or {})  # builder args, saved with the model

    # ------------------------------------------------------------------ inputs

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoding == "direct":
            if x.ndim != 4:
                raise ValueError(f"expected images [N, C, H, W], got shape {tuple(x.shape)}")
            return self.normalise(x)
        if x.ndim != 5:
            raise ValueError(f"expected event frames [N, T, P, H, W], got shape {tuple(x.shape)}")
        if self.event_input == "mean":
            return self.normalise(x.mean(1))
        return self.normalise(x)

    def _steps(self, prepared: torch.Tensor, start: int, stop: int, total: int) -> torch.Tensor:
        """Inputs of steps [start, stop) of a ``total``-step presentation: [stop-start, N, ...]."""
        if self.encoding == "direct" or self.event_input == "mean":
            return prepared.unsqueeze(0).expand(stop - start, *prepared.shape)
        frames = prepared.shape[1]
        if self.event_input == "cycle":
            index = torch.arange(start, stop, device=prepared.device) % frames
            return prepared[:, index].transpose(0, 1)
        weights = resample_weights(total, frames)[start:stop].to(prepared)
        return torch.einsum("sf,nf...->sn...", weights, prepared)

    # ------------------------------------------------------------------ forward

    def _run(self, x: torch.Tensor, checkpoints: Sequence[int], total: int) -> dict:
        bounds = sorted(set(range(self.chunk, total, self.chunk)) | set(checkpoints))
        out: dict[int, torch.Tensor] = {}
        acc = None
        start = 0
        functional.reset_net(self.body)
        try:
            # fp32 even under the trainer's bf16 autocast: IF membranes integrate over many
            # steps and the balancing scales assume full precision
            with torch.autocast(x.device.type, enabled=False):
                prepared = self._prepare(x.float())
                for stop in bounds:
                    step_sum = self.body(self._steps(prepared, start, stop, total)).sum(0)
                    acc = step_sum if acc is None else acc + step_sum
                    if stop in checkpoints:
                        out[stop] = acc / stop
                    start = stop
        finally:
            functional.reset_net(self.body)
        return out

    def forward_steps(self, x: torch.Tensor, checkpoints: Sequence[int]) -> dict[int, torch.Tensor]:
        """Time-mean logits after each of ``checkpoints`` steps: {T: [N, classes]}.

        One presentation serves every T (the state at step t does not depend on the total),
        except for resampled event frames, whose input at step t depends on T.
        """
        wanted = sorted({int(c) for c in checkpoints})
        if not wanted or wanted[0] < 1:
            raise ValueError(f"checkpoints must be T values >= 1, got {list(checkpoints)}")
        if self.encoding == "frames" and self.event_input == "resample":
            return {T: self._run(x, [T], T)[T] for T in wanted}
        return self._run(x, wanted, wanted[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(x, (self.T,))[self.T]


# ---------------------------------------------------------------------- trainable (LR_H)


def _spiking_nodes(model: nn.Module) -> list[neuron.BaseNode]:
    return [m for m in model.modules() if isinstance(m, neuron.BaseNode)]


def make_trainable(
    model: ConvertedSNN, surrogate: str = "atan", detach_reset: bool = True
) -> ConvertedSNN:
    """Give the converter's IF nodes a surrogate gradient and make the weights trainable.

    The weights and biases (convs with BN already fused, linears) are trained; the balancing
    scales are buffers and stay fixed; there is no BN left, so train and eval modes agree.
    Returns ``model`` (changed in place).
    """
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)}")
    nodes = _spiking_nodes(model)
    if not nodes:
        raise ValueError("the model has no spiking node to train")
    for node in nodes:
        node.surrogate_function = SURROGATES[surrogate]()
        node.detach_reset = bool(detach_reset)
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def surrogate_settings(model: nn.Module) -> dict | None:
    """``{"surrogate", "detach_reset"}`` shared by every spiking node of ``model`` (what
    `make_trainable` set, or the converter's defaults); None if the nodes differ."""
    names = {cls: name for name, cls in SURROGATES.items()}
    found = {(names.get(type(n.surrogate_function)), bool(n.detach_reset))
             for n in _spiking_nodes(model)}
    if len(found) != 1:
        return None
    surrogate, detach_reset = found.pop()
    if surrogate is None:
        return None
    return {"surrogate": surrogate, "detach_reset": detach_reset}
