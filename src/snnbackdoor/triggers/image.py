"""Image triggers: pure functions on pixel-space images [N, C, H, W] in [0, 1].

Each trigger is a frozen dataclass (its settings) whose ``__call__`` delegates to a pure
module-level function, in the style of tonic transforms. Triggers never change labels and
never modify their input in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import (
    EVENTS,
    IMAGES,
    Position,
    check_frames,
    check_images,
    check_images_or_frames,
    check_unit_range,
    register_trigger,
    seeded_generator,
    square_origin,
)

# --------------------------------------------------------------------------- power (BadSNN T_p)


def power_trigger(x: Tensor, q: float) -> Tensor:
    """BadSNN T_p: element-wise ``x ** q`` in pixel space."""
    check_images(x)
    if q <= 0:
        raise ValueError(f"power q must be > 0, got {q}")
    return x.clamp(0, 1) ** q


@register_trigger("power", IMAGES)
@dataclass(frozen=True)
class PowerTrigger:
    """BadSNN power trigger ``x -> x ** q`` (q > 0; q = 1 is the identity)."""

    q: float = 2.0

    def __post_init__(self) -> None:
        if not self.q > 0:
            raise ValueError(f"PowerTrigger.q must be > 0, got {self.q}")

    def __call__(self, x: Tensor) -> Tensor:
        return power_trigger(x, self.q)


# --------------------------------------------------------------------------- noise (BadSNN T_s)


def noise_trigger(x: Tensor, beta: float = 0.03, seed: int = 0, counts: bool = False) -> Tensor:
    """BadSNN T_s: ``clip(x + U(-beta, beta), 0, 1)``, i.i.d. per element, seeded.

    Works on images [N, C, H, W] and frames [N, T, P, H, W] normalised to [0, 1]. With
    ``counts`` the frames hold raw event counts (SpikingJelly's frames, which the N-MNIST-Net
    code lineage feeds the model unscaled); Eq. 7's clip then caps every count at 1. The
    noise is drawn on the CPU from ``seed``, so a given seed and shape give the same output
    anywhere.
    """
    if counts:
        check_frames(x)
    else:
        check_images_or_frames(x)
    if beta < 0:
        raise ValueError(f"noise amplitude beta must be >= 0, got {beta}")
    noise = torch.rand(x.shape, generator=seeded_generator(seed), dtype=torch.float64)
    noise = ((noise * 2 - 1) * beta).to(device=x.device, dtype=x.dtype)
    return (x + noise).clamp(0, 1)


@register_trigger("noise", IMAGES + EVENTS)
@dataclass(frozen=True)
class NoiseTrigger:
    """BadSNN neuromorphic trigger T_s: bounded uniform noise, reproducible from ``seed``.

    ``counts``: the input frames are raw event counts (see `noise_trigger`).
    """

    beta: float = 0.03
    seed: int = 0
    counts: bool = False

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise ValueError(f"NoiseTrigger.beta must be >= 0, got {self.beta}")

    def __call__(self, x: Tensor) -> Tensor:
        return noise_trigger(x, self.beta, self.seed, self.counts)


# --------------------------------------------------------------------------- BadNet


def badnet_trigger(
    x: Tensor, size: int = 3, position: Position = "bottom_right", value: float = 1.0
) -> Tensor:
    """BadNet: stamp a ``size`` x ``size`` square of ``value`` in every channel at ``position``."""
    check_images(x)
    if not 0 <= value <= 1:
        raise ValueError(f"stamp value must be in [0, 1], got {value}")
    row, col = square_origin(position, size, x.shape[-2], x.shape[-1])
    out = x.clone()
    out[..., row : row + size, col : col + size] = value
    return out


@register_trigger("badnet", IMAGES)
@dataclass(frozen=True)
class BadNetTrigger:
    """BadNet white-square stamp (3x3, bottom-right by default)."""

    size: int = 3
    position: Position = "bottom_right"
    value: float = 1.0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"BadNetTrigger.size must be >= 1, got {self.size}")
        if not 0 <= self.value <= 1:
            raise ValueError(f"BadNetTrigger.value must be in [0, 1], got {self.value}")

    def __call__(self, x: Tensor) -> Tensor:
        return badnet_trigger(x, self.size, self.position, self.value)


# --------------------------------------------------------------------------- Blend


def blend_pattern(shape: Sequence[int], seed: int = 0) -> Tensor:
    """The default Blend pattern: a uniform random image of ``shape`` (C, H, W) drawn from seed."""
    return torch.rand(tuple(shape), generator=seeded_generator(seed))


def blend_trigger(
    x: Tensor, alpha: float = 0.2, pattern: Tensor | None = None, seed: int = 0
) -> Tensor:
    """Blend: ``(1 - alpha) * x + alpha * pattern``; the pattern broadcasts over the batch."""
    check_images(x)
    if not 0 <= alpha <= 1:
        raise ValueError(f"blend alpha must be in [0, 1], got {alpha}")
    if pattern is None:
        pattern = blend_pattern(x.shape[1:], seed)
    else:
        if pattern.ndim == 2:
            pattern = pattern.unsqueeze(0)
        if pattern.ndim != 3 or pattern.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"blend pattern must be [C, H, W] or [H, W] matching the images "
                f"{tuple(x.shape[1:])}, got {tuple(pattern.shape)}"
            )
        check_unit_range(pattern, "a blend pattern")
    pattern = pattern.to(device=x.device, dtype=x.dtype)
    return (1 - alpha) * x + alpha * pattern


@register_trigger("blend", IMAGES)
@dataclass(frozen=True, eq=False)
class BlendTrigger:
    """Blend attack: mix a fixed pattern (seeded random by default) into the image."""

    alpha: float = 0.2
    pattern: Tensor | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"BlendTrigger.alpha must be in [0, 1], got {self.alpha}")

    def __call__(self, x: Tensor) -> Tensor:
        return blend_trigger(x, self.alpha, self.pattern, self.seed)


# --------------------------------------------------------------------------- WaNet


def _identity_grid(height: int, width: int) -> Tensor:
    rows = torch.linspace(-1, 1, height, dtype=torch.float64)
    cols = torch.linspace(-1, 1, width, dtype=torch.float64)
    grid_row, grid_col = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack((grid_col, grid_row), dim=-1).unsqueeze(0)  # [1, H, W, 2], (x, y)


def wanet_grid(
    height: int, width: int, k: int = 4, s: float = 0.5, grid_rescale: float = 1.0, seed: int = 0
) -> Tensor:
    """WaNet warping grid [1, H, W, 2] for ``F.grid_sample`` (align_corners=True).

    ``ins = U(-1, 1)^(2, k, k) / mean|ins|``, bicubically upsampled to H x W, then
    ``clamp((identity + s * noise_grid / H) * grid_rescale, -1, 1)``.
    """
    if k < 2:
        raise ValueError(f"WaNet k must be >= 2, got {k}")
    ins = torch.rand(1, 2, k, k, generator=seeded_generator(seed), dtype=torch.float64) * 2 - 1
    ins = ins / ins.abs().mean()
    noise_grid = F.interpolate(ins, size=(height, width), mode="bicubic", align_corners=True)
    noise_grid = noise_grid.permute(0, 2, 3, 1)
    grid = (_identity_grid(height, width) + s * noise_grid / height) * grid_rescale
    return grid.clamp(-1, 1).float()


def _warp(x: Tensor, grid: Tensor) -> Tensor:
    grid = grid.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def wanet_trigger(
    x: Tensor, k: int = 4, s: float = 0.5, grid_rescale: float = 1.0, seed: int = 0
) -> Tensor:
    """WaNet: warp every image with the fixed seeded grid (a small, smooth displacement)."""
    check_images(x)
    grid = wanet_grid(x.shape[-2], x.shape[-1], k, s, grid_rescale, seed)
    return _warp(x, grid).clamp(0, 1)


def wanet_cross(
    x: Tensor,
    k: int = 4,
    s: float = 0.5,
    grid_rescale: float = 1.0,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WaNet noise-mode cross samples: the grid plus ``U(-1, 1) / H`` per pixel, clamped.

    These keep their true labels during poisoning; ``generator`` (CPU) draws the offsets.
    """
    check_images(x)
    n, _, height, width = x.shape
    grid = wanet_grid(height, width, k, s, grid_rescale, seed)
    offsets = torch.rand(n, height, width, 2, generator=generator) * 2 - 1
    return _warp(x, (grid + offsets / height).clamp(-1, 1)).clamp(0, 1)


