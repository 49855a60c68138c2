"""BadSNN on event frames: how frames are scaled for the model, and the event triggers
(T_s as the paper states it, event thinning, and T_s on unit-scaled count frames)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ...data.bundle import DatasetBundle, Split
from ...triggers.events import ThinningTrigger
from ...triggers.image import NoiseTrigger
from .options import BadSNNOptions


@dataclass(frozen=True)
class PreparedFrames:
    """Frames as the model sees them, what they were divided by, and the largest count."""

    data: DatasetBundle
    frame_scale: float
    count_max: float


def prepare_frames(data: DatasetBundle, mode: str) -> PreparedFrames:
    """Event frames divided by the training split's largest count ("unit", so T_s acts on
    [0, 1]) or kept as raw counts ("counts"). A new bundle: the input is left as it was."""
    count_max = float(data.train.x.float().max()) or 1.0
    scale = count_max if mode == "unit" else 1.0
    info = dataclasses.replace(data.info, extra={**data.info.extra, "frame_scale": scale,
                                                 "count_max": count_max})
    if scale == 1.0:
        return PreparedFrames(dataclasses.replace(data, info=info), scale, count_max)
    split = lambda s: Split(s.floats() / scale, s.y)  # noqa: E731
    bundle = DatasetBundle(split(data.train), split(data.val), split(data.test), info)
    return PreparedFrames(bundle, scale, count_max)


@dataclass(frozen=True)
class UnitScaledNoise:
    """T_s on count frames divided by ``scale`` (to [0, 1]), scaled back: the trigger as
    docs/methods.md 1.4 states it, for a model fed raw counts."""

    beta: float
    seed: int
    scale: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return NoiseTrigger(self.beta, self.seed)(x / self.scale) * self.scale


def event_triggers(options: BadSNNOptions, seed: int, frame_scale: float,
                   count_max: float) -> dict:
    """The event-frame triggers, keyed by their metric: T_s (paper), event thinning and, on
    count frames, T_s on unit-scaled frames. `frame_scale`: what the frames were divided by."""
    counts = options.frames == "counts"
    triggers = {"asr_s": NoiseTrigger(options.noise_beta, seed, counts=counts)}
    if counts:
        triggers["asr_s_unit"] = UnitScaledNoise(options.noise_beta, seed, count_max)
    triggers["asr_thin"] = ThinningTrigger(options.thinning_keep, seed, frame_scale)
    return triggers
