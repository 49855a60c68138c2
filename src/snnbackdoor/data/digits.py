"""The embedded `digits` dataset: scikit-learn's 1,797 handwritten digits at 16x16.

Needs no download (the 8x8 images ship with scikit-learn), so the demo and the tests run
anywhere. The split is fixed: 20% test, then 15% of the rest for validation, stratified.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .bundle import DatasetBundle, DatasetInfo, Split, stratified_split

SPLIT_SEED = 0  # the split never changes with the run's seed: results stay comparable


def digit_images(size: int = 16) -> tuple[torch.Tensor, np.ndarray]:
    """All 1,797 digits as float images [N, 1, size, size] in [0,1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp_(0.0, 1.0), digits.target.astype(np.int64)


def load_digits_bundle(size: int = 16, val_fraction: float = 0.15) -> DatasetBundle:
    """The fixed stratified train/val/test split of the embedded digits."""
    x, y = digit_images(size)
    rest, test = stratified_split(y, 0.2, SPLIT_SEED)
    train_index, val_index = stratified_split(y[rest], val_fraction, SPLIT_SEED + 1)
    train, val = rest[train_index], rest[val_index]
    split = lambda index: Split(x[index], torch.from_numpy(y[index]))  # noqa: E731
    mean = float(x[train].mean())
    std = float(x[train].std())
    info = DatasetInfo(
        name="digits",
        kind="image",
        shape=(1, size, size),
        num_classes=10,
        mean=(mean,),
        std=(std,),
        hflip=False,
    )
    return DatasetBundle(split(train), split(val), split(test), info)