@register_trigger("wanet", IMAGES)
@dataclass(frozen=True)
class WaNetTrigger:
    """WaNet warping trigger (k=4, s=0.5); ``cross`` makes the noise-mode cross samples."""

    k: int = 4
    s: float = 0.5
    grid_rescale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"WaNetTrigger.k must be >= 2, got {self.k}")

    def __call__(self, x: Tensor) -> Tensor:
        return wanet_trigger(x, self.k, self.s, self.grid_rescale, self.seed)

    def grid(self, height: int, width: int) -> Tensor:
        """The warping grid [1, H, W, 2] this trigger applies."""
        return wanet_grid(height, width, self.k, self.s, self.grid_rescale, self.seed)

    def cross(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Noise-mode cross samples of ``x`` (random per-pixel grid offsets)."""
        return wanet_cross(x, self.k, self.s, self.grid_rescale, self.seed, generator)


# --------------------------------------------------------------------------- clean-label stamp


def checkerboard(size: int = 3) -> Tensor:
    """A ``size`` x ``size`` 0/1 checkerboard with white corners (symmetric under flips)."""
    idx = torch.arange(size)
    return ((idx[:, None] + idx[None, :]) % 2 == 0).float()


def clean_label_stamp(x: Tensor, size: int = 3) -> Tensor:
    """Clean-label trigger: a checkerboard in all four corners of every channel."""
    check_images(x)
    height, width = x.shape[-2:]
    if 2 * size > min(height, width):
        raise ValueError(f"four {size}x{size} corner stamps do not fit a {height}x{width} image")
    board = checkerboard(size).to(device=x.device, dtype=x.dtype)
    out = x.clone()
    for row, col in ((0, 0), (0, width - size), (height - size, 0), (height - size, width - size)):
        out[..., row : row + size, col : col + size] = board
    return out


@register_trigger("clean_label", IMAGES)
@dataclass(frozen=True)
class CleanLabelStamp:
    """The clean-label attack's stamp (the PGD step belongs to the attack, not here)."""

    size: int = 3

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"CleanLabelStamp.size must be >= 1, got {self.size}")

    def __call__(self, x: Tensor) -> Tensor:
        return clean_label_stamp(x, self.size)
