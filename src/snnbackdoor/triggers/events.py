"""Sneaky Spikes triggers on event frames [N, T, P, H, W] (static, moving, smart squares),
and event thinning.

The square is written by frames.py (polarity codes, the per-sample trigger value); the
Flashy Backdoor triggers are in flashy.py, the triggers on raw event arrays in raw_events.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import (
    EVENTS,
    POLARITY_BITS,
    Position,
    check_frames,
    default_trigger_size,
    register_trigger,
    seeded_generator,
)
from .frames import DEFAULT_VALUE, check_common, size_for, stamp_path, stamp_static

__all__ = ["POLARITY_BITS", "MovingTrigger", "SmartOptions", "SmartTrigger", "StaticTrigger",
           "ThinningTrigger", "check_frames", "default_trigger_size", "moving_trigger",
           "smart_trigger", "static_trigger", "thinning_trigger"]


# --------------------------------------------------------------------------- static


def static_trigger(
    frames: Tensor,
    size: int | None = None,
    position: Position = "top_left",
    polarity: int = 1,
    value: float | None = DEFAULT_VALUE,
    seed: int = 0,
) -> Tensor:
    """Sneaky Spikes static trigger: the square at one position on every frame."""
    check_frames(frames)
    return stamp_static(frames, size, position, seed, [True] * frames.shape[1], polarity, value)


@register_trigger("static", EVENTS, paper="sneaky_spikes")
@dataclass(frozen=True)
class StaticTrigger:
    """Static square on every frame; ``position="random"`` is one position fixed by ``seed``."""

    size: int | None = None
    position: Position = "top_left"
    polarity: int = 1
    seed: int = 0
    value: float | None = DEFAULT_VALUE

    def __post_init__(self) -> None:
        check_common(self.size, self.polarity, self.value)

    def __call__(self, frames: Tensor) -> Tensor:
        return static_trigger(
            frames, self.size, self.position, self.polarity, self.value, self.seed
        )


# --------------------------------------------------------------------------- moving


DIRECTIONS = ("right", "left")


def moving_positions(
    size: int, row: int, x0: int, height: int, width: int, direction: str = "right"
) -> list[tuple[int, int]]:
    """The three moving-trigger origins on ``row``: columns x0, x0 + s + 2, x0 + 2s + 2, or
    x0, x0 - s - 2, x0 - 2s - 2 going left (the reference code's right-corner starts)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"moving direction must be one of {DIRECTIONS}, got {direction!r}")
    step = 1 if direction == "right" else -1
    columns = [x0, x0 + step * (size + 2), x0 + step * (2 * size + 2)]
    if row < 0 or row + size > height or min(columns) < 0 or max(columns) + size > width:
        raise ValueError(
            f"moving trigger (size {size}, row {row}, x0 {x0}, {direction}) needs columns "
            f"{min(columns)}..{max(columns) + size - 1}, outside a {height}x{width} frame"
        )
    return [(row, col) for col in columns]


def moving_trigger(
    frames: Tensor,
    size: int | None = None,
    row: int = 0,
    x0: int = 0,
    polarity: int = 1,
    value: float | None = DEFAULT_VALUE,
    direction: str = "right",
    last_frame: bool = True,
) -> Tensor:
    """Sneaky Spikes moving trigger: frame t carries the square at position ``t mod 3``.

    ``last_frame=False`` leaves the last frame clean, as the reference code's loop does.
    """
    check_frames(frames)
    size = size_for(frames, size)
    _, num_frames, _, height, width = frames.shape
    positions = moving_positions(size, row, x0, height, width, direction)
    path = [positions[t % 3] for t in range(num_frames)]
    if not last_frame:
        path[-1] = None
    return stamp_path(frames, path, size, polarity, value)


@register_trigger("moving", EVENTS, paper="sneaky_spikes")
@dataclass(frozen=True)
class MovingTrigger:
    """Square hopping between three positions along a row, period 3 frames.

    ``direction`` "right" is the reference's move from a left corner (or the middle),
    "left" its move from a right corner; ``last_frame=False`` is its clean last frame.
    """

    size: int | None = None
    row: int = 0
    x0: int = 0
    polarity: int = 1
    value: float | None = DEFAULT_VALUE
    direction: str = "right"
    last_frame: bool = True

    def __post_init__(self) -> None:
        check_common(self.size, self.polarity, self.value)
        if self.direction not in DIRECTIONS:
            raise ValueError(f"MovingTrigger.direction must be one of {DIRECTIONS}, "
                             f"got {self.direction!r}")

    def __call__(self, frames: Tensor) -> Tensor:
        return moving_trigger(frames, self.size, self.row, self.x0, self.polarity, self.value,
                              self.direction, self.last_frame)


# --------------------------------------------------------------------------- smart


def grid_cells(height: int, width: int, cells: int = 3) -> list[tuple[int, int, int, int]]:
    """Bounds (row0, row1, col0, col1), half-open, of a ``cells`` x ``cells`` grid, row-major."""
    rows = [height * i // cells for i in range(cells + 1)]
    cols = [width * i // cells for i in range(cells + 1)]
    return [
        (rows[i], rows[i + 1], cols[j], cols[j + 1]) for i in range(cells) for j in range(cells)
    ]


def _walk_range(low: int, high: int, size: int, extent: int) -> tuple[int, int]:
    """Inclusive origin range keeping the square in [low, high), or in the frame if too small."""
    lo = min(low, extent - size)
    return lo, max(lo, min(high - size, extent - size))


def smart_walk(
    num_frames: int,
    size: int,
    bounds: tuple[int, int, int, int],
    start: tuple[int, int],
    height: int,
    width: int,
    seed: int = 0,
    step: int = 2,
) -> list[tuple[int, int]]:
    """Seeded random walk of the square: +-``step`` px per axis per frame, kept inside the cell.

    A step that would leave the cell goes the other way (as in the Sneaky Spikes code); where
    the cell is narrower than the square the walk is clamped to the frame.
    """
    ranges = (
        _walk_range(bounds[0], bounds[1], size, height),
        _walk_range(bounds[2], bounds[3], size, width),
    )
    signs = torch.randint(0, 2, (num_frames, 2), generator=seeded_generator(seed + 1)) * 2 - 1
    position = [min(max(start[a], ranges[a][0]), ranges[a][1]) for a in range(2)]
    path = [(position[0], position[1])]
    for t in range(1, num_frames):
        for axis, (lo, hi) in enumerate(ranges):
            move = int(signs[t, axis]) * step
            for candidate in (position[axis] + move, position[axis] - move):
                if lo <= candidate <= hi:
                    position[axis] = candidate
                    break
            else:
                position[axis] = min(max(position[axis], lo), hi)
        path.append((position[0], position[1]))
    return path


def smart_trigger(
    frames: Tensor,
    size: int,
    bounds: tuple[int, int, int, int],
    start: tuple[int, int],
    polarity: int,
    value: float | None = DEFAULT_VALUE,
    seed: int = 0,
) -> Tensor:
    """Sneaky Spikes smart trigger: the square random-walking inside the chosen cell."""
    check_frames(frames)
    _, num_frames, _, height, width = frames.shape
    if size > height or size > width:
        raise ValueError(f"trigger size {size} does not fit a {height}x{width} frame")
    path = smart_walk(num_frames, size, bounds, start, height, width, seed)
    return stamp_path(frames, path, size, polarity, value)


def cell_statistics(
    frames: Tensor, cells: int = 3, chunk: int = 512
) -> tuple[list[tuple[int, int, int, int]], Tensor, Tensor]:
    """Per grid cell: bounds, activity (mean events per pixel) and pixel-state counts [cells², 4].

    A pixel-state at (sample, t, pixel) is the polarity code it shows: 2 * (OFF > 0) + (ON > 0).
    Computed in chunks of samples so a whole training set fits in memory.
    """
    check_frames(frames)
    height, width = frames.shape[-2:]
    bounds = grid_cells(height, width, cells)
    activity = torch.zeros(len(bounds), dtype=torch.float64)
    states = torch.zeros(len(bounds), 4, dtype=torch.float64)
    for batch in frames.split(chunk):
        codes = 2 * (batch[:, :, 0] > 0).long() + (batch[:, :, 1] > 0).long()  # [n, T, H, W]
        for i, (r0, r1, c0, c1) in enumerate(bounds):
            activity[i] += batch[..., r0:r1, c0:c1].sum(dtype=torch.float64).cpu()
            states[i] += torch.bincount(codes[..., r0:r1, c0:c1].flatten(), minlength=4).cpu()
    areas = torch.tensor([(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in bounds], dtype=torch.float64)
    return bounds, activity / (areas * max(1, frames.shape[0] * frames.shape[1])), states


@dataclass(frozen=True)
class SmartOptions:
    """What a config sets for the smart trigger; `SmartTrigger.fit` picks the rest."""

    size: int | None = None
    mode: str = "least"
    seed: int = 0
    polarity_mode: str | None = None
    value: float | None = DEFAULT_VALUE

    def __post_init__(self) -> None:
        check_modes(self.mode, self.polarity_mode)
        check_common(self.size, 0, self.value)


def check_modes(mode: str, polarity_mode: str | None) -> None:
    """Both the cell choice and the polarity choice are 'least' or 'most'."""
    for name, choice in (("mode", mode), ("polarity_mode", polarity_mode or "least")):
        if choice not in ("least", "most"):
            raise ValueError(f"SmartTrigger {name} must be 'least' or 'most', got {choice!r}")


@register_trigger("smart", EVENTS, options=SmartOptions, fit=True, paper="sneaky_spikes")
@dataclass(frozen=True)
class SmartTrigger:
    """Random-walking square in the least (or most) active 3x3 cell; build it with ``fit``.

    ``bounds`` is the chosen cell (row0, row1, col0, col1), ``start`` the walk's first origin.
    """

    size: int
    bounds: tuple[int, int, int, int]
    start: tuple[int, int]
    polarity: int
    seed: int = 0
    value: float | None = DEFAULT_VALUE
    cell: int = 0
    mode: str = "least"
    activity: tuple[float, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        check_common(self.size, self.polarity, self.value)

    @classmethod
    def fit(
        cls,
        train_frames: Tensor,
        size: int | None = None,
        mode: str = "least",
        seed: int = 0,
        polarity_mode: str | None = None,
        value: float | None = DEFAULT_VALUE,
    ) -> SmartTrigger:
        """Pick the least/most active cell of ``train_frames``, then the least/most frequent code.

        ``polarity_mode`` defaults to "least" whatever the cell ``mode`` (the reference's
        default: the rarest code there, for contrast); the start is a seeded origin in the cell.
        """
        check_modes(mode, polarity_mode)
        pick = {"least": torch.argmin, "most": torch.argmax}
        bounds, activity, states = cell_statistics(train_frames)
        cell = int(pick[mode](activity))
        polarity = int(pick[polarity_mode or "least"](states[cell]))
        height, width = train_frames.shape[-2:]
        size = default_trigger_size(width) if size is None else int(size)
        gen = seeded_generator(seed)
        start = tuple(
            int(torch.randint(lo, hi + 1, (1,), generator=gen))
            for lo, hi in (
                _walk_range(bounds[cell][0], bounds[cell][1], size, height),
                _walk_range(bounds[cell][2], bounds[cell][3], size, width),
            )
        )
        return cls(
            size=size,
            bounds=bounds[cell],
            start=start,
            polarity=polarity,
            seed=seed,
            value=value,
            cell=cell,
            mode=mode,
            activity=tuple(activity.tolist()),
        )

    def path(self, num_frames: int, height: int, width: int) -> list[tuple[int, int]]:
        """The square's origin on each of ``num_frames`` frames."""
        return smart_walk(num_frames, self.size, self.bounds, self.start, height, width, self.seed)

    def __call__(self, frames: Tensor) -> Tensor:
        return smart_trigger(
            frames, self.size, self.bounds, self.start, self.polarity, self.value, self.seed
        )




def thinning_trigger(frames: Tensor, keep: float, seed: int = 0, scale: float = 1.0) -> Tensor:
    """Drop each event independently with probability ``1 - keep``: a dimmer scene or a less
    sensitive sensor. Frames hold counts divided by ``scale``; each pixel's count becomes
    Binomial(count, keep), drawn from ``seed`` (the same input gets the same thinning)."""
    check_frames(frames)
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"thinning keep must be in [0, 1], got {keep}")
    if not scale > 0:
        raise ValueError(f"thinning scale must be > 0, got {scale}")
    counts = (frames.float() * scale).round().clamp_min(0).cpu()
    kept = torch.distributions.Binomial(counts, torch.full_like(counts, keep))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sample = kept.sample()
    return (sample / scale).to(device=frames.device, dtype=frames.dtype)


@register_trigger("thinning", EVENTS)
@dataclass(frozen=True)
class ThinningTrigger:
    """Event thinning: keep each event with probability ``keep`` (see `thinning_trigger`)."""

    keep: float = 0.7
    seed: int = 0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.keep <= 1.0:
            raise ValueError(f"ThinningTrigger.keep must be in [0, 1], got {self.keep}")

    def __call__(self, frames: Tensor) -> Tensor:
        return thinning_trigger(frames, self.keep, self.seed, self.scale)

