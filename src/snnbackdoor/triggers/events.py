"""Event triggers (Sneaky Spikes, Flashy Backdoor) on frames [N, T, P, H, W] and raw events.

Frames hold per-pixel event counts per polarity per time bin, channel 0 = OFF, channel 1 = ON.
A trigger square writes ``value * bit`` into each channel, with the bits given by the polarity
code (0 = erase, 1 = ON only, 2 = OFF only, 3 = both). ``value`` defaults to the sample's largest
count (1 for an all-zero sample) so the trigger is as visible as the brightest pixel; pass a
number to fix it (1.0 for frames clipped to [0, 1], as in the original code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .image import Position, _describe, _seeded_generator, square_origin

POLARITY_BITS: dict[int, tuple[int, int]] = {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1)}
"""Polarity code -> (OFF bit, ON bit)."""

Origin = tuple[int, int] | None
Window = tuple[float, float]


# --------------------------------------------------------------------------- shared helpers


def default_trigger_size(width: int) -> int:
    """Sneaky Spikes trigger side: 10% of the frame width, at least one pixel."""
    return max(1, int(0.1 * width))


def polarity_bits(polarity: int) -> tuple[int, int]:
    """(OFF bit, ON bit) of a polarity code in {0, 1, 2, 3}."""
    if polarity not in POLARITY_BITS:
        raise ValueError(
            f"polarity code must be 0 (erase), 1 (ON), 2 (OFF) or 3 (both), got {polarity!r}"
        )
    return POLARITY_BITS[polarity]


def check_frames(frames: Tensor) -> None:
    """Raise ValueError unless ``frames`` is a float batch [N, T, P=2, H, W] of counts >= 0."""
    expected = "float event frames [N, T, P=2, H, W] (OFF, ON counts)"
    if (
        not isinstance(frames, Tensor)
        or frames.ndim != 5
        or frames.shape[2] != 2
        or not frames.is_floating_point()
    ):
        raise ValueError(f"expected {expected}, got {_describe(frames)}")
    if frames.numel() and float(frames.min()) < 0:
        raise ValueError(f"expected {expected} with non-negative counts, got a negative value")


def trigger_value(frames: Tensor, value: float | None = None) -> Tensor:
    """Per-sample trigger intensity [N]: ``value``, or the sample's max count (1 if empty)."""
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


def stamp_frames(frames: Tensor, mask: Tensor, polarity: int, value: float | None = None) -> Tensor:
    """Write the trigger into ``frames`` where ``mask`` [T, H, W] is set, per polarity code."""
    check_frames(frames)
    off_bit, on_bit = polarity_bits(polarity)
    bits = torch.tensor([off_bit, on_bit], dtype=frames.dtype, device=frames.device)
    fill = trigger_value(frames, value).view(-1, 1, 1, 1, 1) * bits.view(1, 1, 2, 1, 1)
    where = mask.to(frames.device).unsqueeze(1).unsqueeze(0)  # [1, T, 1, H, W]
    return torch.where(where, fill, frames)


def _size_for(frames: Tensor, size: int | None) -> int:
    return default_trigger_size(frames.shape[-1]) if size is None else int(size)


def _static_origins(
    frames: Tensor, size: int, position: Position, seed: int, active: Sequence[bool]
) -> list[Origin]:
    origin = square_origin(position, size, frames.shape[-2], frames.shape[-1], seed)
    return [origin if on else None for on in active]


def _check_common(size: int | None, polarity: int, value: float | None) -> None:
    if size is not None and size < 1:
        raise ValueError(f"trigger size must be >= 1 (or None for 10% of the width), got {size}")
    polarity_bits(polarity)
    if value is not None and value < 0:
        raise ValueError(f"trigger value must be >= 0 (or None for the sample max), got {value}")


# --------------------------------------------------------------------------- static


