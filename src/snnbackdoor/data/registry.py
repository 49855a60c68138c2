"""Dataset registry: name -> loader, with what each needs on disk.

`load_dataset(name, root, **options)` is the one entry point; a dataset that needs files
fails before any work with a message naming the expected layout.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from ..registry import get, register
from . import readers
from .bundle import DatasetBundle, DatasetInfo, Split, stratified_split
from .digits import load_digits_bundle
from .formats import DatasetFileError, DatasetLayoutError, UnsafePickleError


@dataclass(frozen=True)
class DatasetEntry:
    """A loader plus what `snnbackdoor datasets` shows about it."""

    loader: Callable[..., DatasetBundle]
    description: str
    needs_root: bool = False
    layout: str = ""
    find: Callable[[str], bool] | None = None
    options: tuple[str, ...] = ()  # keyword options the loader accepts besides root
    num_classes: int | None = None  # known before loading, so a target class is checked early
    locate: Callable[[str], object] | None = None  # raises DatasetLayoutError: names only
    verify: Callable[[str], None] | None = None  # also decodes a few files (cheap)


def register_dataset(name: str, entry: DatasetEntry) -> None:
    """Register a dataset: its loader and what `snnbackdoor datasets` shows about it."""
    register("dataset", name, description=entry.description, entry=entry)(entry.loader)


register_dataset(
    "digits",
    DatasetEntry(
        loader=lambda root=None, **options: load_digits_bundle(**options),
        options=("size", "val_fraction"),
        num_classes=10,
        description="embedded: scikit-learn's 1,797 digits at 16x16 (no files needed)",
    ),
)


# ---------------------------------------------------------------- standard image datasets

IMAGE_SPLIT_SEED = 0  # the validation carve never changes with the run's seed
DEFAULT_VAL_FRACTION = 0.1


def channel_mean_std(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] in [0,1], exact, low memory
    (from a 256-bin histogram per channel, not a float copy of the data)."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].ravel(), minlength=256).astype(np.float64)
        total = counts.sum()
        mean = float((counts * levels).sum() / total)
        var = float((counts * (levels - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(max(var, 1e-12) ** 0.5)
    return tuple(means), tuple(stds)


def image_bundle(
    name: str,
    arrays: readers.DatasetArrays,
    hflip: bool,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    extra: dict | None = None,
) -> DatasetBundle:
    """Turn a reader's arrays into a bundle: uint8 splits, stratified val carved from train,
    per-channel mean/std of the (remaining) train split."""
    x_all, y_all = arrays["train"]
    train_index, val_index = stratified_split(y_all, val_fraction, IMAGE_SPLIT_SEED)
    x_train = x_all[train_index]
    mean, std = channel_mean_std(x_train)
    classes = arrays["classes"]
    num_classes = len(classes) if classes else int(y_all.max()) + 1

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))

    x_test, y_test = arrays["test"]
    info = DatasetInfo(
        name=name,
        kind="image",
        shape=tuple(int(d) for d in x_all.shape[1:]),
        num_classes=num_classes,
        mean=mean,
        std=std,
        hflip=hflip,
        extra={"classes": list(classes) if classes else None, "val_fraction": val_fraction,
               **(extra or {})},
    )
    return DatasetBundle(
        split(x_train, y_all[train_index]),
        split(x_all[val_index], y_all[val_index]),
        split(x_test, y_test),
        info,
    )


def _load_cifar10(root=None, val_fraction: float = DEFAULT_VAL_FRACTION) -> DatasetBundle:
    return image_bundle("cifar10", readers.read_cifar10(root), True, val_fraction)


def _load_cifar100(root=None, val_fraction: float = DEFAULT_VAL_FRACTION) -> DatasetBundle:
    return image_bundle("cifar100", readers.read_cifar100(root), True, val_fraction)


def _load_gtsrb(
    root=None, val_fraction: float = DEFAULT_VAL_FRACTION, size: int = 32, cache_dir=None
) -> DatasetBundle:
    arrays = readers.read_gtsrb(root, size=size, cache_dir=cache_dir)
    return image_bundle("gtsrb", arrays, False, val_fraction)


def _load_mnist(root=None, val_fraction: float = DEFAULT_VAL_FRACTION) -> DatasetBundle:
    return image_bundle("mnist", readers.read_mnist(root), False, val_fraction)


_IMAGE_CLASSES = {"cifar10": 10, "cifar100": 100, "gtsrb": readers.GTSRB_NUM_CLASSES,
                  "mnist": 10}
_IMAGE_DATASETS = {
    "cifar10": (_load_cifar10, ("val_fraction",),
                "CIFAR-10: 60,000 32x32 colour images, 10 classes (python pickle batches)"),
    "cifar100": (_load_cifar100, ("val_fraction",),
                 "CIFAR-100: 60,000 32x32 colour images, 100 fine classes (python pickles)"),
    "gtsrb": (_load_gtsrb, ("val_fraction", "size", "cache_dir"),
              "GTSRB: 51,839 traffic signs, 43 classes, ROI-cropped to size px (.ppm + CSV)"),
    "mnist": (_load_mnist, ("val_fraction",),
              "MNIST: 70,000 28x28 handwritten digits, 10 classes (IDX files, plain or .gz)"),
}
for _name, (_loader, _options, _description) in _IMAGE_DATASETS.items():
    register_dataset(
        _name,
        DatasetEntry(
            loader=_loader,
            description=_description,
            needs_root=True,
            layout=readers.EXPECTED_LAYOUTS[_name],
            find=partial(readers.find_dataset, _name),
            options=_options,
            num_classes=_IMAGE_CLASSES[_name],
            locate=partial(readers.locate_dataset, _name),
            verify=partial(readers.verify_dataset, _name),
        ),
    )


def get_entry(name: str) -> DatasetEntry:
    return get("dataset", name).meta["entry"]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_fraction(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < 1


MAX_FRAMES = 1024  # frames per event sample (memory grows with T)
MAX_IMAGE_SIZE = 512
# what every loader option must be: (test, what it must be); options the loaders share
OPTION_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "val_fraction": (_is_fraction, "a fraction strictly between 0 and 1"),
    "T": (lambda v: _is_int(v) and 1 <= v <= MAX_FRAMES, f"an integer in 1..{MAX_FRAMES}"),
    "split_by": (lambda v: v in ("number", "time"), "'number' or 'time'"),
    "seed": (lambda v: _is_int(v) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
    "size": (lambda v: _is_int(v) and 1 <= v <= MAX_IMAGE_SIZE,
             f"a number of pixels in 1..{MAX_IMAGE_SIZE}"),
    "limit": (lambda v: v is None or _is_int(v) and 1 <= v <= 10**7,
              "null or a positive number of samples"),
    "cache_dir": (lambda v: v is None or isinstance(v, str) and v.strip() != "",
                  "null or a folder path"),
}


def check_options(name: str, options: dict) -> None:
    """Refuse option names the loader of `name` does not take and values out of range."""
    entry = get_entry(name)
    unknown = sorted(map(str, set(options) - set(entry.options)))
    if unknown:
        raise KeyError(
            f"dataset {name!r} has no option {unknown}; it accepts {list(entry.options)}"
        )
    for key, value in options.items():
        test, must = OPTION_CHECKS.get(key, (lambda v: True, ""))
        if not test(value):
            raise ValueError(f"dataset.options.{key} must be {must}, got {value!r}")


def check_root(name: str, root: str | None) -> None:
    """Fail early, before any training, when a dataset's files cannot be where it looks."""
    entry = get_entry(name)
    if root is not None and (not isinstance(root, str) or not root.strip()):
        raise FileNotFoundError(
            f"dataset.root is empty; remove it or pass the folder that holds {name} with "
            "--set dataset.root=PATH"
        )
    if root and not os.path.isdir(root):
        raise FileNotFoundError(
            f"dataset root {root!r} does not exist; pass the folder that holds {name} with "
            f"--set dataset.root=PATH (see `snnbackdoor datasets`)"
        )
    if entry.needs_root and not root:
        raise FileNotFoundError(
            f"dataset {name!r} is read from disk: pass its folder with "
            f"--set dataset.root=PATH (see `snnbackdoor datasets` for the expected layout)"
        )


