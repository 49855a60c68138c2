"""GTSRB (the official layout): ROI-cropped, resized signs, cached as a fingerprinted .npz.

Pure numpy + PIL for the .ppm files; nothing is downloaded and torchvision is never imported.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .formats import (
    DatasetArrays,
    StrPath,
    existing_root,
    layout_error,
    list_names,
    pick_folder,
)

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
    root_path = existing_root("gtsrb", root)
    base = pick_folder(root_path, "GTSRB", "Final_Training")
    train_dir = base / "Final_Training" / "Images"
    test_images = base / "Final_Test" / "Images"
    if not train_dir.is_dir():
        raise layout_error("gtsrb", f"no Final_Training/Images/ folder in {base}.")
    problems = []
    folders = [train_dir / _class_folder(k) for k in range(GTSRB_NUM_CLASSES)]
    absent = [f.name for f in folders if not f.is_dir()]
    if absent:
        problems.append(f"class folders {list_names(absent)} missing in {train_dir}")
    csvs = [f / f"GT-{f.name}.csv" for f in folders]
    no_csv = [f"{c.parent.name}/{c.name}" for c in csvs if c.parent.is_dir() and not c.is_file()]
    if no_csv:
        problems.append(f"label files {list_names(no_csv)} missing in {train_dir}")
    if not test_images.is_dir():
        problems.append(f"test image folder {test_images} missing")
    test_csv = _find_test_csv(root_path, base)
    if test_csv is None:
        places = ", ".join(str(f) for f in _test_csv_folders(root_path, base))
        problems.append(f"test labels {_GT_TEST_CSV} missing (looked in {places})")
    if problems:
        raise layout_error("gtsrb", "; ".join(problems) + ".")
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
                raise layout_error("gtsrb", f"{csv_path} lacks columns {', '.join(missing)}.")
            return [_parse_gt_row(row, image_dir) for row in reader]
    except (ValueError, TypeError, KeyError, AttributeError, csv.Error) as error:
        raise layout_error("gtsrb", f"{csv_path} is malformed ({error}).") from error


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
        raise layout_error("gtsrb", f"image {path} listed in its CSV is missing.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise layout_error("gtsrb", f"image {path} is damaged ({error}).") from error


def _decode_gtsrb_image(row: _GtRow, size: int) -> np.ndarray:
    """Crop a sign to its ROI (corners inclusive, as in the GTSRB readme), resize bilinearly."""
    from PIL import Image

    image = _open_rgb(row.path)
    x1, y1, x2, y2 = row.roi
    box = (max(x1, 0), max(y1, 0), min(x2 + 1, image.width), min(y2 + 1, image.height))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise layout_error("gtsrb", f"{row.path}: ROI {row.roi} is empty or outside the image.")
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


def verify_gtsrb(root: StrPath, samples: int = 4) -> None:
    """Parse every annotation file and decode a few images of each split (cheap)."""
    train, test = _gtsrb_rows(_locate_gtsrb(root))
    for rows in (train, test):
        if not rows:
            raise layout_error("gtsrb", "an annotation file lists no image.")
        step = max(1, len(rows) // samples)
        for row in rows[::step][:samples]:
            _decode_gtsrb_image(row, 8)
