"""Event recordings on disk: decoders of N-MNIST, DVS128 Gesture and CIFAR10-DVS files, the
tonic folder layouts, and the listing of a dataset's sample files with their labels.

Every sample is read through `read_recording`, which names the file when it is empty,
truncated, damaged, or a folder named like a recording (never an all-zero sample).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .formats import DatasetFileError, DatasetLayoutError

StrPath = str | os.PathLike

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "i1")])
NMNIST_EVENT_BYTES = 5  # one 40-bit ATIS event
CIFAR10DVS_TEST_FRACTION = 0.1


def make_events(x, y, t, p) -> np.ndarray:
    """A structured event array (fields x, y, t, p) from four equal-length sequences."""
    events = np.empty(len(x), dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events


# --------------------------------------------------------------------------- decoders


def read_nmnist_bin(path: StrPath) -> np.ndarray:
    """Decode one N-MNIST ``.bin`` (40-bit ATIS events) with tonic's own decoder."""
    from tonic.io import read_mnist_file

    size = Path(path).stat().st_size
    if size % NMNIST_EVENT_BYTES:
        raise ValueError(f"{size} bytes is not a whole number of {NMNIST_EVENT_BYTES}-byte "
                         "events: the file is truncated")
    return read_mnist_file(str(path), dtype=EVENT_DTYPE)


def read_gesture_npy(path: StrPath) -> np.ndarray:
    """Decode one sample of tonic's preprocessed DVS128 Gesture: ``[N, 4]`` rows x, y, p, t(ms)."""
    raw = np.load(path, allow_pickle=False)
    if raw.ndim != 2 or raw.shape[1] != 4:
        raise ValueError(f"{path}: expected an [N, 4] array (x, y, p, t in ms), got {raw.shape}")
    t_us = np.rint(raw[:, 3].astype(np.float64) * 1000.0).astype(np.int64)
    return make_events(raw[:, 0], raw[:, 1], t_us, raw[:, 2] > 0)


def read_cifar10dvs_aedat(path: StrPath) -> np.ndarray:
    """Decode one original CIFAR10-DVS ``.aedat`` (AER-DAT 2.0, big-endian address/time pairs).

    tonic's header and event readers parse the file; the address is decoded as SpikingJelly
    does (x = 127 - bits 8-14, y = 127 - bits 1-7, ON = bit 0 clear) so images are upright.
    """
    from tonic.io import get_aer_events_from_file, read_aedat_header_from_file

    version, data_start, _ = read_aedat_header_from_file(str(path))
    if not 2 <= version < 3:
        raise ValueError(f"{path}: CIFAR10-DVS .aedat files are AER-DAT 2.x, found {version}")
    raw = get_aer_events_from_file(str(path), version, data_start)
    address = raw["address"].astype(np.int64)
    x = 127 - ((address >> 8) & 0x7F)
    y = 127 - ((address >> 1) & 0x7F)
    return make_events(x, y, raw["timeStamp"].astype(np.int64), 1 - (address & 1))


def read_cifar10dvs_aedat4(path: StrPath) -> np.ndarray:
    """Decode one tonic-converted CIFAR10-DVS ``.aedat4`` with tonic (needs the `aedat` package)."""
    try:
        import aedat  # noqa: F401  (tonic.io.read_aedat4 imports it)
    except ImportError as error:
        raise ImportError(
            f"{path} is AEDAT4, which tonic decodes with the `aedat` package: install it "
            "(pip install aedat) or use the original CIFAR10-DVS .aedat files."
        ) from error
    from tonic.io import read_aedat4

    raw = read_aedat4(str(path))
    polarity = raw["on"] if "on" in raw.dtype.names else raw["p"]
    return make_events(raw["x"], raw["y"], raw["t"], polarity)


def read_cifar10dvs(path: StrPath) -> np.ndarray:
    """Decode a CIFAR10-DVS sample, ``.aedat`` (original) or ``.aedat4`` (tonic's conversion)."""
    if str(path).endswith(".aedat4"):
        return read_cifar10dvs_aedat4(path)
    return read_cifar10dvs_aedat(path)


# --------------------------------------------------------------------------- layouts

GESTURE_CLASSES = (
    "hand clapping", "right hand wave", "left hand wave", "right arm clockwise",
    "right arm counter-clockwise", "left arm clockwise", "left arm counter-clockwise",
    "arm roll", "air drums", "air guitar", "other gestures",
)
CIFAR10DVS_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

