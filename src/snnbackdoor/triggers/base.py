"""What every trigger shares: input checks, square geometry, seeded draws, polarity codes,
and the registration of a trigger class under its name.

Nothing here is a trigger; image.py, events.py, flashy.py and raw_events.py import from here
(and never from each other's triggers), so the trigger modules form no cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import Tensor

from ..registry import get, register, unknown_name_message

Position = str | tuple[int, int]

_RANGE_TOLERANCE = 1e-6
NAMED_POSITIONS = ("top_left", "top_right", "bottom_left", "bottom_right", "middle", "random")

POLARITY_BITS: dict[int, tuple[int, int]] = {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1)}
"""Polarity code -> (OFF bit, ON bit)."""

IMAGES = ("image",)
EVENTS = ("events",)


def register_trigger(name: str, data: tuple[str, ...], options: type | None = None, **meta):
    """Class decorator: register a trigger dataclass as trigger ``name``.

    ``options`` defaults to the class itself (its fields are its options); ``data`` lists the
    dataset kinds (``DatasetInfo.kind``) the trigger applies to.
    """

    def decorate(cls: type) -> type:
        return register("trigger", name, options=options or cls, data=tuple(data), **meta)(cls)

    return decorate


# --------------------------------------------------------------------------- validation


def describe(x: object) -> str:
    """A short description of ``x`` for error messages (shape and dtype of a tensor)."""
    if isinstance(x, Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"object of type {type(x).__name__}"


def check_unit_range(x: Tensor, expected: str) -> None:
    """Raise ValueError unless every value of ``x`` lies in [0, 1] (a 1e-6 slack for rounding)."""
    if x.numel() == 0:
        return
    low, high = float(x.min()), float(x.max())
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"expected {expected} with values in [0, 1] (pixel space), got values in "
            f"[{low:.4g}, {high:.4g}]; pass images before normalisation"
        )


def check_images(x: Tensor) -> None:
    """Raise ValueError unless ``x`` is a float image batch [N, C, H, W] in [0, 1]."""
    expected = "a float image batch [N, C, H, W]"
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected {expected} in [0, 1], got {describe(x)}")
    check_unit_range(x, expected)


def check_images_or_frames(x: Tensor) -> None:
    """Raise ValueError unless ``x`` is images [N, C, H, W] or frames [N, T, P, H, W] in [0, 1]."""
    expected = "a float batch [N, C, H, W] (images) or [N, T, P, H, W] (frames)"
    if not isinstance(x, Tensor) or x.ndim not in (4, 5) or not x.is_floating_point():
        raise ValueError(f"expected {expected} in [0, 1], got {describe(x)}")
    check_unit_range(x, expected)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: the same draws on every device."""
    return torch.Generator().manual_seed(int(seed))


def check_frames(frames: Tensor) -> None:
    """Raise ValueError unless ``frames`` is a float batch [N, T, P=2, H, W] of counts >= 0."""
    expected = "float event frames [N, T, P=2, H, W] (OFF, ON counts)"
    if (
        not isinstance(frames, Tensor)
        or frames.ndim != 5
        or frames.shape[2] != 2
        or not frames.is_floating_point()
    ):
        raise ValueError(f"expected {expected}, got {describe(frames)}")
    if frames.numel() and float(frames.min()) < 0:
        raise ValueError(f"expected {expected} with non-negative counts, got a negative value")


# --------------------------------------------------------------------------- geometry


def square_origin(
    position: Position, size: int, height: int, width: int, seed: int = 0
) -> tuple[int, int]:
    """Top-left (row, col) of a ``size`` square at a named ``position`` or an explicit one.

    ``"random"`` is one fixed position drawn from ``seed`` (the same for every call).
    """
    if size < 1 or size > height or size > width:
        raise ValueError(f"trigger size {size} does not fit a {height}x{width} frame")
    if isinstance(position, str):
        if position not in NAMED_POSITIONS:
            raise ValueError(
                f"unknown position {position!r}; use one of {NAMED_POSITIONS} or a (row, col) pair"
            )
        if position == "random":
            gen = seeded_generator(seed)
            row = int(torch.randint(0, height - size + 1, (1,), generator=gen))
            col = int(torch.randint(0, width - size + 1, (1,), generator=gen))
            return row, col
        row = {"top": 0, "bottom": height - size}.get(position.split("_")[0], (height - size) // 2)
        col = {"left": 0, "right": width - size}.get(position.split("_")[-1], (width - size) // 2)
        return row, col
    row, col = (int(v) for v in position)
    if not (0 <= row <= height - size and 0 <= col <= width - size):
        raise ValueError(
            f"a {size}x{size} square at (row={row}, col={col}) does not fit a {height}x{width} "
            "frame"
        )
    return row, col


# --------------------------------------------------------------------------- event polarity


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


# --------------------------------------------------------------------------- construction


def option_names(name: str) -> tuple[str, ...]:
    """The options trigger ``name`` accepts (the init fields of its options dataclass)."""
    options = get("trigger", name).options
    return tuple(f.name for f in dataclasses.fields(options) if f.init)


def as_tuples(options: Mapping | None) -> dict:
    """Options with YAML lists turned into tuples (trigger dataclasses are frozen, hashable)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in (options or {}).items()}


def check_trigger_options(name: str, options: Mapping | None,
                          kinds: tuple[str, ...] | None = None) -> object:
    """Fail early (before any training) on a trigger outside ``kinds``, an unknown trigger or
    option, or a bad value; returns the options dataclass built from ``options``."""
    if kinds is not None and name not in kinds:
        raise ValueError(unknown_name_message("trigger kind", name, kinds))
    component = get("trigger", name)
    valid = option_names(name)
    unknown = sorted(set(options or {}) - set(valid))
    if unknown:
        raise ValueError(f"trigger kind {name!r} has no option {unknown}; valid: {list(valid)}")
    return component.options(**as_tuples(options))


def build_trigger(name: str, options: Mapping | None = None,
                  train_x: Tensor | None = None) -> object:
    """Trigger ``name`` built from its (YAML) options; YAML lists become tuples.

    A trigger registered with ``fit=True`` is fitted on ``train_x`` (the clean training
    inputs) through its ``fit`` classmethod; one registered with ``trained=True`` is made by
    its attack and cannot be built from options alone.
    """
    component = get("trigger", name)
    options = as_tuples(options)
    check_trigger_options(name, options)
    if component.meta.get("trained"):
        raise ValueError(f"the {name} trigger is trained with its attack: run the {name!r} "
                         "attack instead")
    if component.meta.get("fit"):
        if train_x is None:
            raise ValueError(f"the {name} trigger is fitted on the clean training inputs: "
                             "pass train_x")
        return component.obj.fit(train_x, **options)
    return component.obj(**options)