def static_trigger(
    frames: Tensor,
    size: int | None = None,
    position: Position = "top_left",
    polarity: int = 1,
    value: float | None = None,
    seed: int = 0,
) -> Tensor:
    """Sneaky Spikes static trigger: the square at one position on every frame."""
    check_frames(frames)
    size = _size_for(frames, size)
    origins = _static_origins(frames, size, position, seed, [True] * frames.shape[1])
    return stamp_frames(
        frames, square_mask((frames.shape[1], *frames.shape[3:]), origins, size), polarity, value
    )


@dataclass(frozen=True)
class StaticTrigger:
    """Static square on every frame; ``position="random"`` is one position fixed by ``seed``."""

    size: int | None = None
    position: Position = "top_left"
    polarity: int = 1
    seed: int = 0
    value: float | None = None

    def __post_init__(self) -> None:
        _check_common(self.size, self.polarity, self.value)

    def __call__(self, frames: Tensor) -> Tensor:
        return static_trigger(
            frames, self.size, self.position, self.polarity, self.value, self.seed
        )


# --------------------------------------------------------------------------- moving


def moving_positions(
    size: int, row: int, x0: int, height: int, width: int
) -> list[tuple[int, int]]:
    """The three moving-trigger origins: columns x0, x0 + s + 2, x0 + 2s + 2 on ``row``."""
    columns = [x0, x0 + size + 2, x0 + 2 * size + 2]
    if row < 0 or row + size > height or x0 < 0 or columns[-1] + size > width:
        raise ValueError(
            f"moving trigger (size {size}, row {row}, x0 {x0}) needs columns "
            f"{x0}..{columns[-1] + size - 1}, outside a {height}x{width} frame"
        )
    return [(row, col) for col in columns]


def moving_trigger(
    frames: Tensor,
    size: int | None = None,
    row: int = 0,
    x0: int = 0,
    polarity: int = 1,
    value: float | None = None,
) -> Tensor:
    """Sneaky Spikes moving trigger: frame t carries the square at position ``t mod 3``."""
    check_frames(frames)
    size = _size_for(frames, size)
    _, num_frames, _, height, width = frames.shape
    positions = moving_positions(size, row, x0, height, width)
    origins = [positions[t % 3] for t in range(num_frames)]
    return stamp_frames(
        frames, square_mask((num_frames, height, width), origins, size), polarity, value
    )


