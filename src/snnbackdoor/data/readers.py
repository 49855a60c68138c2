"""Readers for the standard on-disk formats of image datasets (CIFAR-10/100, GTSRB, MNIST).

Pure numpy (+ PIL for GTSRB's .ppm files): nothing is downloaded and torchvision is never
imported. Every reader returns ``{"train": (x, y), "test": (x, y), "classes": names}`` with
``x`` uint8 ``[N, C, H, W]`` and ``y`` int64 ``[N]``. Missing or damaged files raise
:class:`DatasetLayoutError`, whose message shows the layout that was expected.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib
import os
import pickle
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

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


class DatasetLayoutError(FileNotFoundError):
    """A dataset's files are missing, incomplete or damaged; the message shows the layout."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something a dataset file never needs (a possible code-execution)."""


def _layout_error(name: str, problem: str) -> DatasetLayoutError:
    """Build the error for dataset ``name``: what is wrong, the expected tree, how to fix."""
    message = (
        f"{_DISPLAY_NAMES[name]} data not usable: {problem}\n"
        f"Expected layout:\n{EXPECTED_LAYOUTS[name]}\n"
        "Pass the folder that holds it as dataset.root (CLI: --set dataset.root=PATH)."
    )
    return DatasetLayoutError(message)


def _list_names(names: Sequence[str], limit: int = 6) -> str:
    """Join names for a message, shortening long lists."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"


def _existing_root(name: str, root: StrPath | None) -> Path:
    """Return ``root`` as a Path, or raise when it is unset or is not a folder."""
    if root is None or str(root) == "":
        raise _layout_error(name, "no dataset root was given.")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise _layout_error(name, f"root folder {path} does not exist.")
    return path


def _pick_folder(root: Path, subdir: str, marker: str) -> Path:
    """Return ``root/subdir`` if it exists, else ``root`` itself when it looks like ``subdir``."""
    nested = root / subdir
    if nested.is_dir():
        return nested
    if root.name == subdir or (root / marker).exists():
        return root
    return nested


def _require_files(name: str, folder: Path, filenames: Sequence[str]) -> None:
    """Raise naming every file of ``filenames`` that is missing from ``folder``."""
    missing = [f for f in filenames if not (folder / f).is_file()]
    if missing:
        raise _layout_error(name, f"missing {_list_names(missing)} in {folder}.")


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
        raise UnsafePickleError(f"{path}: {error} (file not loaded)") from None
    except Exception as error:  # truncated or corrupt: any failure of the unpickler
        raise _layout_error(name, f"{path} is truncated or not a pickle ({error!r}).") from error
    if not isinstance(obj, dict):
        raise _layout_error(name, f"{path} does not hold a dict (got {type(obj).__name__}).")
    return obj


def _field(name: str, record: dict, key: str, path: Path) -> Any:
    """Look up ``key`` in an unpickled dict whose keys may be bytes (Python 2 files) or str."""
    for candidate in (key.encode(), key):
        if candidate in record:
            return record[candidate]
    raise _layout_error(name, f"{path} has no '{key}' entry; is it the python version?")


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
    folder = _pick_folder(_existing_root(spec.name, root), spec.folder, spec.test_file)
    if not folder.is_dir():
        raise _layout_error(spec.name, f"no {spec.folder}/ folder in {folder.parent}.")
    _require_files(spec.name, folder, spec.files)
    return folder


def _read_cifar_batch(spec: _CifarSpec, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch: uint8 rows of 3072 = R, G, B planes of 32x32, row-major."""
    record = _load_pickle(spec.name, path)
    data = np.asarray(_field(spec.name, record, "data", path))
    labels = np.asarray(_field(spec.name, record, spec.label_key, path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _layout_error(spec.name, f"{path}: data is {data.dtype} {data.shape}, "
                            "expected uint8 [N, 3072].")
    if labels.shape != (data.shape[0],):
        raise _layout_error(spec.name, f"{path}: {labels.size} labels for {len(data)} images.")
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise _layout_error(spec.name, f"{path}: labels outside 0..{spec.num_classes - 1}.")
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
        raise _layout_error(spec.name, f"{meta_path} lists {len(classes)} class names, "
                            f"expected {spec.num_classes}.")
    return {"train": train, "test": test, "classes": classes}


def read_cifar10(root: StrPath) -> DatasetArrays:
    """Read CIFAR-10 from ``cifar-10-batches-py`` (under ``root`` or ``root`` itself)."""
    return _read_cifar(_CIFAR10, root)


def read_cifar100(root: StrPath) -> DatasetArrays:
    """Read CIFAR-100 (fine labels) from ``cifar-100-python`` (under ``root`` or ``root``)."""
    return _read_cifar(_CIFAR100, root)


# ---------------------------------------------------------------- GTSRB

GTSRB_NUM_CLASSES = 43
GTSRB_CLASSES: list[str] = [
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)",
    "Speed limit (60km/h)", "Speed limit (70km/h)", "Speed limit (80km/h)",
    "End of speed limit (80km/h)", "Speed limit (100km/h)", "Speed limit (120km/h)",
    "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop",
    "No vehicles", "Vehicles over 3.5 metric tons prohibited", "No entry",
    "General caution", "Dangerous curve to the left", "Dangerous curve to the right",
    "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right", "Road work",
    "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing",
    "Beware of ice/snow", "Wild animals crossing", "End of all speed and passing limits",
    "Turn right ahead", "Turn left ahead", "Ahead only", "Go straight or right",
    "Go straight or left", "Keep right", "Keep left", "Roundabout mandatory",
    "End of no passing", "End of no passing by vehicles over 3.5 metric tons",
]
_GT_COLUMNS = ("Filename", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
_GT_TEST_CSV = "GT-final_test.csv"
_GTSRB_CACHE_VERSION = "1"


@dataclass(frozen=True)
class _GtsrbLayout:
    """The located GTSRB folders and label files."""

    base: Path
    train_csvs: tuple[Path, ...]
    test_images: Path
    test_csv: Path


@dataclass(frozen=True)
class _GtRow:
    """One line of a GT-*.csv: the image, its sign's box (inclusive corners), its class."""

    path: Path
    roi: tuple[int, int, int, int]
    label: int


def _class_folder(label: int) -> str:
    return f"{label:05d}"


def _locate_gtsrb(root: StrPath) -> _GtsrbLayout:
    """Check the GTSRB folders and CSVs (not the images) and return where they are."""
    root_path = _existing_root("gtsrb", root)
    base = _pick_folder(root_path, "GTSRB", "Final_Training")
    train_dir = base / "Final_Training" / "Images"
    test_images = base / "Final_Test" / "Images"
    if not train_dir.is_dir():
        raise _layout_error("gtsrb", f"no Final_Training/Images/ folder in {base}.")
    problems = []
    folders = [train_dir / _class_folder(k) for k in range(GTSRB_NUM_CLASSES)]
    absent = [f.name for f in folders if not f.is_dir()]
    if absent:
        problems.append(f"class folders {_list_names(absent)} missing in {train_dir}")
    csvs = [f / f"GT-{f.name}.csv" for f in folders]
    no_csv = [f"{c.parent.name}/{c.name}" for c in csvs if c.parent.is_dir() and not c.is_file()]
    if no_csv:
        problems.append(f"label files {_list_names(no_csv)} missing in {train_dir}")
    if not test_images.is_dir():
        problems.append(f"test image folder {test_images} missing")
    test_csv = _find_test_csv(root_path, base)
    if test_csv is None:
        places = ", ".join(str(f) for f in _test_csv_folders(root_path, base))
        problems.append(f"test labels {_GT_TEST_CSV} missing (looked in {places})")
    if problems:
        raise _layout_error("gtsrb", "; ".join(problems) + ".")
    assert test_csv is not None
    return _GtsrbLayout(base, tuple(csvs), test_images, test_csv)


def _test_csv_folders(root: Path, base: Path) -> list[Path]:
    """GT-final_test.csv ships in its own zip, so users put it in one of several places."""
    folders = [base / "Final_Test" / "Images", base / "Final_Test", base, root]
    return list(dict.fromkeys(folders))


def _find_test_csv(root: Path, base: Path) -> Path | None:
    """Return the first GT-final_test.csv found among the usual places, or None."""
    for folder in _test_csv_folders(root, base):
        if (folder / _GT_TEST_CSV).is_file():
            return folder / _GT_TEST_CSV
    return None


def _read_gt_csv(csv_path: Path, image_dir: Path) -> list[_GtRow]:
    """Parse a semicolon-separated GTSRB annotation file."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=";")
            missing = [c for c in _GT_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise _layout_error("gtsrb", f"{csv_path} lacks columns {', '.join(missing)}.")
            return [_parse_gt_row(row, image_dir) for row in reader]
    except (ValueError, TypeError, KeyError, AttributeError, csv.Error) as error:
        raise _layout_error("gtsrb", f"{csv_path} is malformed ({error}).") from error


def _parse_gt_row(row: dict[str, str], image_dir: Path) -> _GtRow:
    """Turn one CSV row into a _GtRow; raises ValueError on bad numbers."""
    roi = tuple(int(row[c]) for c in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))
    label = int(row["ClassId"])
    if not 0 <= label < GTSRB_NUM_CLASSES:
        raise ValueError(f"ClassId {label} outside 0..{GTSRB_NUM_CLASSES - 1}")
    return _GtRow(image_dir / row["Filename"].strip(), roi, label)  # type: ignore[arg-type]


def _open_rgb(path: Path) -> Any:
    """Open an image file as RGB; missing or undecodable files raise DatasetLayoutError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as error:
        raise _layout_error("gtsrb", f"image {path} listed in its CSV is missing.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise _layout_error("gtsrb", f"image {path} is damaged ({error}).") from error


def _decode_gtsrb_image(row: _GtRow, size: int) -> np.ndarray:
    """Crop a sign to its ROI (corners inclusive, as in the GTSRB readme), resize bilinearly."""
    from PIL import Image

    image = _open_rgb(row.path)
    x1, y1, x2, y2 = row.roi
    box = (max(x1, 0), max(y1, 0), min(x2 + 1, image.width), min(y2 + 1, image.height))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise _layout_error("gtsrb", f"{row.path}: ROI {row.roi} is empty or outside the image.")
    image = image.crop(box).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def _decode_gtsrb_split(rows: list[_GtRow], size: int, desc: str) -> tuple[np.ndarray, ...]:
    """Decode every image of one split with a progress bar (39k images take a while)."""
    from tqdm.auto import tqdm

    images = np.empty((len(rows), 3, size, size), dtype=np.uint8)
    for i, row in enumerate(tqdm(rows, desc=desc, unit="img", leave=False)):
        images[i] = _decode_gtsrb_image(row, size)
    return images, np.array([r.label for r in rows], dtype=np.int64)


def _gtsrb_rows(layout: _GtsrbLayout) -> tuple[list[_GtRow], list[_GtRow]]:
    """Read every annotation file: training rows class by class, then the test rows."""
    train = [row for c in layout.train_csvs for row in _read_gt_csv(c, c.parent)]
    test = _read_gt_csv(layout.test_csv, layout.test_images)
    return train, test


def _gtsrb_fingerprint(layout: _GtsrbLayout, size: int) -> str:
    """Hash of the annotation files and the size, so a stale cache is noticed and rebuilt."""
    digest = hashlib.sha256(f"v{_GTSRB_CACHE_VERSION};size={size}".encode())
    for path in (*layout.train_csvs, layout.test_csv):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _load_gtsrb_cache(path: Path, fingerprint: str) -> DatasetArrays | None:
    """Return the cached arrays, or None when the cache is absent, stale or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache["fingerprint"]) != fingerprint:
                return None
            train = (cache["x_train"], cache["y_train"].astype(np.int64))
            test = (cache["x_test"], cache["y_test"].astype(np.int64))
    except Exception:  # any damage (truncated zip, missing key): rebuild
        return None
    return {"train": train, "test": test, "classes": list(GTSRB_CLASSES)}


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz to a temp file in the same folder, then rename: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            np.savez(handle, **arrays)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def read_gtsrb(root: StrPath, size: int = 32, cache_dir: StrPath | None = None) -> DatasetArrays:
    """Read GTSRB (official layout), cropped to each sign's ROI and resized to size x size.

    Decoded arrays are cached as ``gtsrb_<size>px.npz`` next to the data, or in ``cache_dir``.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    layout = _locate_gtsrb(root)
    cache_folder = Path(cache_dir).expanduser() if cache_dir is not None else layout.base
    cache_path = cache_folder / f"gtsrb_{size}px.npz"
    fingerprint = _gtsrb_fingerprint(layout, size)
    cached = _load_gtsrb_cache(cache_path, fingerprint)
    if cached is not None:
        return cached
    train_rows, test_rows = _gtsrb_rows(layout)
    train = _decode_gtsrb_split(train_rows, size, "GTSRB train")
    test = _decode_gtsrb_split(test_rows, size, "GTSRB test")
    try:
        _save_npz_atomic(cache_path, fingerprint=np.array(fingerprint), x_train=train[0],
                         y_train=train[1], x_test=test[0], y_test=test[1])
    except OSError as error:
        warnings.warn(f"could not cache decoded GTSRB at {cache_path} ({error}); pass a "
                      "writable cache_dir to avoid decoding again next time.", stacklevel=2)
    return {"train": train, "test": test, "classes": list(GTSRB_CLASSES)}


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
    root_path = _existing_root("mnist", root)
    best: tuple[Path, dict[str, Path]] = (root_path, {})
    for folder in (root_path, root_path / "raw", root_path / "MNIST" / "raw"):
        found = {k: p for k, f in _MNIST_FILES.items() if (p := _find_plain_or_gz(folder, f))}
        if len(found) == len(_MNIST_FILES):
            return found
        if len(found) > len(best[1]):
            best = (folder, found)
    folder, found = best
    missing = [f for k, f in _MNIST_FILES.items() if k not in found]
    raise _layout_error("mnist", f"missing {_list_names(missing)} (plain or .gz) in {folder}.")


def _read_bytes(path: Path) -> bytes:
    """Read a file, gunzipping it when its name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise _layout_error("mnist", f"{path} is truncated or damaged ({error}).") from error


def _read_idx(path: Path, kind: tuple[int, int]) -> np.ndarray:
    """Parse an IDX file of unsigned bytes, checking its magic number and its length."""
    magic, ndim = kind
    raw = _read_bytes(path)
    header = 4 * (1 + ndim)
    found = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    if found is not None and found != magic:
        raise _layout_error("mnist", f"{path} has magic number {found}, expected {magic}; "
                            "is it the right file?")
    if len(raw) < header:
        raise _layout_error("mnist", f"{path} is truncated ({len(raw)} bytes, no full header).")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise _layout_error("mnist", f"{path} holds {len(raw) - header} data bytes, its header "
                            f"promises {expected} (shape {shape}); it is truncated or damaged.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _read_mnist_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one split's images and labels and check that they match."""
    images = _read_idx(images_path, _IDX_IMAGES)
    labels = _read_idx(labels_path, _IDX_LABELS).astype(np.int64)
    if len(images) != len(labels):
        raise _layout_error("mnist", f"{images_path} has {len(images)} images but "
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


def find_dataset(name: str, root: StrPath | None) -> bool:
    """Say whether dataset ``name``'s files are under ``root``, checking names only (cheap)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _LOCATORS:
        raise ValueError(f"unknown image dataset {name!r}; known: {', '.join(_LOCATORS)}")
    try:
        _LOCATORS[key](root)
    except DatasetLayoutError:
        return False
    return True
