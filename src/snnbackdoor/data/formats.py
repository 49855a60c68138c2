"""What the dataset readers share: the expected layouts, the errors, and folder checks.

Missing or damaged files raise :class:`DatasetLayoutError` (the message shows the layout
that was expected); a file that is there but unreadable raises :class:`DatasetFileError`
naming the file; a pickle asking for code raises :class:`UnsafePickleError`.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np

from ..errors import UserError

StrPath = str | os.PathLike


class DatasetArrays(TypedDict):
    """What every reader returns: uint8 ``[N, C, H, W]`` images, int64 labels, class names."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    classes: list[str] | None


EXPECTED_LAYOUTS: dict[str, str] = {
    "cifar10": """\
<root>/                          (or pass cifar-10-batches-py/ itself)
└── cifar-10-batches-py/         from cifar-10-python.tar.gz ("CIFAR-10 python version")
    ├── data_batch_1
    ├── data_batch_2
    ├── data_batch_3
    ├── data_batch_4
    ├── data_batch_5
    ├── test_batch
    └── batches.meta""",
    "cifar100": """\
<root>/                          (or pass cifar-100-python/ itself)
└── cifar-100-python/            from cifar-100-python.tar.gz ("CIFAR-100 python version")
    ├── train
    ├── test
    └── meta""",
    "gtsrb": """\
<root>/                          (or pass GTSRB/ itself)
├── GTSRB/
│   ├── Final_Training/Images/   from GTSRB_Final_Training_Images.zip
│   │   ├── 00000/               GT-00000.csv, 00000_00000.ppm, ...
│   │   ├── ...
│   │   └── 00042/               GT-00042.csv, ...
│   └── Final_Test/Images/       from GTSRB_Final_Test_Images.zip
│       ├── 00000.ppm, 00001.ppm, ...
│       └── GT-final_test.csv    from GTSRB_Final_Test_GT.zip (here, in GTSRB/ or in <root>/)
└── (cache: gtsrb_<size>px.npz is written in GTSRB/, or in cache_dir if given)""",
    "mnist": """\
<root>/                          (or <root>/MNIST/raw/, torchvision's layout)
├── train-images-idx3-ubyte      each file may also be gzipped (.gz)
├── train-labels-idx1-ubyte
├── t10k-images-idx3-ubyte
└── t10k-labels-idx1-ubyte""",
}

_DISPLAY_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "gtsrb": "GTSRB",
                  "mnist": "MNIST"}


class DatasetLayoutError(UserError, FileNotFoundError):
    """A dataset's files are missing, incomplete or damaged; the message shows the layout."""

    multiline = True  # the expected folder tree is part of the message


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """A pickle asked for something a dataset file never needs (a possible code-execution)."""


def layout_error(name: str, problem: str) -> DatasetLayoutError:
    """Build the error for dataset ``name``: what is wrong, the expected tree, how to fix."""
    message = (
        f"{_DISPLAY_NAMES[name]} data not usable: {problem}\n"
        f"Expected layout:\n{EXPECTED_LAYOUTS[name]}\n"
        "Pass the folder that holds it as dataset.root (CLI: --set dataset.root=PATH)."
    )
    return DatasetLayoutError(message)


def list_names(names: Sequence[str], limit: int = 6) -> str:
    """Join names for a message, shortening long lists."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"


def existing_root(name: str, root: StrPath | None) -> Path:
    """Return ``root`` as a Path, or raise when it is unset or is not a folder."""
    if root is None or str(root) == "":
        raise layout_error(name, "no dataset root was given.")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise layout_error(name, f"root folder {path} does not exist.")
    return path


def pick_folder(root: Path, subdir: str, marker: str) -> Path:
    """Return ``root/subdir`` if it exists, else ``root`` itself when it looks like ``subdir``."""
    nested = root / subdir
    if nested.is_dir():
        return nested
    if root.name == subdir or (root / marker).exists():
        return root
    return nested


def require_files(name: str, folder: Path, filenames: Sequence[str]) -> None:
    """Raise naming every file of ``filenames`` that is missing from ``folder``."""
    missing = [f for f in filenames if not (folder / f).is_file()]
    if missing:
        raise layout_error(name, f"missing {list_names(missing)} in {folder}.")




class DatasetFileError(UserError, ValueError):
    """One dataset file is damaged: truncated, empty, or a folder where a file should be."""
