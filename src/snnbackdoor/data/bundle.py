"""DatasetBundle: the one shape every dataset takes inside the toolkit.

A split holds whole tensors (uint8 images, float images in [0,1] or float event frames) so
that small datasets live on the device and batches are index gathers, not per-sample Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a trigger need to know about a dataset."""

    name: str
    kind: str  # "image" or "events"
    shape: tuple[int, ...]  # one sample: (C, H, W) for images, (T, P, H, W) for frames
    num_classes: int
    mean: tuple[float, ...] | None = None  # per channel, pixel space [0,1]; None for events
    std: tuple[float, ...] | None = None
    sensor_size: tuple[int, int, int] | None = None  # (W, H, P) for event data, tonic style
    hflip: bool = False  # whether horizontal flips keep the label (augmentation)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("image", "events"):
            raise ValueError(f"DatasetInfo.kind must be 'image' or 'events', got {self.kind!r}")


@dataclass
class Split:
    """Samples and labels of one split. `x` is uint8 (read as x/255) or float."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"split has {len(self.x)} samples but {len(self.y)} labels")
        self.y = torch.as_tensor(self.y, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    def floats(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Samples as float32 (uint8 is scaled to [0,1]); all of them, or those at `index`."""
        x = self.x if index is None else self.x[index]
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def subset(self, index: torch.Tensor | np.ndarray) -> Split:
        index = torch.as_tensor(index, dtype=torch.long, device=self.y.device)
        return Split(self.x[index], self.y[index])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (float x, y) batches by index gathers on the split's own device."""
        for _, x, y in self.indexed_batches(batch_size, shuffle, generator, drop_last):
            yield x, y

    def indexed_batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Like `batches`, with each batch's indices into the split first."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator).to(self.y.device)
        else:
            order = torch.arange(n, device=self.y.device)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            index = order[start : start + batch_size]
            yield index, self.floats(index), self.y[index]


@dataclass
class DatasetBundle:
    """train / val / test splits plus `info`. `val` is carved from train, never from test."""

    train: Split
    val: Split
    test: Split
    info: DatasetInfo

    def to(self, device: torch.device | str) -> DatasetBundle:
        return replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


def stratified_split(
    y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held_out) with `fraction` of every class held out."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        held.append(members[: max(1, int(round(fraction * len(members))))])
    held_out = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(len(y)), held_out)
    return rest, held_out
