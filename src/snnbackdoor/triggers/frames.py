"""Writing a trigger square into event frames [N, T, P, H, W], shared by the Sneaky Spikes
(events.py) and Flashy (flashy.py) triggers.

Frames hold per-pixel event counts per polarity per time bin, channel 0 = OFF, channel 1 = ON.
A trigger square writes ``value * bit`` into each channel, with the bits given by the polarity
code (0 = erase, 1 = ON only, 2 = OFF only, 3 = both). ``value`` defaults to 1.0: one event per
pixel and time bin, what the Sneaky Spikes and Flashy code writes into SpikingJelly's count
frames. ``value=None`` uses each sample's largest count instead (1 for an all-zero sample), a
trigger as bright as the sample's brightest pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import (
    Position,
    check_frames,
    default_trigger_size,
    polarity_bits,
    square_origin,
)

Origin = tuple[int, int] | None


DEFAULT_VALUE = 1.0
"""The stamp of the reference code on count frames: one event per pixel and time bin."""


def trigger_value(frames: Tensor, value: float | None = DEFAULT_VALUE) -> Tensor:
    """Per-sample trigger intensity [N]: ``value``; None: each sample's max count (1 if empty)."""
    if value is not None:
        if value < 0:
            raise ValueError(f"trigger value must be >= 0, got {value}")
        return torch.full(
            (frames.shape[0],), float(value), dtype=frames.dtype, device=frames.device
        )
    peak = frames.flatten(1).amax(dim=1)
    return torch.where(peak > 0, peak, torch.ones_like(peak))


def square_mask(shape: tuple[int, int, int], origins: Sequence[Origin], size: int) -> Tensor:
    """Boolean mask [T, H, W]: a ``size`` square at ``origins[t]`` (None = no trigger at t)."""
    num_frames, height, width = shape
    if len(origins) != num_frames:
        raise ValueError(f"need one origin per frame ({num_frames}), got {len(origins)}")
    mask = torch.zeros(shape, dtype=torch.bool)
    for t, origin in enumerate(origins):
        if origin is not None:
            row, col = origin
            mask[t, row : row + size, col : col + size] = True
    return mask


def stamp_frames(frames: Tensor, mask: Tensor, polarity: int,
                 value: float | None = DEFAULT_VALUE) -> Tensor:
    """Write the trigger into ``frames`` where ``mask`` [T, H, W] is set, per polarity code."""
    check_frames(frames)
    off_bit, on_bit = polarity_bits(polarity)
    bits = torch.tensor([off_bit, on_bit], dtype=frames.dtype, device=frames.device)
    fill = trigger_value(frames, value).view(-1, 1, 1, 1, 1) * bits.view(1, 1, 2, 1, 1)
    where = mask.to(frames.device).unsqueeze(1).unsqueeze(0)  # [1, T, 1, H, W]
    return torch.where(where, fill, frames)


def stamp_path(frames: Tensor, origins: Sequence[Origin], size: int, polarity: int,
               value: float | None = DEFAULT_VALUE) -> Tensor:
    """The square at ``origins[t]`` on frame t (None: not on that frame)."""
    shape = (frames.shape[1], frames.shape[3], frames.shape[4])
    return stamp_frames(frames, square_mask(shape, origins, size), polarity, value)


def size_for(frames: Tensor, size: int | None) -> int:
    """The trigger side: ``size``, or 10% of the frame width when None."""
    return default_trigger_size(frames.shape[-1]) if size is None else int(size)


def stamp_static(frames: Tensor, size: int | None, position: Position, seed: int,
                 active: Sequence[bool], polarity: int, value: float | None) -> Tensor:
    """The square at one position (named, explicit, or drawn from ``seed``) on the frames
    where ``active`` is set: the static, framed and strobing triggers."""
    size = size_for(frames, size)
    origin = square_origin(position, size, frames.shape[-2], frames.shape[-1], seed)
    return stamp_path(frames, [origin if on else None for on in active], size, polarity, value)


def check_common(size: int | None, polarity: int, value: float | None) -> None:
    """Validate the settings every square trigger shares."""
    if size is not None and size < 1:
        raise ValueError(f"trigger size must be >= 1 (or None for 10% of the width), got {size}")
    polarity_bits(polarity)
    if value is not None and value < 0:
        raise ValueError(f"trigger value must be >= 0 (or null for the sample max), got {value}")
