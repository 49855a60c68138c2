"""Readers for the standard on-disk formats of image datasets (CIFAR-10/100, GTSRB, MNIST).

Pure numpy (+ PIL for GTSRB's .ppm files): nothing is downloaded and torchvision is never
imported. Every reader returns ``{"train": (x, y), "test": (x, y), "classes": names}`` with
``x`` uint8 ``[N, C, H, W]`` and ``y`` int64 ``[N]``. Missing or damaged files raise
:class:`DatasetLayoutError`, whose message shows the layout that was expected. CIFAR lives in
`cifar`, GTSRB in `gtsrb`, the shared layouts and errors in `formats`; MNIST is here.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .cifar import _CIFAR10, _CIFAR100, _locate_cifar, read_cifar10, read_cifar100, verify_cifar
from .formats import (
    EXPECTED_LAYOUTS,
    DatasetArrays,
    DatasetFileError,
    DatasetLayoutError,
    StrPath,
    UnsafePickleError,
    existing_root,
    layout_error,
    list_names,
)
from .gtsrb import GTSRB_CLASSES, GTSRB_NUM_CLASSES, _locate_gtsrb, read_gtsrb, verify_gtsrb

__all__ = [
    "EXPECTED_LAYOUTS", "GTSRB_CLASSES", "GTSRB_NUM_CLASSES", "READERS", "DatasetArrays",
    "DatasetFileError", "DatasetLayoutError", "UnsafePickleError", "find_dataset",
    "read_cifar10", "read_cifar100", "read_gtsrb", "read_mnist",
]

# ---------------------------------------------------------------- MNIST

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_IMAGES = (2051, 3)  # magic number, number of dimensions
_IDX_LABELS = (2049, 1)


def _find_plain_or_gz(folder: Path, filename: str) -> Path | None:
    """Return ``folder/filename`` or its ``.gz`` twin, whichever exists (plain first)."""
    for candidate in (folder / filename, folder / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate_mnist(root: StrPath) -> dict[str, Path]:
    """Find the four IDX files in ``root``, ``root/raw`` or ``root/MNIST/raw``."""
    root_path = existing_root("mnist", root)
    best: tuple[Path, dict[str, Path]] = (root_path, {})
    for folder in (root_path, root_path / "raw", root_path / "MNIST" / "raw"):
        found = {k: p for k, f in _MNIST_FILES.items() if (p := _find_plain_or_gz(folder, f))}
        if len(found) == len(_MNIST_FILES):
            return found
        if len(found) > len(best[1]):
            best = (folder, found)
    folder, found = best
    missing = [f for k, f in _MNIST_FILES.items() if k not in found]
    raise layout_error("mnist", f"missing {list_names(missing)} (plain or .gz) in {folder}.")


def _read_bytes(path: Path) -> bytes:
    """Read a file, gunzipping it when its name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise layout_error("mnist", f"{path} is truncated or damaged ({error}).") from error


def _read_idx(path: Path, kind: tuple[int, int]) -> np.ndarray:
    """Parse an IDX file of unsigned bytes, checking its magic number and its length."""
    magic, ndim = kind
    raw = _read_bytes(path)
    header = 4 * (1 + ndim)
    found = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    if found is not None and found != magic:
        raise layout_error("mnist", f"{path} has magic number {found}, expected {magic}; "
                            "is it the right file?")
    if len(raw) < header:
        raise layout_error("mnist", f"{path} is truncated ({len(raw)} bytes, no full header).")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise layout_error("mnist", f"{path} holds {len(raw) - header} data bytes, its header "
                            f"promises {expected} (shape {shape}); it is truncated or damaged.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _read_mnist_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one split's images and labels and check that they match."""
    images = _read_idx(images_path, _IDX_IMAGES)
    labels = _read_idx(labels_path, _IDX_LABELS).astype(np.int64)
    if len(images) != len(labels):
        raise layout_error("mnist", f"{images_path} has {len(images)} images but "
                            f"{labels_path} has {len(labels)} labels.")
    return images[:, None], labels


def read_mnist(root: StrPath) -> DatasetArrays:
    """Read MNIST from its four IDX files (plain or .gz) in ``root`` or ``root/MNIST/raw``."""
    paths = _locate_mnist(root)
    train = _read_mnist_split(paths["train_images"], paths["train_labels"])
    test = _read_mnist_split(paths["test_images"], paths["test_labels"])
    return {"train": train, "test": test, "classes": [str(d) for d in range(10)]}


# ---------------------------------------------------------------- lookup

READERS: dict[str, Callable[..., DatasetArrays]] = {
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
    "gtsrb": read_gtsrb,
    "mnist": read_mnist,
}

_LOCATORS: dict[str, Callable[[StrPath], Any]] = {
    "cifar10": lambda root: _locate_cifar(_CIFAR10, root),
    "cifar100": lambda root: _locate_cifar(_CIFAR100, root),
    "gtsrb": _locate_gtsrb,
    "mnist": _locate_mnist,
}


_VERIFIERS: dict[str, Callable[[StrPath], Any]] = {
    "cifar10": lambda root: verify_cifar(_CIFAR10, root),
    "cifar100": lambda root: verify_cifar(_CIFAR100, root),
    "gtsrb": lambda root: verify_gtsrb(root),
    "mnist": lambda root: read_mnist(root),  # small: reading it all is the cheap check
}


def _key(name: str) -> str:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _LOCATORS:
        raise ValueError(f"unknown image dataset {name!r}; known: {', '.join(_LOCATORS)}")
    return key


def locate_dataset(name: str, root: StrPath | None) -> None:
    """Raise DatasetLayoutError unless dataset ``name``'s files are under ``root`` (names)."""
    _LOCATORS[_key(name)](root)


def verify_dataset(name: str, root: StrPath | None) -> None:
    """Like `locate_dataset`, and decode a sample of the files, so corrupt ones are named."""
    _VERIFIERS[_key(name)](root)


def find_dataset(name: str, root: StrPath | None) -> bool:
    """Say whether dataset ``name``'s files are under ``root``, checking names only (cheap)."""
    key = _key(name)
    try:
        _LOCATORS[key](root)
    except DatasetLayoutError:
        return False
    return True
