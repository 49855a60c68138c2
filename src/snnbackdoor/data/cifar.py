"""CIFAR-10 / CIFAR-100 from their python-version pickles, unpickled with a loader that only
rebuilds numpy arrays, lists, dicts and strings: a batch carrying code is refused, never run.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .formats import (
    DatasetArrays,
    StrPath,
    UnsafePickleError,
    existing_root,
    layout_error,
    pick_folder,
    require_files,
)

# ---------------------------------------------------------------- restricted unpickling


def _numpy_reconstruct() -> Callable[..., Any]:
    """numpy's array-unpickling helper, wherever this numpy version keeps it."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy has no multiarray._reconstruct")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Python 3 protocol-2 pickles store bytes as ``_codecs.encode(text, 'latin1')``."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays, lists, dicts and strings; nothing callable."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only the globals that dataset pickles need; refuse everything else."""
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: dataset pickles only contain numpy arrays"
            )
        return factory()


def _load_pickle(name: str, path: Path) -> dict:
    """Unpickle a dataset batch safely; damaged files raise DatasetLayoutError."""
    try:
        with path.open("rb") as handle:
            obj = _ArrayUnpickler(handle, encoding="bytes").load()
    except UnsafePickleError as error:
        raise UnsafePickleError(f"{path}: {error}; the file was not loaded (it may be "
                                "malicious): get the dataset from its official source") from None
    except Exception as error:  # truncated or corrupt: any failure of the unpickler
        raise layout_error(name, f"{path} is truncated or not a pickle ({error!r}).") from error
    if not isinstance(obj, dict):
        raise layout_error(name, f"{path} does not hold a dict (got {type(obj).__name__}).")
    return obj


def _field(name: str, record: dict, key: str, path: Path) -> Any:
    """Look up ``key`` in an unpickled dict whose keys may be bytes (Python 2 files) or str."""
    for candidate in (key.encode(), key):
        if candidate in record:
            return record[candidate]
    raise layout_error(name, f"{path} has no '{key}' entry; is it the python version?")


def _as_str(value: bytes | str) -> str:
    """Decode a class name stored as bytes by Python 2."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100


@dataclass(frozen=True)
class _CifarSpec:
    """Where a CIFAR variant keeps its batches, labels and class names."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)


_CIFAR10 = _CifarSpec("cifar10", "cifar-10-batches-py",
                      tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                      "batches.meta", "labels", "label_names", 10)
_CIFAR100 = _CifarSpec("cifar100", "cifar-100-python", ("train",), "test", "meta",
                       "fine_labels", "fine_label_names", 100)


def _locate_cifar(spec: _CifarSpec, root: StrPath) -> Path:
    """Find the CIFAR batch folder under ``root`` and check that every file is there."""
    folder = pick_folder(existing_root(spec.name, root), spec.folder, spec.test_file)
    if not folder.is_dir():
        raise layout_error(spec.name, f"no {spec.folder}/ folder in {folder.parent}.")
    require_files(spec.name, folder, spec.files)
    return folder


def _read_cifar_batch(spec: _CifarSpec, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch: uint8 rows of 3072 = R, G, B planes of 32x32, row-major."""
    record = _load_pickle(spec.name, path)
    data = np.asarray(_field(spec.name, record, "data", path))
    labels = np.asarray(_field(spec.name, record, spec.label_key, path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise layout_error(spec.name, f"{path}: data is {data.dtype} {data.shape}, "
                            "expected uint8 [N, 3072].")
    if labels.shape != (data.shape[0],):
        raise layout_error(spec.name, f"{path}: {labels.size} labels for {len(data)} images.")
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise layout_error(spec.name, f"{path}: labels outside 0..{spec.num_classes - 1}.")
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar(spec: _CifarSpec, root: StrPath) -> DatasetArrays:
    """Read a whole CIFAR variant from its python-version pickles."""
    folder = _locate_cifar(spec, root)
    parts = [_read_cifar_batch(spec, folder / f) for f in spec.train_files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = _read_cifar_batch(spec, folder / spec.test_file)
    meta_path = folder / spec.meta_file
    names = _field(spec.name, _load_pickle(spec.name, meta_path), spec.names_key, meta_path)
    classes = [_as_str(n) for n in names]
    if len(classes) != spec.num_classes:
        raise layout_error(spec.name, f"{meta_path} lists {len(classes)} class names, "
                            f"expected {spec.num_classes}.")
    return {"train": train, "test": test, "classes": classes}


def read_cifar10(root: StrPath) -> DatasetArrays:
    """Read CIFAR-10 from ``cifar-10-batches-py`` (under ``root`` or ``root`` itself)."""
    return _read_cifar(_CIFAR10, root)


def read_cifar100(root: StrPath) -> DatasetArrays:
    """Read CIFAR-100 (fine labels) from ``cifar-100-python`` (under ``root`` or ``root``)."""
    return _read_cifar(_CIFAR100, root)


def verify_cifar(spec: _CifarSpec, root: StrPath) -> None:
    """Decode the meta file and the test batch, and check every training batch starts as a
    pickle does (cheap: one batch of six is read), so a damaged copy is reported early."""
    folder = _locate_cifar(spec, root)
    _read_cifar_batch(spec, folder / spec.test_file)
    _field(spec.name, _load_pickle(spec.name, folder / spec.meta_file), spec.names_key,
           folder / spec.meta_file)
    test_size = (folder / spec.test_file).stat().st_size
    for name in spec.train_files:
        path = folder / name
        with path.open("rb") as handle:
            head = handle.read(2)
        if head[:1] != b"\x80" or path.stat().st_size < test_size // 2:
            raise layout_error(spec.name, f"{path} is truncated or not a pickle.")
