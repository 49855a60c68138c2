"""Dataset registry: name -> loader, with what each needs on disk.

`load_dataset(name, root, **options)` is the one entry point; a dataset that needs files
fails before any work with a message naming the expected layout.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..models.registry import unknown_name_message
from .bundle import DatasetBundle
from .digits import load_digits_bundle


@dataclass(frozen=True)
class DatasetEntry:
    """A loader plus what `snnbackdoor datasets` shows about it."""

    loader: Callable[..., DatasetBundle]
    description: str
    needs_root: bool = False
    layout: str = ""
    find: Callable[[str], bool] | None = None
    options: tuple[str, ...] = ()  # keyword options the loader accepts besides root


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, entry: DatasetEntry) -> None:
    DATASETS[name] = entry


register_dataset(
    "digits",
    DatasetEntry(
        loader=lambda root=None, **options: load_digits_bundle(**options),
        options=("size", "val_fraction"),
        description="embedded: scikit-learn's 1,797 digits at 16x16 (no files needed)",
    ),
)


def get_entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise KeyError(unknown_name_message("dataset", name, DATASETS))
    return DATASETS[name]


def check_root(name: str, root: str | None) -> None:
    """Fail early, before any training, when a dataset's files cannot be where it looks."""
    entry = get_entry(name)
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


def load_dataset(name: str, root: str | None = None, **options) -> DatasetBundle:
    """Load a registered dataset as a DatasetBundle (train / val / test / info)."""
    entry = get_entry(name)
    unknown = set(options) - set(entry.options)
    if unknown:
        raise KeyError(
            f"dataset {name!r} has no option {sorted(unknown)}; it accepts {list(entry.options)}"
        )
    check_root(name, root)
    return entry.loader(root=root, **options)