EVENT_LAYOUTS: dict[str, str] = {
    "nmnist": """\
<root>/                          (or pass NMNIST/ itself; tonic's layout)
└── NMNIST/
    ├── Train/                   from train.zip
    │   ├── 0/  00002.bin, ...   40-bit ATIS events, one file per sample
    │   ├── ...
    │   └── 9/
    └── Test/                    from test.zip
        ├── 0/ ... 9/""",
    "dvsgesture": """\
<root>/                          (or pass DVSGesture/ itself; tonic's preprocessed layout)
└── DVSGesture/
    ├── ibmGestureTrain/         from ibmGestureTrain.tar.gz
    │   ├── user01_fluorescent/  0.npy, 1.npy, ..., 10.npy  ([N, 4] rows x, y, p, t in ms)
    │   └── ...
    └── ibmGestureTest/          from ibmGestureTest.tar.gz
        └── user24_fluorescent/ ...""",
    "cifar10dvs": """\
<root>/                          (or pass CIFAR10DVS/ itself; tonic's layout)
└── CIFAR10DVS/
    ├── airplane/  cifar10_airplane_0.aedat, ...   (original AER-DAT 2.0 .aedat files;
    ├── automobile/                                 tonic's .aedat4 need `pip install aedat`)
    ├── bird/ cat/ deer/ dog/ frog/ horse/ ship/
    └── truck/
    Train/test: per class, files in natural sort order; the last 10% are test.""",
}


@dataclass(frozen=True)
class EventDatasetSpec:
    """How one event dataset sits on disk and how its samples decode."""

    name: str
    folder: str  # tonic's folder name under the root
    sensor_size: tuple[int, int, int]  # (W, H, P)
    classes: tuple[str, ...]
    lister: Callable[[Path, str], list[tuple[Path, int]]]  # (base, split) -> [(file, label)]
    reader: Callable[[StrPath], np.ndarray]
    markers: tuple[str, ...]  # sub-folders that identify the base folder itself


def _natural_key(path: Path) -> list:
    """Sort key that orders ``name_2`` before ``name_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _list_nmnist(base: Path, split: str) -> list[tuple[Path, int]]:
    folder = base / ("Train" if split == "train" else "Test")
    missing = [str(d) for d in range(10) if not any((folder / str(d)).glob("*.bin"))]
    if missing:
        raise _layout_error("nmnist", base, f"no .bin files in {folder}/<digit> for digits "
                            f"{', '.join(missing)}")
    return [(path, digit) for digit in range(10)
            for path in sorted((folder / str(digit)).glob("*.bin"), key=_natural_key)]


def _list_gesture(base: Path, split: str) -> list[tuple[Path, int]]:
    folder = base / ("ibmGestureTrain" if split == "train" else "ibmGestureTest")
    files = sorted(folder.glob("*/*.npy"), key=lambda p: (p.parent.name, _natural_key(p)))
    samples = [(path, int(path.stem)) for path in files if path.stem.isdigit()]
    wrong = [path for path, label in samples if label >= len(GESTURE_CLASSES)]
    if wrong:
        raise _layout_error("dvsgesture", base, f"{wrong[0]} is named as label {wrong[0].stem}, "
                            f"but labels run 0..{len(GESTURE_CLASSES) - 1}")
    if not samples:
        raise _layout_error("dvsgesture", base, f"no <user_lighting>/<label>.npy files in {folder}")
    return samples


def _cifar10dvs_class_files(base: Path, name: str) -> list[Path]:
    files = [*(base / name).glob("*.aedat"), *(base / name).glob("*.aedat4")]
    return sorted(files, key=_natural_key)


def _list_cifar10dvs(base: Path, split: str) -> list[tuple[Path, int]]:
    """Per class, the first 90% of the naturally sorted files are train, the last 10% test."""
    per_class = {name: _cifar10dvs_class_files(base, name) for name in CIFAR10DVS_CLASSES}
    short = [name for name, files in per_class.items() if len(files) < 2]
    if short:
        raise _layout_error("cifar10dvs", base, "fewer than 2 .aedat files (one train, one test) "
                            f"in {', '.join(short)}")
    samples = []
    for label, files in enumerate(per_class.values()):
        n_test = max(1, int(round(CIFAR10DVS_TEST_FRACTION * len(files))))
        chosen = files[:-n_test] if split == "train" else files[-n_test:]
        samples += [(path, label) for path in chosen]
    return samples


EVENT_DATASETS: dict[str, EventDatasetSpec] = {
    "nmnist": EventDatasetSpec("nmnist", "NMNIST", (34, 34, 2),
                               tuple(str(d) for d in range(10)), _list_nmnist,
                               read_nmnist_bin, ("Train", "Test")),
    "dvsgesture": EventDatasetSpec("dvsgesture", "DVSGesture", (128, 128, 2), GESTURE_CLASSES,
                                   _list_gesture, read_gesture_npy,
                                   ("ibmGestureTrain", "ibmGestureTest")),
    "cifar10dvs": EventDatasetSpec("cifar10dvs", "CIFAR10DVS", (128, 128, 2), CIFAR10DVS_CLASSES,
                                   _list_cifar10dvs, read_cifar10dvs, CIFAR10DVS_CLASSES),
}


def _spec(name: str) -> EventDatasetSpec:
    if name not in EVENT_DATASETS:
        raise KeyError(f"unknown event dataset {name!r}; known: {', '.join(EVENT_DATASETS)}")
    return EVENT_DATASETS[name]


def _layout_error(name: str, root: StrPath | None, problem: str) -> DatasetLayoutError:
    return DatasetLayoutError(
        f"{name} data not usable under {root}: {problem}.\n"
        f"Expected layout:\n{EVENT_LAYOUTS[name]}\n"
        "Nothing is downloaded at run time: fetch the files yourself, then pass the folder "
        "that holds them with --set dataset.root=PATH."
    )


def _base_folder(spec: EventDatasetSpec, root: StrPath | None) -> Path:
    """The folder holding the splits: ``root/<tonic folder>``, or ``root`` itself."""
    if root is None or str(root) == "":
        raise _layout_error(spec.name, root, "no dataset root was given")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise _layout_error(spec.name, root, f"folder {path} does not exist")
    nested = path / spec.folder
    if nested.is_dir():
        return nested
    if any((path / marker).is_dir() for marker in spec.markers):
        return path
    raise _layout_error(spec.name, root, f"no {spec.folder}/ folder in {path}")


def list_event_files(name: str, root: StrPath, split: str) -> list[tuple[Path, int]]:
    """The sample files of ``split`` ('train' or 'test') with their labels, in a fixed order."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    spec = _spec(name)
    return spec.lister(_base_folder(spec, root), split)


