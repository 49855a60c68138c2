"""Blend (Chen et al. 2017): `(1 - alpha) x + alpha * pattern` on poisoned non-target samples,
relabelled to the target class (docs/methods.md 2); the pattern is seeded noise or a user's
image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.bundle import DatasetInfo
from ..registry import register
from ..triggers.image import BlendTrigger
from .base import AttackOutcome, AttackSetup
from .dirty_label import dirty_label_attack, options_record


@dataclass(frozen=True)
class BlendOptions:
    """alpha 0.2; `seed` of the default random pattern (None: the run's seed); `pattern`, a
    user image path (.npy in [0,1], or any image matplotlib reads) instead."""

    alpha: float = 0.2
    seed: int | None = None
    pattern: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"blend alpha must be in [0, 1], got {self.alpha}")
        if self.pattern is not None and not Path(self.pattern).is_file():
            raise ValueError(f"blend pattern file {self.pattern!r} does not exist")

    def trigger(self, info: DatasetInfo, seed: int = 0) -> BlendTrigger:
        """The blend these options describe; `seed` stands in for an unset pattern seed."""
        pattern = load_pattern(self.pattern, info.shape) if self.pattern else None
        return BlendTrigger(self.alpha, pattern, self.pattern_seed(seed))

    def pattern_seed(self, seed: int) -> int:
        return int(seed) if self.seed is None else int(self.seed)


def load_pattern(path: str | Path, shape: tuple[int, ...]) -> torch.Tensor:
    """A user's blend image (.npy in [0,1], or any image matplotlib reads) as [C, H, W]."""
    path = Path(path)
    if path.suffix == ".npy":
        import numpy as np

        array = np.load(path, allow_pickle=False)
    else:
        import matplotlib.image

        array = matplotlib.image.imread(path)
        if array.dtype.kind in "ui":
            array = array / 255.0
    pattern = torch.as_tensor(array, dtype=torch.float32)
    if pattern.ndim == 3 and pattern.shape[-1] in (1, 3, 4) and pattern.shape[0] not in (1, 3):
        pattern = pattern[..., :3].permute(2, 0, 1)  # H, W, C -> C, H, W (drop alpha)
    if pattern.ndim == 2:
        pattern = pattern.unsqueeze(0)
    if pattern.ndim != 3:
        raise ValueError(f"blend pattern {path} must be an image, got shape {tuple(pattern.shape)}")
    channels, height, width = shape
    if pattern.shape[0] != channels:
        pattern = pattern.mean(0, keepdim=True).expand(channels, -1, -1)
    if tuple(pattern.shape[-2:]) != (height, width):
        pattern = F.interpolate(pattern[None], size=(height, width), mode="bilinear",
                                align_corners=False)[0]
    return pattern.clamp(0, 1).contiguous()


@register("attack", "blend", options=BlendOptions)
def blend(setup: AttackSetup, options: BlendOptions | None = None) -> AttackOutcome:
    """Blend: a fixed pattern mixed into poisoned samples, relabelled to the target.

    `poison_ratio` of the training split, drawn by seed from non-target classes.
    """
    options = options or BlendOptions()
    record = {**options_record(options), "seed": options.pattern_seed(setup.seed)}
    return dirty_label_attack("blend", setup, options, record)
