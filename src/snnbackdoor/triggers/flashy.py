"""Flashy Backdoor triggers on event frames [N, T, P, H, W]: the square on a run of frames
(framed), in bursts (strobing), and whole lit frames (flash).

The square is written by frames.py, as for the Sneaky Spikes triggers in events.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import EVENTS, Position, check_frames, register_trigger
from .frames import DEFAULT_VALUE, check_common, stamp_frames, stamp_static


def framed_trigger(
    frames: Tensor,
    size: int | None = None,
    position: Position = "top_left",
    start: int = 0,
    length: int = 1,
    polarity: int = 1,
    value: float | None = DEFAULT_VALUE,
    seed: int = 0,
) -> Tensor:
    """Flashy framed trigger: the static square on frames ``start .. start + length - 1`` only."""
    check_frames(frames)
    num_frames = frames.shape[1]
    if length < 1 or start < 0 or start + length > num_frames:
        raise ValueError(
            f"framed trigger frames {start}..{start + length - 1} must lie in "
            f"0..{num_frames - 1} (length >= 1)"
        )
    active = [start <= t < start + length for t in range(num_frames)]
    return stamp_static(frames, size, position, seed, active, polarity, value)


@register_trigger("framed", EVENTS, paper="flashy")
@dataclass(frozen=True)
class FramedTrigger:
    """Static square on a contiguous run of ``length`` frames from ``start``."""

    size: int | None = None
    position: Position = "top_left"
    start: int = 0
    length: int = 1
    polarity: int = 1
    value: float | None = DEFAULT_VALUE
    seed: int = 0

    def __post_init__(self) -> None:
        check_common(self.size, self.polarity, self.value)
        if self.start < 0 or self.length < 1:
            raise ValueError(
                f"FramedTrigger needs start >= 0 and length >= 1, got "
                f"start={self.start}, length={self.length}"
            )

    def __call__(self, frames: Tensor) -> Tensor:
        return framed_trigger(
            frames,
            self.size,
            self.position,
            self.start,
            self.length,
            self.polarity,
            self.value,
            self.seed,
        )


def strobe_frames(num_frames: int, on: int, gap: int, start: int = 0) -> list[bool]:
    """Which frames a strobe lights: bursts of ``on`` frames, then ``gap`` dark ones, from start."""
    if on < 1 or gap < 0 or start < 0:
        raise ValueError(
            f"strobe needs on >= 1, gap >= 0, start >= 0; got on={on}, gap={gap}, start={start}"
        )
    return [t >= start and (t - start) % (on + gap) < on for t in range(num_frames)]


def strobing_trigger(
    frames: Tensor,
    size: int | None = None,
    position: Position = "top_left",
    on: int = 1,
    gap: int = 1,
    polarity: int = 1,
    value: float | None = DEFAULT_VALUE,
    seed: int = 0,
    start: int = 0,
) -> Tensor:
    """Flashy strobing trigger: the static square in bursts of ``on`` frames, ``gap`` apart."""
    check_frames(frames)
    active = strobe_frames(frames.shape[1], on, gap, start)
    return stamp_static(frames, size, position, seed, active, polarity, value)


@register_trigger("strobing", EVENTS, paper="flashy")
@dataclass(frozen=True)
class StrobingTrigger:
    """Static square lit for ``on`` frames, dark for ``gap`` frames, repeating from ``start``."""

    size: int | None = None
    position: Position = "top_left"
    on: int = 1
    gap: int = 1
    polarity: int = 1
    value: float | None = DEFAULT_VALUE
    seed: int = 0
    start: int = 0

    def __post_init__(self) -> None:
        check_common(self.size, self.polarity, self.value)
        strobe_frames(0, self.on, self.gap, self.start)

    def __call__(self, frames: Tensor) -> Tensor:
        return strobing_trigger(
            frames,
            self.size,
            self.position,
            self.on,
            self.gap,
            self.polarity,
            self.value,
            self.seed,
            self.start,
        )


# --------------------------------------------------------------------------- Flashy: flash


def flash_trigger(
    frames: Tensor,
    frame_indices: Sequence[int] = (0,),
    polarity: int = 3,
    value: float | None = DEFAULT_VALUE,
) -> Tensor:
    """Flashy flash: whole frames set to the polarity value (negative indices count from the end).

    Raises ValueError for an index outside the T frames.
    """
    check_frames(frames)
    num_frames, height, width = frames.shape[1], frames.shape[3], frames.shape[4]
    mask = torch.zeros(num_frames, height, width, dtype=torch.bool)
    for t in frame_indices:
        if not -num_frames <= t < num_frames:
            raise ValueError(f"flash frame {t} out of range for {num_frames} frames")
        mask[t] = True
    return stamp_frames(frames, mask, polarity, value)


@register_trigger("flash", EVENTS, paper="flashy")
@dataclass(frozen=True)
class FlashTrigger:
    """Whole-frame flash on the selected frames (both polarities by default)."""

    frames: tuple[int, ...] = (0,)
    polarity: int = 3
    value: float | None = DEFAULT_VALUE

    def __post_init__(self) -> None:
        check_common(None, self.polarity, self.value)
        if len(self.frames) == 0:
            raise ValueError("FlashTrigger.frames must select at least one frame")

    def __call__(self, frames: Tensor) -> Tensor:
        return flash_trigger(frames, self.frames, self.polarity, self.value)

