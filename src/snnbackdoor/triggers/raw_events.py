"""Triggers on raw events: tonic-style structured arrays with fields ``x, y, t, p`` (read by
name). The same squares and flashes as the frame triggers, written as events, for data that
is poisoned before it is binned into frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import Position, default_trigger_size, polarity_bits, square_origin

Window = tuple[float, float]


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