@dataclass(frozen=True)
class MovingTrigger:
    """Square hopping between three positions along a row, period 3 frames."""

    size: int | None = None
    row: int = 0
    x0: int = 0
    polarity: int = 1
    value: float | None = None

    def __post_init__(self) -> None:
        _check_common(self.size, self.polarity, self.value)

    def __call__(self, frames: Tensor) -> Tensor:
        return moving_trigger(frames, self.size, self.row, self.x0, self.polarity, self.value)


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
    signs = torch.randint(0, 2, (num_frames, 2), generator=_seeded_generator(seed + 1)) * 2 - 1
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
    value: float | None = None,
    seed: int = 0,
) -> Tensor:
    """Sneaky Spikes smart trigger: the square random-walking inside the chosen cell."""
    check_frames(frames)
    _, num_frames, _, height, width = frames.shape
    if size > height or size > width:
        raise ValueError(f"trigger size {size} does not fit a {height}x{width} frame")
    path = smart_walk(num_frames, size, bounds, start, height, width, seed)
    return stamp_frames(
        frames, square_mask((num_frames, height, width), path, size), polarity, value
    )


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
class SmartTrigger:
    """Random-walking square in the least (or most) active 3x3 cell; build it with ``fit``.

    ``bounds`` is the chosen cell (row0, row1, col0, col1), ``start`` the walk's first origin.
    """

    size: int
    bounds: tuple[int, int, int, int]
    start: tuple[int, int]
    polarity: int
    seed: int = 0
    value: float | None = None
    cell: int = 0
    mode: str = "least"
    activity: tuple[float, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        _check_common(self.size, self.polarity, self.value)

    @classmethod
    def fit(
        cls,
        train_frames: Tensor,
        size: int | None = None,
        mode: str = "least",
        seed: int = 0,
        polarity_mode: str | None = None,
        value: float | None = None,
    ) -> SmartTrigger:
        """Pick the least/most active cell of ``train_frames``, then the least/most frequent code.

        ``polarity_mode`` defaults to ``mode``; the start is a seeded origin inside the cell.
        """
        for name, choice in (("mode", mode), ("polarity_mode", polarity_mode or mode)):
            if choice not in ("least", "most"):
                raise ValueError(f"SmartTrigger {name} must be 'least' or 'most', got {choice!r}")
        pick = {"least": torch.argmin, "most": torch.argmax}
        bounds, activity, states = cell_statistics(train_frames)
        cell = int(pick[mode](activity))
        polarity = int(pick[polarity_mode or mode](states[cell]))
        height, width = train_frames.shape[-2:]
        size = default_trigger_size(width) if size is None else int(size)
        gen = _seeded_generator(seed)
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


# --------------------------------------------------------------------------- Flashy: framed, strobe


def framed_trigger(
    frames: Tensor,
    size: int | None = None,
    position: Position = "top_left",
    start: int = 0,
    length: int = 1,
    polarity: int = 1,
    value: float | None = None,
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
    size = _size_for(frames, size)
    active = [start <= t < start + length for t in range(num_frames)]
    origins = _static_origins(frames, size, position, seed, active)
    return stamp_frames(
        frames, square_mask((num_frames, *frames.shape[3:]), origins, size), polarity, value
    )


@dataclass(frozen=True)
class FramedTrigger:
    """Static square on a contiguous run of ``length`` frames from ``start``."""

    size: int | None = None
    position: Position = "top_left"
    start: int = 0
    length: int = 1
    polarity: int = 1
    value: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common(self.size, self.polarity, self.value)
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
    value: float | None = None,
    seed: int = 0,
    start: int = 0,
) -> Tensor:
    """Flashy strobing trigger: the static square in bursts of ``on`` frames, ``gap`` apart."""
    check_frames(frames)
    size = _size_for(frames, size)
    active = strobe_frames(frames.shape[1], on, gap, start)
    origins = _static_origins(frames, size, position, seed, active)
    return stamp_frames(
        frames, square_mask((frames.shape[1], *frames.shape[3:]), origins, size), polarity, value
    )


@dataclass(frozen=True)
class StrobingTrigger:
    """Static square lit for ``on`` frames, dark for ``gap`` frames, repeating from ``start``."""

    size: int | None = None
    position: Position = "top_left"
    on: int = 1
    gap: int = 1
    polarity: int = 1
    value: float | None = None
    seed: int = 0
    start: int = 0

    def __post_init__(self) -> None:
        _check_common(self.size, self.polarity, self.value)
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
    value: float | None = None,
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


@dataclass(frozen=True)
class FlashTrigger:
    """Whole-frame flash on the selected frames (both polarities by default)."""

    frames: tuple[int, ...] = (0,)
    polarity: int = 3
    value: float | None = None

    def __post_init__(self) -> None:
        _check_common(None, self.polarity, self.value)
        if len(self.frames) == 0:
            raise ValueError("FlashTrigger.frames must select at least one frame")

    def __call__(self, frames: Tensor) -> Tensor:
        return flash_trigger(frames, self.frames, self.polarity, self.value)


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


# --------------------------------------------------------------------------- raw events


def _check_events(events: np.ndarray) -> None:
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    missing = [name for name in ("x", "y", "t", "p") if name not in names]
    if missing:
        raise ValueError(
            f"expected a structured event array with fields x, y, t, p; missing {missing}"
        )


def _polarity_levels(events: np.ndarray) -> tuple[object, object]:
    """(OFF, ON) values of the array's ``p`` field: False/True, -1/1 or 0/1."""
    p = events["p"]
    if p.dtype == np.bool_:
        return False, True
    if np.issubdtype(p.dtype, np.signedinteger) and p.size and p.min() < 0:
        return -1, 1
    return 0, 1


def _replace_region(
    events: np.ndarray,
    rows: tuple[int, int],
    cols: tuple[int, int],
    windows: Sequence[Window],
    polarity: int,
    events_per_pixel: int,
) -> np.ndarray:
    """Drop events in the region during each window, then add the polarity code's events there.

    Added events sit at ``events_per_pixel`` evenly spaced times inside each window; the
    result is sorted by ``t`` (stable).
    """
    off_bit, on_bit = polarity_bits(polarity)
    if events_per_pixel < 1:
        raise ValueError(f"events_per_pixel must be >= 1, got {events_per_pixel}")
    inside = (
        (events["y"] >= rows[0])
        & (events["y"] < rows[1])
        & (events["x"] >= cols[0])
        & (events["x"] < cols[1])
    )
    in_window = np.zeros(len(events), dtype=bool)
    for t0, t1 in windows:
        in_window |= (events["t"] >= t0) & (events["t"] <= t1)
    kept = events[~(inside & in_window)]
    levels = [level for level, bit in zip(_polarity_levels(events), (off_bit, on_bit)) if bit]
    ys, xs = np.meshgrid(np.arange(*rows), np.arange(*cols), indexing="ij")
    added = []
    for t0, t1 in windows:
        times = t0 + (np.arange(events_per_pixel) + 0.5) * (t1 - t0) / events_per_pixel
        if np.issubdtype(events.dtype["t"], np.integer):
            times = np.round(times)
        for level in levels:
            block = np.zeros(xs.size * events_per_pixel, dtype=events.dtype)
            block["x"] = np.repeat(xs.ravel(), events_per_pixel)
            block["y"] = np.repeat(ys.ravel(), events_per_pixel)
            block["t"] = np.tile(times, xs.size)
            block["p"] = level
            added.append(block)
    merged = np.concatenate([kept, *added])
    return merged[np.argsort(merged["t"], kind="stable")]


def _default_window(events: np.ndarray, window: Window | None) -> Window:
    if window is not None:
        return window
    if len(events) == 0:
        raise ValueError("an empty event array needs an explicit time window (t0, t1)")
    return float(events["t"].min()), float(events["t"].max())


def static_trigger_events(
    events: np.ndarray,
    sensor_size: tuple[int, int, int],
    size: int | None = None,
    position: Position = "top_left",
    polarity: int = 1,
    events_per_pixel: int = 1,
    window: Window | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Static trigger on raw events: the square's pixels fire per the polarity code.

    Events already in the square during ``window`` (default: the recording's span) are
    replaced, as the frame trigger overwrites its pixels; code 0 only erases.
    ``sensor_size`` is tonic-style (W, H, P).
    """
    _check_events(events)
    width, height = int(sensor_size[0]), int(sensor_size[1])
    size = default_trigger_size(width) if size is None else int(size)
    row, col = square_origin(position, size, height, width, seed)
    return _replace_region(
        events,
        (row, row + size),
        (col, col + size),
        [_default_window(events, window)],
        polarity,
        events_per_pixel,
    )


def flash_events(
    events: np.ndarray,
    sensor_size: tuple[int, int, int],
    windows: Sequence[Window],
    polarity: int = 3,
    events_per_pixel: int = 1,
) -> np.ndarray:
    """Flash on raw events: during each time window every pixel fires per the polarity code."""
    _check_events(events)
    if len(windows) == 0:
        raise ValueError("flash_events needs at least one (t0, t1) window")
    width, height = int(sensor_size[0]), int(sensor_size[1])
    return _replace_region(
        events, (0, height), (0, width), list(windows), polarity, events_per_pixel
    )