def check_files(name: str, root: str | None) -> None:
    """The root holds `name`'s folders and files, and a few of them decode (well under a
    second); a DatasetLayoutError shows the expected layout, a DatasetFileError names a
    damaged file, before any run folder is made."""
    check_root(name, root)
    entry = get_entry(name)
    check = entry.verify or entry.locate
    if entry.needs_root and check is not None:
        check(root)


def dataset_status(entry: DatasetEntry, root: str | None) -> tuple[str, str]:
    """(status, problem) of a dataset under `root` for `snnbackdoor datasets`: embedded,
    found, not found, or found but damaged (a few files are decoded to tell)."""
    if not entry.needs_root:
        return "embedded", ""
    if not root or entry.locate is None:
        return "needs --set dataset.root=PATH", ""
    try:
        entry.locate(root)
    except DatasetLayoutError:
        return f"not found under {root}", ""
    if entry.verify is None:
        return "found", ""
    try:
        entry.verify(root)
    except (OSError, DatasetFileError, UnsafePickleError) as err:  # layout errors are OSErrors
        return "found, but files are damaged", str(err)
    return "found", ""


def load_dataset(name: str, root: str | None = None, **options) -> DatasetBundle:
    """Load a registered dataset as a DatasetBundle (train / val / test / info)."""
    entry = get_entry(name)
    check_options(name, options)
    check_root(name, root)
    return entry.loader(root=root, **options)
