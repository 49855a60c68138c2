"""Per-batch image augmentation on the device: random crop with zero padding, horizontal flip.

The whole batch is augmented by one padded copy and one index gather, with the random
offsets and flips drawn as tensors: no per-sample Python, no trip to the CPU, so it runs
where the data lives (the GPU on a GPU box). Written tonic-style: a frozen dataclass whose
`__call__` delegates to the pure function `random_crop_flip`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .bundle import DatasetInfo


def random_crop_flip(
    x: torch.Tensor,
    padding: int = 4,
    hflip: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Randomly crop every image of `x` [N, C, H, W] from its zero-padded copy; maybe flip.

    Each sample gets its own offsets (dy, dx) in [0, 2 * padding], i.e. its content moves by
    (padding - dy, padding - dx) pixels with zeros filling in, and (if `hflip`) a fair coin
    decides whether it is mirrored left-right. Any dtype (uint8 or float) and device; the
    output has the input's dtype, shape and memory format. `generator`, if given, must live
    on `x`'s device.
    """
    if x.ndim != 4:
        raise ValueError(f"random_crop_flip expects images [N, C, H, W], got {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, _, h, w = x.shape
    if n == 0 or (padding == 0 and not hflip):
        return x
    device = x.device
    offsets = torch.randint(0, 2 * padding + 1, (2, n), device=device, generator=generator)
    rows = offsets[0, :, None] + torch.arange(h, device=device)  # [N, H] in padded coords
    cols = offsets[1, :, None] + torch.arange(w, device=device)  # [N, W]
    if hflip:
        flip = torch.rand(n, device=device, generator=generator) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    padded = F.pad(x, (padding,) * 4) if padding else x
    # One gather over the flattened padded plane: source pixel of every output pixel.
    source = (rows[:, :, None] * padded.shape[-1] + cols[:, None, :]).view(n, 1, h * w)
    flat = padded.flatten(2)
    out = flat.gather(2, source.expand(n, x.shape[1], h * w)).view(n, x.shape[1], h, w)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out


@dataclass(frozen=True)
class RandomCropFlip:
    """Random crop with zero padding (and a horizontal flip where it keeps the label)."""

    padding: int = 4
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise ValueError(f"padding must be >= 0, got {self.padding}")

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return random_crop_flip(x, self.padding, self.hflip, generator)


def crop_padding_for(size: int) -> int:
    """The usual 4 pixels at 32x32, scaled to the image side (2 at 16x16, 4 at 28x28)."""
    return max(1, int(size / 8 + 0.5))


def dataset_augmentation(info: DatasetInfo, enabled: bool = True) -> RandomCropFlip | None:
    """The standard training augmentation of a dataset; None where there is none (events)
    or where a recipe turns it off (`enabled=False`, i.e. `train.augment: false`).

    Images: random crop with `crop_padding_for(side)` pixels of zero padding; horizontal
    flip only where `info.hflip` says a mirrored image keeps its label (CIFAR yes; digits,
    MNIST and traffic signs no).
    """
    if not enabled or info.kind != "image":
        return None
    return RandomCropFlip(padding=crop_padding_for(info.shape[-1]), hflip=info.hflip)