def read_recording(spec: EventDatasetSpec, path: StrPath) -> np.ndarray:
    """The events of one sample file; an empty, truncated or damaged file, or a folder named
    like a recording, is a DatasetFileError naming the file (never an all-zero sample)."""
    path = Path(path)
    what = f"{spec.name} recording {path}"
    if path.is_dir():
        raise DatasetFileError(f"{what} is a folder, not a file; move it out of the dataset")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise DatasetFileError(f"cannot read {what}: {error.strerror or error}") from None
    if size == 0:
        raise DatasetFileError(f"{what} is empty (0 bytes); fetch the dataset again or "
                               "delete the file")
    try:
        events = spec.reader(path)
    except (ImportError, DatasetFileError):
        raise
    except Exception as error:  # a foreign decoder's failure on a damaged file, any type
        raise DatasetFileError(f"{what} is truncated or damaged ({type(error).__name__}: "
                               f"{error}); fetch the dataset again") from error
    if len(events) == 0:
        raise DatasetFileError(f"{what} holds no events; fetch the dataset again or delete it")
    return events


def read_event_file(name: str, path: StrPath) -> np.ndarray:
    """The raw events of one sample file of dataset ``name`` (fields x, y, t, p)."""
    return read_recording(_spec(name), path)


def verify_event_dataset(name: str, root: StrPath | None, samples: int = 8) -> None:
    """List both splits and decode a few files of each spread over the list (cheap), so a
    root of empty or damaged recordings is reported before any work."""
    spec = _spec(name)
    for split in ("train", "test"):
        files = list_event_files(name, root, split)
        step = max(1, len(files) // samples)
        for path, _ in files[::step][:samples] + files[-1:]:
            read_recording(spec, path)


def find_event_dataset(name: str, root: StrPath | None) -> bool:
    """Whether ``root`` holds a complete copy of event dataset ``name`` (both splits)."""
    try:
        for split in ("train", "test"):
            list_event_files(name, root, split)
    except DatasetLayoutError:
        return False
    return True
